"""DECSC as a :class:`hsidenoise.denoiser.Denoiser`: the model behind ``hsidenoise run --method decsc``.

Data flow for one scene (DESIGN.md, "Inference"):

1. ``prepare`` (once per cube): the low-rank front end (:class:`hsidenoise.subspace.LowRankDenoiser`, the same
   settings the weights were trained with, read from the model card) estimates each valid band's noise
   sigma (B_valid,) and the whitened signal subspace from the whole-cube pixel sample; the valid bands are cut
   into windows of ``config.bands`` (31) bands, each with its whole-cube (lo, hi) range.
2. ``denoise_tiles`` (per batch of spatial tiles): the front end gives each tile's initial point
   (B_valid, h, w); the windows of all tiles of one shape are cut, mapped to [0, 1] with their (lo, hi)
   (sigma too) and sent through the model ``window_batch`` windows per call, a chunk at a time (so memory
   holds one chunk of windows, not all of them), mapped back and blended along the spectrum with
   :func:`hsidenoise.tiling.blend_weights` (both through :class:`hsidenoise.tiling.BandWindowPlan`).

A cube with fewer valid bands than the model's window is mirrored along the spectrum up to the window and
cut back afterwards. The ``paper`` preset (not noise-aware) gets no front end: it sees the noisy window only.

Inference speed (``bench/speed.py`` measures each item against :attr:`InferenceConfig.naive`): windows of
several tiles share one model call; each window stops once it converges (the solver's per-sample freezing);
the difference convolutions run as one cached 3x3x3 kernel (``DECSC.fold_for_inference``); the model runs under
``torch.inference_mode``; on CUDA under bf16 autocast with pinned-memory transfers, and a chunk that runs out of
GPU memory is retried with half the windows. ``torch.compile`` is not used: on two CPU cores compiling the
priors took 73 s and made the steady state 16 % slower, and compiling the whole forward took over 2 minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.denoiser import DenoiserBase, TileResult
from hsidenoise.device import is_out_of_memory
from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.statistics import CubeStatistics
from hsidenoise.tiling import BandWindowPlan, TileConfig

if TYPE_CHECKING:
    import torch

    from hsidenoise.subspace import LowRankConfig
    from hsidenoise.model.decsc import DECSC

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceConfig:
    """How the model is run; every optimisation is a field, so ``bench/speed.py`` can time each one alone.

    Attributes:
        window_batch: band windows per model call (halved for the rest of the run on out-of-memory).
        bf16: bfloat16 autocast on CUDA (ignored on CPU, where it is slower).
        per_window_convergence: freeze each window once it converges (the solver's per-sample stopping);
            False stops only when the whole batch has converged.
        fold: run each difference convolution as its cached folded 3x3x3 kernel; False runs its definition,
            five convolutions (``DifferenceConv3d.forward_unfolded``).
        inference_mode: run under ``torch.inference_mode``; False under ``torch.no_grad``.
        naive: the deliberately plain reference path of ``bench/speed.py`` and the tests: one window per model
            call, batch-wide convergence, fp32, no folding, ``torch.no_grad``. Overrides the fields above
            (:meth:`resolved`); same output as the optimised path to float rounding on CPU.
    """

    window_batch: int = 16
    bf16: bool = True
    per_window_convergence: bool = True
    fold: bool = True
    inference_mode: bool = True
    naive: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.window_batch, bool) or not isinstance(self.window_batch, int) or self.window_batch < 1:
            raise ConfigError(f"window_batch must be a whole number >= 1; got {self.window_batch!r}")

    def resolved(self) -> InferenceConfig:
        """The settings in effect: ``naive`` spelled out as the other fields, else self."""
        if not self.naive:
            return self
        return InferenceConfig(
            window_batch=1, bf16=False, per_window_convergence=False, fold=False, inference_mode=False
        )


class DECSCDenoiser(DenoiserBase):
    """Runs a (trained) DECSC over the tiles of a cube.

    Args:
        model: the network; it is put in eval mode with its difference convolutions folded.
        front_end: the low-rank settings for the initial point and sigma (noise-aware models); None uses the
            DCT spatial denoiser, the training default.
        device: where the model runs.
        config: inference settings; read at every call, so ``denoiser.config`` may be replaced between runs
            (``bench/speed.py`` times the naive and optimised paths of one network this way).
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

        from hsidenoise.subspace import LowRankConfig, LowRankDenoiser

        self.model = model
        self.device = torch.device(device)
        self.config = config or InferenceConfig()
        self.band_window = int(model.config.bands)
        self.band_stride = min(int(band_stride), self.band_window)
        self.front_end = (
            LowRankDenoiser(front_end or LowRankConfig(spatial="dct")) if model.config.noise_aware else None
        )
        self._plan: BandWindowPlan | None = None
        self._sigma = np.zeros(0)
        self._window_batch: int | None = None  # lowered after an out-of-memory error, for the rest of the run
        self._tiles = 0
        self._evaluations = 0.0
        self.model.to(self.device)
        self.model.fold_for_inference()

    def prepare(self, stats: CubeStatistics) -> None:
        """Fit the front end on the whole-cube sample and plan the band windows over the valid bands."""
        self._tiles, self._evaluations = 0, 0.0
        self._plan = BandWindowPlan.plan(stats, self.band_window, self.band_stride, mirror=True)
        if self._plan.bands and self.front_end is not None:
            self.front_end.prepare(stats)
            self._sigma = np.asarray(self.front_end.subspace.sigma, dtype=np.float64)

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """Denoise one tile (B_valid, h, w) float32 -> same shape, in cube units."""
        return self.denoise_tiles([tile])[0].denoised

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """Denoise tiles, each (B_valid, h, w) float32; tiles of equal shape share model calls.

        The result's ``info`` holds the solver's work per tile: ``evaluations`` (evaluations of the layer per
        window, solve + initial point + phantom steps, mean over the tile's windows), ``max_residual`` and
        ``converged`` (fraction of windows below the tolerance ``tol``, also given).
        """
        plan = self._plan
        if plan is None:
            raise ConfigError("decsc: call prepare(stats) before denoising tiles")
        for tile in tiles:
            if tile.ndim != 3 or tile.shape[0] != plan.bands:
                raise CubeShapeError(
                    f"decsc was prepared for tiles of {plan.bands} valid bands (B_valid, h, w); "
                    f"got an array of shape {tuple(tile.shape)}"
                )
        if plan.bands == 0:
            return [TileResult(np.array(tile, dtype=np.float32)) for tile in tiles]
        results: dict[int, TileResult] = {}
        with self._inference():
            for shape in dict.fromkeys(tile.shape for tile in tiles):
                members = [index for index, tile in enumerate(tiles) if tile.shape == shape]
                for index, result in zip(members, self._same_shape([tiles[i] for i in members], plan), strict=True):
                    results[index] = result
        for result in results.values():
            self._tiles += 1
            self._evaluations += float(result.info["evaluations"])
        return [results[index] for index in range(len(tiles))]

    def info(self) -> dict[str, Any]:
        """What the method used, for the run report; ``evaluations_per_tile`` is the mean over this cube's tiles."""
        facts: dict[str, Any] = {
            "preset": _preset(self.model),
            "band_window": self.band_window,
            "band_stride": self.band_stride,
            "device": str(self.device),
            "inference": asdict(self.config.resolved()),
            "tiles": self._tiles,
            "evaluations_per_tile": self._evaluations / self._tiles if self._tiles else None,
        }
        if self.front_end is not None:
            facts["front_end"] = self.front_end.info()
        return facts

    # -----------------------------------------------------------------------------------------------------

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """The model's state and torch's modes for one call: optimised, or the naive reference path."""
        import torch

        from hsidenoise.model.diffconv import DifferenceConv3d

        config = self.config.resolved()
        deq = self.model.deq
        saved = deq.config
        unfolded: list[tuple[DifferenceConv3d, Any]] = []
        with ExitStack() as stack:
            deq.config = replace(saved, per_sample=config.per_window_convergence)
            stack.callback(setattr, deq, "config", saved)
            if not config.fold:
                for module in self.model.modules():
                    if isinstance(module, DifferenceConv3d):
                        unfolded.append((module, module.folded))
                        module.folded = None
                        module.forward = module.forward_unfolded  # the five-convolution definition
                stack.callback(_refold, unfolded)
            stack.enter_context(torch.inference_mode() if config.inference_mode else torch.no_grad())
            if self.device.type == "cuda" and config.bf16:
                stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
            yield

    def _same_shape(self, tiles: list[np.ndarray], plan: BandWindowPlan) -> list[TileResult]:
        sources = []
        for tile in tiles:
            tile = np.asarray(tile, dtype=np.float32)
            init = (
                np.asarray(self.front_end.denoise_tile(tile), dtype=np.float32)
                if self.front_end is not None
                else tile
            )
            sources.append((plan.pad(tile), plan.pad(init)))
        sigma = plan.pad(self._sigma) if self.front_end is not None else np.zeros(plan.padded)
        blended = [np.zeros((plan.padded, *tile.shape[1:]), dtype=np.float32) for tile in tiles]
        per_tile = len(plan.windows)
        jobs = [(t, k) for t in range(len(tiles)) for k in range(per_tile)]
        evaluations = np.zeros(len(jobs))
        residual = np.zeros(len(jobs))
        tol = float(self.model.deq.config.tol)
        start = 0
        while start < len(jobs):
            chunk = jobs[start : start + self._chunk_size(*tiles[0].shape[1:])]
            noisy = [plan.normalise(sources[t][0], k) for t, k in chunk]
            init = [plan.normalise(sources[t][1], k) for t, k in chunk]
            sigmas = [sigma[plan.windows[k]] / plan.scale(k) for _, k in chunk]
            try:
                clean, chunk_evaluations, chunk_residual = self._run_model(noisy, init, sigmas)
            except Exception as error:
                if not is_out_of_memory(error) or len(chunk) == 1:
                    raise
                self._window_batch = max(1, len(chunk) // 2)
                logger.warning(
                    "decsc ran out of memory on %d windows; retrying with %d", len(chunk), self._window_batch
                )
                _empty_cache(self.device)
                continue
            for (t, k), values in zip(chunk, clean, strict=True):
                plan.accumulate(blended[t], k, values)
            evaluations[start : start + len(chunk)] = chunk_evaluations
            residual[start : start + len(chunk)] = chunk_residual
            start += len(chunk)
        results = []
        for t, values in enumerate(blended):
            part = slice(t * per_tile, (t + 1) * per_tile)
            results.append(
                TileResult(
                    plan.finish(values),
                    {
                        "evaluations": float(np.mean(evaluations[part])),
                        "max_residual": float(np.max(residual[part])),
                        "converged": float(np.mean(residual[part] < tol)),
                        "tol": tol,
                    },
                )
            )
        return results

    def _chunk_size(self, height: int = 0, width: int = 0) -> int:
        asked = self.config.resolved().window_batch
        if self.device.type == "cuda" and not self.config.naive and height and width:
            asked = max(asked, cuda_window_batch(self.device, self.band_window, height, width))
        return min(asked, self._window_batch or asked)

    def _run_model(
        self, noisy: list[np.ndarray], init: list[np.ndarray], sigma: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows, each (b, h, w) (sigma (b,)), -> clean (N, b, h, w) float32, evaluations (N,), residual (N,)."""
        import torch

        pinned = self.device.type == "cuda" and not self.config.naive  # the naive path copies plainly

        def tensor(arrays: list[np.ndarray]) -> torch.Tensor:
            value = torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False))
            if pinned:
                return value.pin_memory().to(self.device, non_blocking=True)
            return value.to(self.device)

        clean, stats = self.model(tensor(noisy), init=tensor(init), sigma=tensor(sigma))
        evaluations = (stats.evaluations + stats.extra_evaluations).cpu().numpy()
        return clean.float().cpu().numpy(), evaluations, stats.residual.float().cpu().numpy()


BYTES_PER_WINDOW_VOXEL = 160
"""Measured order of the model's working memory per voxel of a window in one solve (codes, Anderson history of
6 iterates and their images, activations), in bytes; used to size CUDA batches from free memory."""
MAX_CUDA_WINDOW_BATCH = 512


def cuda_window_batch(device: torch.device, bands: int, height: int, width: int, *, share: float = 0.6) -> int:
    """Windows per model call that fit in ``share`` of the GPU's free memory (at least 1, at most 512).

    The estimate only sets the starting point: an out-of-memory error still halves the batch and retries.
    """
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    per_window = BYTES_PER_WINDOW_VOXEL * bands * height * width
    return int(min(MAX_CUDA_WINDOW_BATCH, max(1, share * free // per_window)))


def _refold(unfolded: list[tuple[Any, Any]]) -> None:
    """Undo the naive path's unfolding: drop the instance ``forward`` and restore the cached kernels."""
    for module, folded in unfolded:
        module.__dict__.pop("forward", None)
        module.folded = folded


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _preset(model: DECSC) -> str:
    from hsidenoise.model.decsc import preset_name

    return preset_name(model.config) or "custom"
