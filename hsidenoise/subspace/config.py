"""The settings of the subspace pipeline (:mod:`hsidenoise.subspace`), one frozen dataclass.

Every step of the pipeline reads its own fields of :class:`LowRankConfig` (noise estimate, subspace,
outlier removal, eigen-image denoiser), and the model card of subspace DECSC weights stores the whole
dataclass as the front end the weights were trained with, so the settings stay in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hsidenoise.errors import ConfigError

SPATIAL_DENOISERS = ("auto", "bm3d", "dct", "none")
"""Choices of :attr:`LowRankConfig.spatial`; ``auto`` is ``bm3d`` when the package imports, else ``dct``."""
STRIPE_WINDOW = 15
"""Default ``LowRankConfig.stripe_window`` (bench/README.md, "False stripes from a region the regression
mispredicts")."""


@dataclass(frozen=True)
class LowRankConfig:
    """Every knob of the classical pipeline, with its default, once.

    Attributes:
        spatial: eigen-image denoiser: ``"auto"`` (BM3D if the ``bm3d`` package imports, else ``"dct"``),
            ``"bm3d"`` (an error if missing), ``"dct"`` (numpy only) or ``"none"`` (the projection alone).
        sample_size: pixels drawn (seeded) from a whole array by :func:`lowrank_denoise` to fit the model.
        regression_sample: at most this many of those pixels fit the band regression (cost per pass n B^2).
        regression_iterations: EM-like passes of the robust band regression.
        ridge: added to each diagonal entry of the band Gram matrix, relative to the band's variance.
        outlier_threshold: an entry is an outlier beyond this many residual scales of its band.
        edge_margin: components are kept when their whitened eigenvalue exceeds
            edge_margin * (1 + sqrt(B / n))^2; the margin absorbs a few per cent of error in sigma.
        max_rank: at most this many components.
        robust_passes: stripe-estimation passes per tile; 0 switches every robust step off (stuck values
            included).
        stripe_threshold: a column offset is a stripe beyond this many spreads of the band's column medians (a
            row offset beyond twice as many: ``outliers.ROW_STRIPE_FACTOR``).
        stripe_window: a tile's stripe must also stand out from the median of the lines within this window around
            it (0: no such test), so that a block of lines that the band regression mispredicts alike (a quiet
            band's unexplained signal over a region of the scene) is not taken for stripes
            (``stripes.stripe_offsets``). A row's offset is measured against those neighbours too; a column's
            against the band's typical column (measured: the recipe's real column stripes came out slightly worse
            against their neighbours).
        dead_line_fraction: a column whose standard deviation along its rows is below this fraction of the
            band's sigma is a dead line.
        coherence_window: side of the window in which an outlying residual shared by its neighbours is
            taken as genuine signal (0 or 1 disables the check).
        loading_iterations: IRLS iterations of the L1 refit of the synthesis rows (0 disables it).
        dct_threshold: hard threshold of the DCT fallback's first stage, in noise sigmas.
        component_blend: weigh the components nearest the Marchenko-Pastur edge per band by SURE
            (:mod:`~hsidenoise.subspace.component_blend`); False: every band keeps exactly the kept components.
        seed: seed of every pixel sample the pipeline draws.
    """

    spatial: str = "auto"
    sample_size: int = 65_536
    regression_sample: int = 16_384
    regression_iterations: int = 8
    ridge: float = 1e-6
    outlier_threshold: float = 6.0
    edge_margin: float = 1.1
    max_rank: int = 32
    robust_passes: int = 2
    stripe_threshold: float = 5.0
    stripe_window: int = STRIPE_WINDOW
    dead_line_fraction: float = 0.2
    coherence_window: int = 5
    loading_iterations: int = 20
    dct_threshold: float = 2.7
    component_blend: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.spatial not in SPATIAL_DENOISERS:
            raise ConfigError(f"spatial must be one of {', '.join(SPATIAL_DENOISERS)}, got {self.spatial!r}")
        for name in ("sample_size", "regression_sample", "regression_iterations", "max_rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        for name in ("robust_passes", "stripe_window", "coherence_window", "loading_iterations"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(self, name)}")
        for name in ("ridge", "outlier_threshold", "edge_margin", "stripe_threshold", "dct_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value}")
        if not 0 <= self.dead_line_fraction < 1:
            raise ConfigError(f"dead_line_fraction must be in [0, 1), got {self.dead_line_fraction}")
