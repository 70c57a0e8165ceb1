"""What the training loop does differently for the subspace DECSC: its sampler, loss and validation.

:mod:`hsidenoise.training.loop` runs one loop for every model family; for a subspace model it asks this module for

- the sampler (:class:`hsidenoise.training.subspace_pairs.SubspaceSampler`, built from the run's sampler settings),
- the loss: mean squared error of the corrected eigen-images against the clean projection, in unit-noise
  units, over the real (unpadded) components; in these units every component's error has the same scale, and
  with the back-projection's orthonormal basis a uniform weight is what the per-band MPSNR asks for,
- the validation: the real inference path (:func:`hsidenoise.denoise.denoise_array` with
  :func:`hsidenoise.methods.decsc.build_subspace_decsc`) on fixed noisy crops of the validation
  cubes, next to the front end alone (``--method lowrank`` with the same settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hsidenoise.training.data import SamplerConfig, TrainingCube
from hsidenoise.noise import add_noise
from hsidenoise.training.subspace_pairs import EigenBatch, SubspaceSamplerConfig

if TYPE_CHECKING:
    import torch

    from hsidenoise.model.subspace_decsc import SubspaceDECSC


def subspace_sampler_config(sampler: SamplerConfig | SubspaceSamplerConfig) -> SubspaceSamplerConfig:
    """The subspace sampler settings for a run: as given, or carried over from band-window settings
    (noise mix, patch side, examples per round; the front end's pilot is the DCT)."""
    if isinstance(sampler, SubspaceSamplerConfig):
        return sampler
    from dataclasses import replace

    front_end = sampler.front_end
    if front_end.spatial not in ("dct", "none"):
        front_end = replace(front_end, spatial="dct")
    defaults = SubspaceSamplerConfig()
    return SubspaceSamplerConfig(
        noise=sampler.noise,
        patch_size=sampler.patch_size,
        region_size=max(defaults.region_size, sampler.patch_size),
        patches_per_round=sampler.patches_per_cube,
        front_end=front_end,
        front_end_pixels=sampler.front_end_pixels,
    )


SURE_EPSILON = 1e-2
"""Monte-Carlo divergence step of the self-supervised loss, unit-noise units."""


def subspace_loss(
    network: torch.nn.Module,
    batch: EigenBatch,
    *,
    sampler: SubspaceSamplerConfig | None = None,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """Masked MSE of the corrected eigen-images (unit-noise units), mean over real components and pixels.

    With a self-supervised ``sampler`` (no clean target) the loss is instead the Monte-Carlo SURE of
    :func:`hsidenoise.model.adapt.sure_batch`, whose expectation is that MSE; ``rng`` draws its probes.
    """
    if sampler is not None and sampler.self_supervised:
        from hsidenoise.model.adapt import sure_batch
        from hsidenoise.subspace import spatial_denoiser

        def pilot_of(eigen: np.ndarray) -> np.ndarray:
            return spatial_denoiser(sampler.front_end).denoise(eigen, 1.0)

        return sure_batch(
            network, batch.eigen, batch.pilot, batch.eigenvalues, batch.mask, pilot_of, SURE_EPSILON,
            rng if rng is not None else np.random.default_rng(0),
        )  # fmt: skip
    corrected, _ = network(batch.eigen, batch.pilot, batch.eigenvalues, batch.mask)
    weights = batch.mask[:, :, None, None]
    pixels = batch.eigen.shape[-1] * batch.eigen.shape[-2]
    return ((corrected.float() - batch.target).square() * weights).sum() / (weights.sum() * pixels)


@dataclass(frozen=True, eq=False)
class SubspaceValidationCase:
    """A fixed noisy crop of a validation cube and the front end's output on it ([0, 1] cube units).

    Attributes:
        name: ``"cube/recipe"``.
        clean, noisy, front_end: (B, h, w) float32.
    """

    name: str
    clean: np.ndarray
    noisy: np.ndarray
    front_end: np.ndarray


def prepare_subspace_validation(
    paths: Sequence[Path], sampler: SubspaceSamplerConfig, *, crop: int, seed: int
) -> list[SubspaceValidationCase]:
    """One case per validation cube and noise recipe: central crop, fixed-seed noise, the front end's output."""
    from hsidenoise.denoise import denoise_array
    from hsidenoise.subspace import LowRankDenoiser

    cases = []
    for cube_index, path in enumerate(paths):
        cube = TrainingCube.load(Path(path))
        _, rows, cols = cube.data.shape
        top, left = max(0, (rows - crop) // 2), max(0, (cols - crop) // 2)
        clean = np.ascontiguousarray(cube.data[:, top : top + crop, left : left + crop])
        for recipe_index, spec in enumerate(dict.fromkeys(spec for spec, _ in sampler.noise)):
            noisy = add_noise(clean, spec, np.random.default_rng([seed, cube_index, recipe_index])).noisy
            front_end = denoise_array(noisy, LowRankDenoiser(sampler.front_end))
            cases.append(SubspaceValidationCase(f"{cube.name}/{spec.recipe}", clean, noisy, front_end))
    return cases


def validate_subspace(
    model: SubspaceDECSC, cases: Sequence[SubspaceValidationCase], sampler: SubspaceSamplerConfig, *, device: torch.device
) -> dict[str, tuple[float, float, float]]:
    """``"cube/recipe"`` -> (model, front end, noisy) MPSNR through the real inference path."""
    from hsidenoise.denoise import denoise_array
    from hsidenoise.quality.metrics import mpsnr
    from hsidenoise.methods.decsc import build_subspace_decsc

    denoiser = build_subspace_decsc(model, front_end=sampler.front_end, device=device)
    return {
        case.name: (
            mpsnr(denoise_array(case.noisy, denoiser), case.clean),
            mpsnr(case.front_end, case.clean),
            mpsnr(case.noisy, case.clean),
        )
        for case in cases
    }
