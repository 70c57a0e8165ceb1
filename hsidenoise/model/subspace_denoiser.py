"""Inference with the subspace DECSC: front end -> eigen-images -> equilibrium correction -> bands.

``prepare(stats)`` fits the low-rank front end (noise, whitening, Marchenko-Pastur subspace) on the whole-cube
pixel sample, exactly as ``--method lowrank`` does. ``denoise_tiles`` then, per tile: robust projection on the
subspace (k eigen-images with unit noise), the DCT (or BM3D) pilot of each eigen-image, one model call on the
(1, k, h, w) stack with the components' eigenvalues, and back-projection to the bands. Any band count runs
through one model call per tile; there are no band windows. The eigenvalues come from the whole cube, so
tiles of one scene see one model of the noise and no seams appear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.methods import TileResult

if TYPE_CHECKING:
    import torch

    from hsidenoise.adapt import AdaptConfig, AdaptResult
    from hsidenoise.lowrank import LowRankConfig, Subspace
    from hsidenoise.model.subspace import SubspaceDECSC
    from hsidenoise.statistics import CubeStatistics


def correct_eigenimages(
    model: SubspaceDECSC, eigen: np.ndarray, pilot: np.ndarray, eigenvalues: np.ndarray, device: torch.device
) -> tuple[np.ndarray, dict[str, float]]:
    """One model call on one tile's eigen-images.

    Args:
        eigen, pilot: (k, h, w) in whitened units; eigenvalues: (k,).

    Returns:
        (corrected (k, h, w) float64, solver facts: ``evaluations`` and ``max_residual``).
    """
    import torch

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)

    pilot_t = tensor(pilot)
    corrected, stats = model(tensor(eigen), pilot_t, tensor(eigenvalues))
    facts = {
        "evaluations": float(stats.evaluations.float().mean()) + stats.extra_evaluations,
        "max_residual": float(stats.residual.max()),
    }
    # the correction is added in float64, so that a zero correction returns the front end's pilot bit for bit
    correction = (corrected.float() - pilot_t)[0].double().cpu().numpy()
    return np.asarray(pilot, dtype=np.float64) + correction, facts


class SubspaceDECSCDenoiser:
    """``--method decsc`` with subspace weights, behind the ``Denoiser`` protocol of :mod:`hsidenoise.methods`.

    Args:
        model: the network (put in eval mode).
        front_end: the low-rank settings the weights were trained with (DCT pilot by default).
        device: where the model runs (the front end runs on the CPU in numpy).
    """

    name = "decsc"

    def __init__(
        self,
        model: SubspaceDECSC,
        *,
        front_end: LowRankConfig | None = None,
        device: str | torch.device = "cpu",
        adaptation: AdaptConfig | None = None,
    ) -> None:
        import torch

        from hsidenoise.lowrank import LowRankConfig, LowRankDenoiser

        self.model = model.to(torch.device(device)).fold_for_inference()
        self.original_model = self.model
        self.device = torch.device(device)
        self.front_end = LowRankDenoiser(front_end or LowRankConfig(spatial="dct"))
        self.adaptation = adaptation
        self.adapt_progress: Callable[[float, float], None] | None = None
        self.adapt_result: AdaptResult | None = None
        self._tiles = 0
        self._evaluations = 0.0

    @property
    def wants_samples(self) -> bool:
        """Whether :meth:`adapt_to` should be given crops of the cube after ``prepare`` (``--adapt``)."""
        return self.adaptation is not None and self.adaptation.seconds > 0

    def adapt_to(self, crops: Sequence[np.ndarray]) -> AdaptResult:
        """Fine-tune the model on crops of this cube by SURE (see :mod:`hsidenoise.adapt`), after ``prepare``.

        Args:
            crops: (B_valid, h, w) float32 crops of the cube in data units.

        Returns:
            What happened; the adapted weights are used for the following tiles only if they measured better.
        """
        from hsidenoise.adapt import AdaptConfig, EigenCrop, adapt
        from hsidenoise.lowrank import denoise_eigenimages, project

        subspace = self.front_end.subspace
        if subspace is None:
            raise ConfigError("decsc: call prepare(stats) before adapt_to(crops)")
        config = self.front_end.config

        def pilot_of(eigen: np.ndarray) -> np.ndarray:
            return denoise_eigenimages(eigen, config)[0]

        eigen_crops = []
        for crop in crops:
            eigen, _ = project(crop, subspace, config)
            eigen_crops.append(EigenCrop(eigen, pilot_of(eigen)))
        eigenvalues = np.asarray(subspace.eigenvalues[: subspace.rank], dtype=np.float64)
        model, result = adapt(
            self.original_model.cpu(), eigen_crops, eigenvalues, pilot_of, self.adaptation or AdaptConfig(),
            progress=self.adapt_progress,
        )  # fmt: skip
        self.model = model.to(self.device).eval()
        self.adapt_result = result
        return result

    @property
    def subspace(self) -> Subspace | None:
        return self.front_end.subspace

    def prepare(self, stats: CubeStatistics) -> None:
        """Fit the front end on the cube's pixel sample (valid bands); any earlier adaptation is dropped."""
        self._tiles, self._evaluations = 0, 0.0
        self.model, self.adapt_result = self.original_model, None
        self.front_end.prepare(stats)
        rank = self.front_end.subspace.rank  # type: ignore[union-attr]
        if rank > self.model.config.max_components:
            raise ConfigError(
                f"the front end kept {rank} components, more than the model's {self.model.config.max_components}; "
                "lower the front end's max_rank to the model's"
            )

    def denoise_tile(self, tile: np.ndarray) -> np.ndarray:
        """(B_valid, h, w) float32 -> same shape, in cube units."""
        return self.denoise_tiles([tile])[0].denoised

    def denoise_tiles(self, tiles: Sequence[np.ndarray]) -> list[TileResult]:
        """Denoise tiles one by one (each is one model call on its k eigen-images).

        The result's ``info`` holds ``evaluations`` (layer evaluations: solve, initial point, phantom steps)
        and ``max_residual`` of the equilibrium solve.
        """
        import torch

        from hsidenoise.lowrank import back_project, denoise_eigenimages, project

        subspace = self.front_end.subspace
        if subspace is None:
            raise ConfigError("decsc: call prepare(stats) before denoising tiles")
        config = self.front_end.config
        eigenvalues = np.asarray(subspace.eigenvalues[: subspace.rank], dtype=np.float64)
        results = []
        for tile in tiles:
            if tile.ndim != 3 or tile.shape[0] != subspace.band_count:
                raise CubeShapeError(
                    f"decsc was prepared for tiles of {subspace.band_count} valid bands (B_valid, h, w); "
                    f"got an array of shape {tuple(tile.shape)}"
                )
            eigen, _ = project(tile, subspace, config)
            pilot, _ = denoise_eigenimages(eigen, config)
            with torch.inference_mode():
                corrected, facts = correct_eigenimages(self.model, eigen, pilot, eigenvalues, self.device)
            results.append(TileResult(back_project(corrected, subspace).astype(np.float32), facts))
            self._tiles += 1
            self._evaluations += facts["evaluations"]
        return results

    def info(self) -> dict[str, Any]:
        """Front end, preset and solver work, for the run report."""
        from hsidenoise.model.subspace import SUBSPACE_PRESETS

        preset = next((name for name, c in SUBSPACE_PRESETS.items() if c == self.model.config), None)
        from dataclasses import asdict

        return {
            "preset": preset or "custom",
            "device": str(self.device),
            "adaptation": None if self.adapt_result is None else asdict(self.adapt_result),
            "tiles": self._tiles,
            "evaluations_per_tile": self._evaluations / self._tiles if self._tiles else None,
            "front_end": self.front_end.info(),
        }
