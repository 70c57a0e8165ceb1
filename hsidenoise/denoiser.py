"""What the pipeline needs from a method: the :class:`Denoiser` protocol, its result type and two adapters.

A denoiser sees one spatial tile at a time, as (B_valid, h, w) float32 in the cube's own units: only the valid
bands (:attr:`CubeStatistics.valid_bands`, in that order), with missing pixels already filled by the band mean.
It returns the same shape. ``prepare`` runs once per cube with the whole-cube statistics, so that every tile
of a scene is treated alike (one normalisation, one noise estimate).

A denoiser that can process several tiles at once (a GPU model) also implements ``denoise_tiles``; the
pipeline (:func:`hsidenoise.denoise.denoise`) then hands it up to ``batch_size`` tiles per call and keeps each
tile's result and info separate.

The methods (:mod:`hsidenoise.subspace`, :mod:`hsidenoise.methods.decsc_bands`, ...) import their types from here,
and the registry behind ``run --method`` (:mod:`hsidenoise.methods`) imports the methods: the graph has no loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.statistics import CubeStatistics
from hsidenoise.tiling import BandWindowPlan, TileConfig

WindowFunction = Callable[[np.ndarray], np.ndarray]
"""A function of band windows: (N, b, h, w) float32 in [0, 1] -> (N, b, h, w) float32 in [0, 1]."""


@runtime_checkable
class Denoiser(Protocol):
    """What the pipeline needs from a method.

    Attributes:
        name: short name, shown in reports.
    """

    name: str

    def prepare(self, stats: CubeStatistics) -> None:
        """Take the whole-cube statistics; called once per cube before the first tile."""
        ...

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile: (B_valid, h, w) float32 -> (B_valid, h, w) float32, in the cube's units."""
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


@runtime_checkable
class BatchDenoiser(Denoiser, Protocol):
    """A denoiser that takes several tiles in one call (the hook for GPU batching)."""

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """Denoise tiles, each (B_valid, h, w) float32; one result per tile, in order."""
        ...


class IdentityDenoiser:
    """Returns every tile unchanged: a stand-in for tests and for measuring the pipeline alone."""

    name = "identity"

    def prepare(self, stats: CubeStatistics) -> None:
        """Nothing to prepare."""

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Return a copy of ``tile`` (B_valid, h, w) float32."""
        return np.array(tile, dtype=np.float32, copy=True)


class BandWindowDenoiser:
    """Adapts a function of fixed-size, normalised band windows into a :class:`Denoiser`.

    Inside each tile the valid bands are cut into windows of ``config.band_window`` bands at most
    ``config.band_stride`` bands apart (one window of all bands when there are fewer), each window is mapped to
    [0, 1] with its whole-cube range (:meth:`CubeStatistics.band_window_range`), all windows of all tiles in a
    call go through ``window_function`` at once, are mapped back, and overlapping bands are blended with
    :func:`hsidenoise.tiling.blend_weights`.

    Args:
        window_function: (N, b, h, w) float32 in [0, 1] -> same shape; b is the band window, or the number of
            valid bands when that is smaller.
        name: name shown in reports.
        config: supplies ``band_window`` and ``band_stride``; the default :class:`TileConfig` when None.
    """

    def __init__(
        self, window_function: WindowFunction, *, name: str = "band-window", config: TileConfig | None = None
    ) -> None:
        self.window_function = window_function
        self.name = name
        self.config = config if config is not None else TileConfig()
        self._plan: BandWindowPlan | None = None

    def prepare(self, stats: CubeStatistics) -> None:
        """Plan the band windows over the valid bands and fix each window's normalisation range."""
        self._plan = BandWindowPlan.plan(stats, self.config.band_window, self.config.band_stride, mirror=False)

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile (B_valid, h, w) float32 -> same shape."""
        return self.denoise_tiles([tile])[0].denoised

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """Denoise tiles of equal shape in one call of the window function (tiles of other shapes in another)."""
        plan = self._plan
        if plan is None:
            raise ConfigError(f"{self.name}: call prepare(stats) before denoising tiles")
        for tile in tiles:
            if tile.ndim != 3 or tile.shape[0] != plan.bands:
                raise CubeShapeError(
                    f"{self.name} was prepared for tiles of {plan.bands} valid bands (B_valid, h, w); "
                    f"got an array of shape {tuple(tile.shape)}"
                )
        if plan.bands == 0:
            return [TileResult(np.array(tile, dtype=np.float32)) for tile in tiles]
        results: dict[int, TileResult] = {}
        for shape in dict.fromkeys(tile.shape for tile in tiles):
            members = [index for index, tile in enumerate(tiles) if tile.shape == shape]
            denoised = self._denoise_same_shape([tiles[i] for i in members], plan)
            results.update((index, TileResult(values)) for index, values in zip(members, denoised, strict=True))
        return [results[index] for index in range(len(tiles))]

    def _denoise_same_shape(self, tiles: list[np.ndarray], plan: BandWindowPlan) -> list[np.ndarray]:
        windows = np.stack(
            [plan.normalise(tile, k) for tile in tiles for k in range(len(plan.windows))]
        ).astype(np.float32, copy=False)
        denoised_windows = np.asarray(self.window_function(windows))
        if denoised_windows.shape != windows.shape:
            raise CubeShapeError(
                f"{self.name}: the window function must return the shape it was given {windows.shape}; "
                f"got {denoised_windows.shape}"
            )
        outputs = []
        per_tile = len(plan.windows)
        for tile_index, tile in enumerate(tiles):
            blended = np.zeros(tile.shape, dtype=np.float32)
            for k in range(per_tile):
                plan.accumulate(blended, k, denoised_windows[tile_index * per_tile + k])
            outputs.append(plan.finish(blended))
        return outputs
