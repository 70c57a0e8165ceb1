"""DECSC as a :class:`hsidenoise.methods.Denoiser`: the model behind ``hsidenoise run --method decsc``.

Data flow for one scene (DESIGN.md, "Inference"):

1. ``prepare`` (once per cube): the low-rank front end (:class:`hsidenoise.lowrank.LowRankDenoiser`, the same
   settings the weights were trained with, read from the model card) estimates each valid band's noise
   sigma (B_valid,) and the whitened signal subspace from the whole-cube pixel sample; the valid bands are cut
   into windows of ``config.bands`` (31) bands, each with its whole-cube (lo, hi) range.
2. ``denoise_tiles`` (per batch of spatial tiles): the front end gives each tile's initial point
   (B_valid, h, w); every window of every tile is mapped to [0, 1] with its (lo, hi) (sigma too), all
   windows go through the model in chunks of ``window_batch`` windows, are mapped back and blended along the
   spectrum with :func:`hsidenoise.tiling.blend_weights`.

A cube with fewer valid bands than the model's window is mirrored along the spectrum up to the window and
cut back afterwards. The ``paper`` preset (not noise-aware) gets no front end: it sees the noisy window only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.methods import TileResult
from hsidenoise.statistics import CubeStatistics
from hsidenoise.tiling import TileConfig, blend_weights, plan_band_windows

if TYPE_CHECKING:
    import torch

    from hsidenoise.lowrank import LowRankConfig
    from hsidenoise.model.decsc import DECSC


@dataclass(frozen=True)
class InferenceConfig:
    """How the model is run.

    Attributes:
        window_batch: band windows per model call (the CUDA path halves it on out-of-memory).
        bf16: bfloat16 autocast on CUDA (ignored on CPU, where it is slower).
        per_window_convergence: freeze each window once it converges (the solver's per-sample stopping);
            False stops only when the whole batch has converged (the naive path of ``bench/speed.py``).
    """

    window_batch: int = 16
    bf16: bool = True
    per_window_convergence: bool = True


def mirror_bands(x: np.ndarray, size: int) -> np.ndarray:
    """Extend (b, ...) along axis 0 to ``size`` by mirroring (b < size): 0 1 2 -> 0 1 2 1 0 1 2 ..."""
    b = x.shape[0]
    if b >= size:
        return x
    period = max(2 * b - 2, 1)
    index = np.arange(size) % period
    index = np.where(index < b, index, period - index)
    return x[index]


class DECSCDenoiser:
    """Runs a (trained) DECSC over the tiles of a cube.

    Args:
        model: the network, in eval mode (``load_weights`` gives it folded).
        front_end: the low-rank settings for the initial point and sigma (noise-aware models); None uses the
            DCT spatial denoiser, the training default.
        device: where the model runs.
        config: inference settings.
        band_stride: spectral stride between windows (tile config's ``band_stride``).
    """

    name = "decsc"

    def __init__(
        self,
        model: DECSC,
        *,
        front_end: LowRankConfig | None = None,
        device: str | torch.device = "cpu",
        config: InferenceConfig | None = None,
        band_stride: int = TileConfig().band_stride,
    ) -> None:
        import torch

        from hsidenoise.lowrank import LowRankConfig, LowRankDenoiser

        self.model = model
        self.device = torch.device(device)
        self.config = config or InferenceConfig()
        self.band_window = int(model.config.bands)
        self.band_stride = min(int(band_stride), self.band_window)
        self.front_end = (
            LowRankDenoiser(front_end or LowRankConfig(spatial="dct")) if model.config.noise_aware else None
        )
        self._windows: list[slice] | None = None
        self._weights: list[np.ndarray] = []
        self._ranges: list[tuple[float, float]] = []
        self._bands = 0
        self._sigma = np.zeros(0)
        self.model.to(self.device)
        self.model.deq.config = replace(self.model.deq.config, per_sample=self.config.per_window_convergence)

    def prepare(self, stats: CubeStatistics) -> None:
        """Fit the front end on the whole-cube sample and plan the band windows over the valid bands."""
        valid = stats.valid_bands
        self._bands = int(valid.size)
        if self._bands == 0:
            self._windows = []
            return
        if self.front_end is not None:
            self.front_end.prepare(stats)
            self._sigma = np.asarray(self.front_end.subspace.sigma, dtype=np.float64)
        padded = max(self._bands, self.band_window)
        self._windows = plan_band_windows(padded, self.band_window, self.band_stride)
        self._weights = blend_weights(self._windows)
        source = mirror_bands(np.arange(self._bands), padded)
        self._ranges = [stats.band_window_range(valid[np.unique(source[w])]) for w in self._windows]

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile (B_valid, h, w) float32 -> same shape, in cube units."""
        return self.denoise_tiles([tile])[0].denoised

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """Denoise tiles, each (B_valid, h, w) float32; tiles of equal shape share model calls.

        The result's ``info`` holds the solver's work per tile: ``evaluations`` (mean over its windows),
        ``max_residual`` and ``converged`` (fraction of windows below the tolerance).
        """
        if self._windows is None:
            raise ConfigError("decsc: call prepare(stats) before denoising tiles")
        for tile in tiles:
            if tile.ndim != 3 or tile.shape[0] != self._bands:
                raise CubeShapeError(
                    f"decsc was prepared for tiles of {self._bands} valid bands (B_valid, h, w); "
                    f"got an array of shape {tuple(tile.shape)}"
                )
        if self._bands == 0:
            return [TileResult(np.array(tile, dtype=np.float32)) for tile in tiles]
        results: dict[int, TileResult] = {}
        for shape in dict.fromkeys(tile.shape for tile in tiles):
            members = [index for index, tile in enumerate(tiles) if tile.shape == shape]
            for index, result in zip(members, self._same_shape([tiles[i] for i in members]), strict=True):
                results[index] = result
        return [results[index] for index in range(len(tiles))]

    def info(self) -> dict[str, Any]:
        """What the method used, for the run report."""
        facts: dict[str, Any] = {
            "preset": _preset(self.model),
            "band_window": self.band_window,
            "band_stride": self.band_stride,
            "device": str(self.device),
        }
        if self.front_end is not None:
            facts["front_end"] = self.front_end.info()
        return facts

    # -----------------------------------------------------------------------------------------------------

    def _same_shape(self, tiles: list[np.ndarray]) -> list[TileResult]:
        padded = max(self._bands, self.band_window)
        noisy_windows, init_windows, sigma_windows = [], [], []
        for tile in tiles:
            tile = np.asarray(tile, dtype=np.float32)
            init = (
                np.asarray(self.front_end.denoise_tile(tile), dtype=np.float32)
                if self.front_end is not None
                else tile
            )
            noisy_p, init_p = mirror_bands(tile, padded), mirror_bands(init, padded)
            sigma_p = mirror_bands(self._sigma, padded) if self.front_end is not None else np.zeros(padded)
            for window, (lo, hi) in zip(self._windows or [], self._ranges, strict=True):
                scale = np.float32(hi - lo)
                noisy_windows.append((noisy_p[window] - np.float32(lo)) / scale)
                init_windows.append((init_p[window] - np.float32(lo)) / scale)
                sigma_windows.append(sigma_p[window] / float(scale))
        clean, evaluations, residual, tol = self._run_model(
            np.stack(noisy_windows), np.stack(init_windows), np.stack(sigma_windows)
        )
        per_tile = len(self._windows or [])
        results = []
        for t, tile in enumerate(tiles):
            blended = np.zeros((padded, *tile.shape[1:]), dtype=np.float32)
            total = np.zeros(padded, dtype=np.float32)
            for k, (window, weights, (lo, hi)) in enumerate(
                zip(self._windows or [], self._weights, self._ranges, strict=True)
            ):
                restored = clean[t * per_tile + k] * np.float32(hi - lo) + np.float32(lo)
                blended[window] += weights[:, None, None] * restored
                total[window] += weights
            blended /= total[:, None, None]
            chunk = slice(t * per_tile, (t + 1) * per_tile)
            results.append(
                TileResult(
                    blended[: self._bands],
                    {
                        "evaluations": float(np.mean(evaluations[chunk])),
                        "max_residual": float(np.max(residual[chunk])),
                        "converged": float(np.mean(residual[chunk] < tol)),
                    },
                )
            )
        return results

    def _run_model(
        self, noisy: np.ndarray, init: np.ndarray, sigma: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(N, b, h, w) windows -> clean (N, b, h, w) float32, evaluations (N,), residual (N,), tolerance."""
        import torch

        outputs, evaluations, residuals = [], [], []
        batch = max(1, self.config.window_batch)
        cuda = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and self.config.bf16)
        tol = float(self.model.config.solver.tol)
        with torch.inference_mode(), autocast:
            for start in range(0, noisy.shape[0], batch):
                part = slice(start, start + batch)

                def tensor(array: np.ndarray) -> torch.Tensor:
                    value = torch.from_numpy(np.ascontiguousarray(array[part], dtype=np.float32))
                    return value.pin_memory().to(self.device, non_blocking=True) if cuda else value

                clean, stats = self.model(tensor(noisy), init=tensor(init), sigma=tensor(sigma))
                outputs.append(clean.float().cpu().numpy())
                evaluations.append((stats.evaluations + stats.extra_evaluations).cpu().numpy())
                residuals.append(stats.residual.float().cpu().numpy())
        return np.concatenate(outputs), np.concatenate(evaluations), np.concatenate(residuals), tol


def _preset(model: DECSC) -> str:
    from hsidenoise.model.decsc import preset_name

    return preset_name(model.config) or "custom"
