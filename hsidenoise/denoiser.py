"""What the pipeline needs from a method: the :class:`Denoiser` protocol, :class:`DenoiserBase` with its
default hooks, the result type and the identity method.

A denoiser sees one spatial tile at a time, as (B_valid, h, w) float32 in the cube's own units: only the valid
bands (:attr:`CubeStatistics.valid_bands`, in that order), with missing pixels already filled by the band mean.
It returns the same shape. ``prepare`` runs once per cube with the whole-cube statistics, so that every tile
of a scene is treated alike (one normalisation, one noise estimate).

The pipeline (:func:`hsidenoise.denoise.denoise`) hands ``denoise_tiles`` up to ``batch_size`` tiles per call and
keeps each tile's result and info separate. The optional hooks (batching, ``--adapt``, report facts) have their
defaults in :class:`DenoiserBase`, which every method derives from, so the pipeline calls them without probing.

The methods (:mod:`hsidenoise.subspace`, :mod:`hsidenoise.methods.decsc_bands`, ...) import their types from here,
and the registry behind ``run --method`` (:mod:`hsidenoise.methods`) imports the methods: the graph has no loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from hsidenoise.errors import ConfigError
from hsidenoise.statistics import CubeStatistics

@runtime_checkable
class Denoiser(Protocol):
    """What the pipeline needs from a method: the two steps, and the hooks :class:`DenoiserBase` gives defaults.

    Attributes:
        name: short name, shown in reports.
        wants_samples: True when the method learns from crops of the cube before its tiles (``run --adapt``).
        adapt_progress: called ``(seconds spent, seconds allowed)`` while :meth:`adapt_to` runs, or None.
    """

    name: str
    wants_samples: bool
    adapt_progress: Callable[[float, float], None] | None

    def prepare(self, stats: CubeStatistics) -> None:
        """Take the whole-cube statistics; called once per cube before the first tile."""
        ...

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile: (B_valid, h, w) float32 -> (B_valid, h, w) float32, in the cube's units."""
        ...

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """Denoise tiles, each (B_valid, h, w) float32; one result per tile, in order (the GPU batching hook)."""
        ...

    def adapt_to(self, crops: Sequence[np.ndarray]) -> Any:
        """Learn from crops (B_valid, h, w) of the prepared cube before its tiles; only when ``wants_samples``."""
        ...

    def info(self) -> dict[str, Any]:
        """Facts about the method for the run report (JSON-serialisable values)."""
        ...


@dataclass
class TileResult:
    """The output of a denoiser for one tile.

    Attributes:
        denoised: (B_valid, h, w) float32.
        info: per-tile facts worth reporting (solver iterations, residual, ...), JSON-serialisable values.
    """

    denoised: np.ndarray
    info: dict[str, float | int | str] = field(default_factory=dict)


class DenoiserBase:
    """A method's defaults for every optional hook of :class:`Denoiser` (as deepinv's ``models.base.Denoiser``):
    a subclass implements :meth:`denoise_tile` (and usually :meth:`prepare`) and overrides the hooks it has.

    Defaults: nothing to prepare; :meth:`denoise_tiles` calls :meth:`denoise_tile` per tile; no adaptation;
    no facts; no front end (:attr:`front_end`: the low-rank pipeline whose changes the no-reference report
    measures, see :func:`hsidenoise.quality.noreference.no_reference_quality`).
    """

    name: str = "denoiser"
    wants_samples: bool = False
    adapt_progress: Callable[[float, float], None] | None = None
    front_end: Any = None

    def prepare(self, stats: CubeStatistics) -> None:
        """Nothing to prepare."""

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile: (B_valid, h, w) float32 -> same shape; every method implements it."""
        raise NotImplementedError(f"{type(self).__name__} must implement denoise_tile")

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """One :meth:`denoise_tile` call per tile, each result without facts."""
        return [TileResult(self.denoise_tile(tile)) for tile in tiles]

    def adapt_to(self, crops: Sequence[np.ndarray]) -> Any:
        """No adaptation: a method that adapts sets ``wants_samples`` and overrides this."""
        raise ConfigError(f"method {self.name!r} does not adapt to a cube; drop --adapt")

    def info(self) -> dict[str, Any]:
        """No facts."""
        return {}


class IdentityDenoiser(DenoiserBase):
    """Returns every tile unchanged: a stand-in for tests and for measuring the pipeline alone."""

    name = "identity"

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Return a copy of ``tile`` (B_valid, h, w) float32."""
        return np.array(tile, dtype=np.float32, copy=True)
