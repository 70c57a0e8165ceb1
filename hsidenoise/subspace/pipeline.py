"""The whole subspace pipeline as one method: ``--method lowrank`` and ``--method decsc`` (subspace weights).

Per cube, :meth:`LowRankDenoiser.prepare` fits the spectral model once from the whole-cube pixel sample (steps
1-2: :func:`hsidenoise.subspace.signal_subspace.fit_lowrank`); per tile, :meth:`LowRankDenoiser.denoise_tiles`
removes outliers and projects (steps 3-4, :func:`hsidenoise.subspace.projection.project`), denoises the
eigen-images with its :class:`~hsidenoise.subspace.eigenimages.EigenImageDenoiser` (step 5) and back-projects
(step 6). The eigen-image denoiser is the only thing that differs between the methods: DCT, BM3D or none
(``--method lowrank --spatial``), or the subspace DECSC (``--method decsc``,
:func:`hsidenoise.methods.decsc.build_subspace_decsc`).

Shapes: cubes and tiles are (B, h, w); pixel samples (n, B); eigen-images (k, h, w).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from hsidenoise.denoiser import DenoiserBase, TileResult
from hsidenoise.errors import ConfigError, CubeShapeError, NothingToDenoise
from hsidenoise.statistics import PixelPositions, neighbour_pairs
from hsidenoise.subspace.config import LowRankConfig
from hsidenoise.subspace.dct_torch import TorchDCTDenoiser
from hsidenoise.subspace.component_blend import blend_components, extended, offered_components
from hsidenoise.subspace.band_blend import (
    CONFIDENCE_RAMP,
    band_probe,
    blend_weights,
    probe_perturbation,
    subspace_divergence,
)
from hsidenoise.subspace.fit_divergence import fit_path_divergence
from hsidenoise.subspace.eigenimages import (
    BlendedEigenImageDenoiser,
    EigenImageDenoiser,
    resolve_spatial,
    spatial_denoiser,
)
from hsidenoise.subspace.outliers import CleanedTile
from hsidenoise.subspace.projection import back_project, clean_and_project, project_eigen_images, synthesis
from hsidenoise.subspace.noise_estimate import NOISE_FREE_FRACTION, is_noise_free
from hsidenoise.subspace.signal_subspace import Subspace, fit_lowrank

logger = logging.getLogger(__name__)

PER_IMAGE_DENOISERS = ("dct", "bm3d")
"""The eigen-image denoisers that the component blend (:mod:`~hsidenoise.subspace.component_blend`) runs again on
the components it offers: each denoises each eigen-image alone. ``none`` is the projection alone, as asked; the
DCT-CSC gets the blend inside its band blend (:func:`_denoise_blended`), a subspace DECSC that corrects a pilot
through that pilot."""

@dataclass(frozen=True)
class LowRankInfo:
    """What the pipeline found, for the run report.

    Attributes:
        sigma: (B,) noise sigma per band, data units.
        rank: number of components kept.
        eigenvalues: the leading whitened eigenvalues (max(8, 2 * rank) of them at most).
        edge: the eigenvalue threshold.
        spatial: the eigen-image denoiser that ran (``"bm3d"``, ``"dct"`` or ``"none"``).
        gaussian_sigma: (B,) the Gaussian part of ``sigma`` (``sigma`` is larger on bands whose corruption is not
            all removed).
        component_noise: (rank,) each eigen-image's noise std implied by the estimate
            (:attr:`Subspace.component_noise`: 1 unless corrupted bands are whitened by their effective sigma).
            The eigen-image denoiser is told 1: telling the DCT this estimate changed nothing on non-i.i.d. noise
            (it is 1 there) and -0.03 to +0.07 dB, 0.00 on average, on mixture noise (``bench/quality.py``).
        component_noise_range: (rank,) pairs (low, high): the same as far as the band sigmas are resolved
            (:meth:`Subspace.component_noise_range`; low is below the estimate where a component leans on quiet
            bands, whose sigma no estimator here resolves).
    """

    sigma: tuple[float, ...]
    rank: int
    eigenvalues: tuple[float, ...]
    edge: float
    spatial: str
    gaussian_sigma: tuple[float, ...] = ()
    component_noise: tuple[float, ...] = ()
    component_noise_range: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_subspace(cls, subspace: Subspace, spatial: str) -> LowRankInfo:
        shown = max(8, 2 * subspace.rank)
        gaussian = subspace.gaussian_sigma if subspace.gaussian_sigma is not None else subspace.sigma
        return cls(
            sigma=tuple(float(value) for value in subspace.sigma),
            rank=subspace.rank,
            eigenvalues=tuple(float(value) for value in subspace.eigenvalues[:shown]),
            edge=float(subspace.edge),
            spatial=spatial,
            gaussian_sigma=tuple(float(value) for value in gaussian),
            component_noise=tuple(float(value) for value in subspace.component_noise),
            component_noise_range=tuple(
                (float(low), float(high)) for low, high in zip(*subspace.component_noise_range())
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "sigma": list(self.sigma),
            "rank": self.rank,
            "eigenvalues": list(self.eigenvalues),
            "edge": self.edge,
            "spatial": self.spatial,
            "gaussian_sigma": list(self.gaussian_sigma),
            "component_noise": list(self.component_noise),
            "component_noise_range": [list(pair) for pair in self.component_noise_range],
        }


def denoise_with_subspace(
    tile: np.ndarray,
    subspace: Subspace,
    config: LowRankConfig | None = None,
    eigen_denoiser: EigenImageDenoiser | None = None,
    *,
    facts: dict | None = None,
) -> np.ndarray:
    """Steps 3-6 on one tile: robust projection, eigen-image denoising, back-projection (with the components near
    the edge weighed per band, :mod:`~hsidenoise.subspace.component_blend`, unless ``config.component_blend`` is off).

    Args:
        tile: (B, h, w) in data units.
        subspace: the fitted model.
        config: pipeline settings; the defaults when None.
        eigen_denoiser: the eigen-image denoiser; None takes the one ``config.spatial`` selects.
        facts: filled with the tile's outlier and stripe facts (:func:`remove_outliers`) and, where the component
            blend ran, ``component_blend`` (its ``offered`` components and per-band ``beta``, (P, B)), or None.

    Returns:
        (B, h, w) float32 in data units.
    """
    config = config or LowRankConfig()
    eigen_denoiser = eigen_denoiser if eigen_denoiser is not None else spatial_denoiser(config)
    if isinstance(eigen_denoiser, BlendedEigenImageDenoiser) and eigen_denoiser.band_blend:
        return _denoise_blended(tile, subspace, config, eigen_denoiser, facts).astype(np.float32)
    # the per-image denoiser the component blend runs again: the eigen-image denoiser itself, or the pilot that a
    # subspace DECSC corrects
    per_image = eigen_denoiser if eigen_denoiser.name in PER_IMAGE_DENOISERS else None
    per_image = per_image or getattr(eigen_denoiser, "corrected_pilot", None)
    eigen_images, cleaned, weights = clean_and_project(tile, subspace, config, facts=facts)
    denoised = eigen_denoiser.denoise(eigen_images, 1.0)
    if not (config.component_blend and per_image is not None and per_image.name in PER_IMAGE_DENOISERS):
        return _as_read_where_empty(back_project(denoised, subspace), tile, cleaned).astype(np.float32)
    output, blend = blend_components(tile, eigen_images, denoised, cleaned, weights, subspace, config, per_image)
    if facts is not None and blend:
        facts["component_blend"] = blend
    return _as_read_where_empty(output, tile, cleaned).astype(np.float32)


def _as_read_where_empty(output: np.ndarray, tile: np.ndarray, cleaned: CleanedTile) -> np.ndarray:
    """``output`` (B, h, w) with the tile's no-data pixels (stuck in every band: ``cleaned.empty``) as read.

    They measured nothing, so whatever the pipeline put there (the mean spectrum, imputed from nothing) would be
    invented; given back, a user's own mask of them still holds and the report's removed part is zero there.
    """
    if cleaned.empty is not None:
        output[:, cleaned.empty] = tile[:, cleaned.empty]
    return output


def _denoise_blended(
    tile: np.ndarray,
    subspace: Subspace,
    config: LowRankConfig,
    eigen_denoiser: BlendedEigenImageDenoiser,
    facts: dict | None,
) -> np.ndarray:
    """Steps 3-6 with the band-space SURE blend (:mod:`~hsidenoise.subspace.band_blend`): (B, h, w) float64."""
    eigen_images, cleaned, weights = clean_and_project(tile, subspace, config, facts=facts)
    kept = cleaned.untouched(tile)
    pilot = getattr(eigen_denoiser, "pilot", None)  # the front end's own eigen-image denoiser
    blending = config.component_blend and pilot is not None and pilot.name in PER_IMAGE_DENOISERS
    # one probe for both blends: the component blend's directions below the edge follow it too
    below = extended(subspace, offered_components(subspace, config)[1]).basis[:, subspace.rank :] if blending else None
    perturbation = probe_perturbation(band_probe(kept), subspace, weights=weights, cleaned=cleaned, extra=below)
    moved = perturbation[: subspace.rank]  # (k, h, w): the kept components' move, what the model is probed with
    front, differences, responses = eigen_denoiser.denoise_parts(eigen_images, 1.0, moved)
    loadings = synthesis(subspace)[1]  # (B, k)
    component_weights = None
    if blending:
        # the front end as --method lowrank makes it (its components near the edge weighed per band), then the
        # model's change on top, carried to each band through the same weights (a band that left a component out
        # takes none of the model's change to it)
        front_bands, blend = blend_components(
            tile, eigen_images, front, cleaned, weights, subspace, config, pilot, perturbation=perturbation
        )
        if blend:
            if facts is not None:
                facts["component_blend"] = blend
            component_weights = np.ones_like(loadings)
            for part, component in enumerate(blend["offered"]):
                if component < subspace.rank:
                    component_weights[:, component] = blend["beta"][part]
            loadings = loadings * component_weights
    else:
        front_bands = back_project(front, subspace)
    changes = np.einsum("bk,pkhw->pbhw", loadings, differences)  # (P, B, h, w)
    change_divergence = subspace_divergence(moved, responses, subspace, loadings=loadings)
    change_divergence += fit_path_divergence(cleaned.values, differences, subspace, component_weights)
    sigma = subspace.gaussian_sigma if subspace.gaussian_sigma is not None else subspace.sigma
    beta = blend_weights(
        tile, kept, front_bands, changes, change_divergence, sigma,
        default=getattr(eigen_denoiser, "blend_default", None), ramp=CONFIDENCE_RAMP,
    )  # fmt: skip
    eigen_denoiser.record_blend(beta)
    return _as_read_where_empty(front_bands + np.einsum("pb,pbhw->bhw", beta, changes), tile, cleaned)


def sample_pixels(cube: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Up to ``size`` distinct random pixels of a cube, among those finite in every band.

    Args:
        cube: (B, H, W).

    Returns:
        (n, B) float64 spectra, n = min(size, number of finite pixels), in raster order.
    """
    return sample_pixels_where(cube, size, seed)[0]


def sample_pixels_where(cube: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, PixelPositions]:
    """:func:`sample_pixels` and where its pixels lie (for :func:`fit_lowrank`'s destriping of the sample)."""
    pixels = cube.reshape(cube.shape[0], -1)
    valid = np.flatnonzero(np.isfinite(pixels).all(axis=0))
    if valid.size > size:
        valid = np.sort(np.random.default_rng(seed).choice(valid, size, replace=False))
    return pixels[:, valid].T.astype(np.float64), PixelPositions.from_flat(valid, cube.shape[1], cube.shape[2])


def lowrank_denoise(cube: np.ndarray, config: LowRankConfig | None = None) -> tuple[np.ndarray, LowRankInfo]:
    """Denoise a whole in-memory cube with the classical pipeline.

    Args:
        cube: (B, H, W) float, finite.
        config: pipeline settings; the defaults when None.

    Returns:
        (denoised (B, H, W) float32, :class:`LowRankInfo`).

    Raises:
        CubeShapeError: ``cube`` is not 3-D or holds non-finite values.
    """
    config = config or LowRankConfig()
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise CubeShapeError(f"lowrank_denoise expects a (bands, rows, cols) cube, got shape {cube.shape}")
    if not np.isfinite(cube).all():
        raise CubeShapeError(
            "lowrank_denoise needs finite values; fill NaN/nodata pixels (e.g. with the band mean) first"
        )
    eigen_denoiser = spatial_denoiser(config)
    pairs = neighbour_pairs(cube, seed=config.seed + 1)
    spectra, positions = sample_pixels_where(cube, config.sample_size, config.seed)
    subspace = fit_lowrank(spectra, config, pairs, positions)
    denoised = denoise_with_subspace(cube, subspace, config, eigen_denoiser)
    return denoised, LowRankInfo.from_subspace(subspace, eigen_denoiser.name)


class _PixelSample(Protocol):
    @property
    def sample_spectra(self) -> np.ndarray: ...


def _valid_spectra(stats: _PixelSample) -> np.ndarray:
    """The pixel sample in the bands the tiles will carry.

    A ``CubeStatistics`` samples every band and names the valid ones (``valid_sample_spectra``); a lighter
    object (the training front end's) holds only those bands in ``sample_spectra``.
    """
    valid = getattr(stats, "valid_sample_spectra", None)
    return np.asarray(valid if valid is not None else stats.sample_spectra)


def _population(stats: _PixelSample, subspace: Subspace) -> float | None:
    """How many pixels the fitted sample stands for: its size scaled by the cube's pixels over the sampled ones
    (a ``CubeStatistics`` samples uniformly; a lighter object without ``shape``: the sample itself)."""
    if subspace.population is None:
        return None
    shape = getattr(stats, "shape", None)
    sampled = len(stats.sample_spectra)
    if shape is None or len(shape) != 3 or sampled == 0:
        return subspace.population
    return subspace.population * max(1.0, shape[1] * shape[2] / sampled)


class LowRankDenoiser(DenoiserBase):
    """The subspace pipeline behind the ``Denoiser`` protocol of ``hsidenoise.denoiser``.

    ``prepare`` fits noise, subspace and band regression once per cube from the statistics' pixel sample (and
    hands the subspace to the eigen-image denoiser's ``prepare``, when it has one); ``denoise_tiles`` is then
    deterministic and independent of the other tiles. Learning eigen-image denoisers (the subspace DECSC) may
    also adapt to crops of the cube (``wants_samples`` / :meth:`adapt_to`).

    Args:
        config: pipeline settings; the defaults when None.
        eigen_denoiser: step 5; None takes the classical one ``config.spatial`` selects (DCT, BM3D, none).
        name: the method's name in reports (``"lowrank"``; ``"decsc"`` with the subspace DECSC).
    """

    def __init__(
        self,
        config: LowRankConfig | None = None,
        eigen_denoiser: EigenImageDenoiser | None = None,
        *,
        name: str = "lowrank",
    ) -> None:
        self.config = config or LowRankConfig()
        self.spatial = resolve_spatial(self.config.spatial)
        self.eigen_denoiser = eigen_denoiser if eigen_denoiser is not None else spatial_denoiser(self.config)
        self.name = name
        self.subspace: Subspace | None = None
        self.adapt_progress: Callable[[float, float], None] | None = None
        self._blend_offered: list[int] = []
        self._blend_sum = np.zeros((0, 0))
        self._blend_tiles = 0

    def prepare(self, stats: _PixelSample) -> None:
        """Fit the model on the cube's pixel sample.

        Args:
            stats: a ``CubeStatistics`` (its ``valid_sample_spectra`` and ``valid_neighbour_pairs`` are used:
                the bands the tiles carry), or any object whose ``sample_spectra`` is (n, B_valid) (then the
                noise estimate does without the spatial neighbours).

        Raises:
            NothingToDenoise: one band (nothing to regress against), no more pixels valid in every band than
                bands, or no noise found (every band's sigma below :data:`NOISE_FREE_FRACTION` of its values); the
                pipeline then writes the cube unchanged.
        """
        self.subspace = None
        self._blend_offered, self._blend_tiles = [], 0
        spectra = _valid_spectra(stats)
        if spectra.ndim == 2 and spectra.shape[1] == 1:
            raise NothingToDenoise("one band: nothing to regress against")
        pixels = np.count_nonzero(np.isfinite(spectra).all(axis=1)) if spectra.ndim == 2 else 0
        if spectra.ndim == 2 and pixels < 2:
            raise NothingToDenoise("fewer than 2 pixels are valid in every band: nothing to fit the spectral model on")
        if spectra.ndim == 2 and pixels <= spectra.shape[1]:
            raise NothingToDenoise(
                f"{pixels} pixels for {spectra.shape[1]} bands: the band regression needs more pixels than bands "
                "to tell noise from signal"
            )
        subspace = fit_lowrank(
            spectra, self.config, getattr(stats, "valid_neighbour_pairs", None), getattr(stats, "sample_positions", None)
        )
        subspace = replace(subspace, population=_population(stats, subspace))
        if is_noise_free(spectra, subspace.sigma):
            raise NothingToDenoise("no noise found (the bands predict each other exactly)")
        self.subspace = subspace
        logger.info("lowrank: rank %d of %d bands, spatial %s", subspace.rank, subspace.band_count, self.spatial)
        prepare_eigen_denoiser = getattr(self.eigen_denoiser, "prepare", None)
        if prepare_eigen_denoiser is not None:
            prepare_eigen_denoiser(subspace)

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile: (B_valid, h, w) float32 in data units -> same shape, float32."""
        return self.denoise_tiles([tile])[0].denoised

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """Denoise tiles one by one; each result's ``info`` holds the eigen-image denoiser's ``last_facts`` and
        ``front_end_cleaning`` (per band: entries treated as outliers, squared stripe offsets summed, entries).

        Args:
            tiles: each (B_valid, h, w) float32 in data units.

        Raises:
            ConfigError: ``prepare`` has not been called.
            CubeShapeError: a tile does not match the prepared band count or is not finite.
        """
        subspace = self.subspace
        if subspace is None:
            raise ConfigError(f"{self.name}: call prepare(stats) once per cube before denoising tiles")
        results = []
        for tile in tiles:
            cleaning: dict = {}
            denoised = denoise_with_subspace(tile, subspace, self.config, self.eigen_denoiser, facts=cleaning)
            facts = getattr(self.eigen_denoiser, "last_facts", None)
            info = dict(facts) if facts else {}
            self._record_blend(cleaning.pop("component_blend", None))
            if cleaning:  # per band (B_valid,): summed over the tiles by the report (front_end_cleaning)
                info["front_end_cleaning"] = {
                    "outlier_entries": [int(v) for v in cleaning["outlier_entries"]],
                    "stripe_square_sum": [float(v) for v in cleaning["stripe_square_sum"]],
                    "entries": int(cleaning["entries"]),
                }
            results.append(TileResult(denoised, info))
        return results

    def _record_blend(self, blend: dict | None) -> None:
        """Add one tile's component blend (offered components, per-band weights (P, B)) to the run's totals."""
        if not blend:
            return
        offered, beta = list(blend["offered"]), np.asarray(blend["beta"], dtype=np.float64)
        if self._blend_offered != offered:  # the offered components depend on the subspace only: once per cube
            self._blend_offered, self._blend_sum, self._blend_tiles = offered, np.zeros_like(beta), 0
        self._blend_sum += beta
        self._blend_tiles += 1

    def blend_facts(self) -> dict[str, Any] | None:
        """The component blend over the tiles so far, for the run report: ``components`` (indices, 0-based: those
        from ``rank`` on are below the edge), each one's ``mean_weight`` over the bands and tiles (1 for a kept
        component that every band kept, 0 for one below the edge that no band took) and ``bands_using`` (bands whose
        mean weight over the tiles is above 0); None when the blend did not run."""
        if not self._blend_tiles:
            return None
        mean = self._blend_sum / self._blend_tiles  # (P, B)
        return {
            "components": list(self._blend_offered),
            "mean_weight": [round(float(v), 4) for v in mean.mean(axis=1)],
            "bands_using": [int(v) for v in np.count_nonzero(mean > 0, axis=1)],
            "tiles": self._blend_tiles,
        }

    @property
    def front_end(self) -> LowRankDenoiser:
        """This pipeline is its own front end (what the no-reference report measures the changes of)."""
        return self

    @property
    def wants_samples(self) -> bool:
        """Whether :meth:`adapt_to` should be given crops of the cube after ``prepare`` (``--adapt``)."""
        return bool(getattr(self.eigen_denoiser, "wants_samples", False))

    def adapt_to(self, crops: Sequence[np.ndarray]) -> Any:
        """Let the eigen-image denoiser learn from crops of this cube, after ``prepare``.

        Args:
            crops: (B_valid, h, w) float32 crops of the cube in data units; projected on the subspace here.

        Returns:
            What the eigen-image denoiser's ``adapt_to`` returns (an ``AdaptResult`` for the subspace DECSC).

        Raises:
            ConfigError: ``prepare`` has not been called, or the eigen-image denoiser cannot adapt.
        """
        if self.subspace is None:
            raise ConfigError(f"{self.name}: call prepare(stats) before adapt_to(crops)")
        adapt_eigen_denoiser = getattr(self.eigen_denoiser, "adapt_to", None)
        if adapt_eigen_denoiser is None:
            raise ConfigError(f"{self.name}: the {self.eigen_denoiser.name} eigen-image denoiser has nothing to adapt")
        eigen_images = [project_eigen_images(crop, self.subspace, self.config) for crop in crops]
        return adapt_eigen_denoiser(eigen_images, progress=self.adapt_progress)

    def info(self) -> dict[str, Any]:
        """Sigma, rank, eigenvalues and spatial denoiser for the run report (only the denoiser before prepare).

        With an eigen-image denoiser that reports facts of its own (``info()``), those come first and the
        pipeline's facts go under ``front_end``.
        """
        if self.subspace is None:
            facts: dict[str, Any] = {"spatial": self.spatial}
        else:
            facts = LowRankInfo.from_subspace(self.subspace, self.spatial).as_dict()
            blend = self.blend_facts()
            if blend is not None:
                facts["component_blend"] = blend
        if isinstance(self.eigen_denoiser, TorchDCTDenoiser):  # the GPU path
            facts["device"] = self.eigen_denoiser.device
        eigen_denoiser_info = getattr(self.eigen_denoiser, "info", None)
        if eigen_denoiser_info is None:
            return facts
        return {**eigen_denoiser_info(), "front_end": facts}
