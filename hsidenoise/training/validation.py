"""Validation during training: fixed noisy crops of the validation cubes, scored after every epoch.

The crops and their noise are fixed (:data:`VALIDATION_SEED`), so every epoch and every run sees the same cases.
The band-window model denoises them window by window as inference does (:func:`denoise_windows`); the subspace
model goes through the real inference path (:meth:`hsidenoise.training.families.SubspaceFamily.validate`). Either
way the model's MPSNR is reported next to the front end's and the noisy input's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hsidenoise.training.data import SamplerConfig, TrainingCube, normalise_window
from hsidenoise.device import autocast
from hsidenoise.errors import ConfigError
from hsidenoise.noise import add_noise

if TYPE_CHECKING:
    import torch

    from hsidenoise.training.data import FrontEnd
    from hsidenoise.model import DECSC

VALIDATION_SEED = 20_241_123
"""Seed of the validation noise: the same noisy crops for every epoch and every run."""


@dataclass(frozen=True)
class ValidationScore:
    """MPSNR (dB, peak 1 on the [0, 1]-normalised cube) on the validation crops.

    Attributes:
        mpsnr: the model's, averaged over the validation cases.
        init_mpsnr: the front end's (the model's starting point), same cases.
        noisy_mpsnr: the noisy input's, same cases.
        per_case: ``"cube/recipe"`` -> (model, front end, noisy) MPSNR.
    """

    mpsnr: float
    init_mpsnr: float
    noisy_mpsnr: float
    per_case: dict[str, tuple[float, float, float]] = field(default_factory=dict)



@dataclass(frozen=True, eq=False)
class ValidationCase:
    """A fixed noisy crop of a validation cube and its front-end output, in [0, 1] cube units.

    Attributes:
        name: ``"cube/recipe"``.
        clean, noisy, init: (B, h, w) float32.
        sigma: (B,) front-end noise estimate.
    """

    name: str
    clean: np.ndarray
    noisy: np.ndarray
    init: np.ndarray
    sigma: np.ndarray


def central_window(rows: int, cols: int, crop: int) -> tuple[slice, slice, slice]:
    """The (bands, rows, cols) index of the central ``crop`` x ``crop`` window; crop 0 (or larger): the whole cube."""
    if crop <= 0:
        return slice(None), slice(None), slice(None)
    top, left = max(0, (rows - crop) // 2), max(0, (cols - crop) // 2)
    return slice(None), slice(top, top + crop), slice(left, left + crop)


def prepare_validation(
    paths: Sequence[Path],
    sampler: SamplerConfig,
    *,
    band_window: int,
    crop: int,
    front_end: FrontEnd | None,
) -> list[ValidationCase]:
    """One case per validation cube and distinct noise recipe: central crop, fixed-seed noise, front end.

    Raises:
        ConfigError: a validation cube has fewer valid bands than the model's window.
    """
    cases: list[ValidationCase] = []
    for cube_index, path in enumerate(paths):
        cube = TrainingCube.load(Path(path))
        if cube.bands < band_window:
            raise ConfigError(
                f"validation cube {path} has {cube.bands} valid bands, fewer than the model's {band_window}-band "
                "window; choose another validation cube"
            )
        _, rows, cols = cube.data.shape
        clean = np.ascontiguousarray(cube.data[central_window(rows, cols, crop)])
        specs = list(dict.fromkeys(spec for spec, _ in sampler.noise))
        for recipe_index, spec in enumerate(specs):
            rng = np.random.default_rng([VALIDATION_SEED, cube_index, recipe_index])
            noisy = add_noise(clean, spec, rng)
            if front_end is None:
                init, sigma = noisy.noisy, np.asarray(noisy.sigma, dtype=np.float64)
            else:
                init, sigma = front_end(noisy.noisy, rng)
            cases.append(ValidationCase(f"{cube.name}/{spec.recipe}", clean, noisy.noisy, init, sigma))
    return cases


def denoise_windows(
    model: DECSC,
    noisy: np.ndarray,
    init: np.ndarray,
    sigma: np.ndarray,
    *,
    device: torch.device,
) -> np.ndarray:
    """Denoise a whole (B, h, w) cube with the model, band window by band window, as inference does.

    Windows of ``model.config.bands`` bands at most :class:`hsidenoise.tiling.TileConfig` ``band_stride`` bands
    apart, each normalised with its own (lo, hi) over the noisy window, blended along the spectrum with
    :func:`hsidenoise.tiling.blend_weights`. All windows go through the model as one batch.

    Returns:
        (B, h, w) float32 in cube units.
    """
    import torch

    from hsidenoise.tiling import TileConfig, blend_weights, plan_band_windows

    window = band_window_of(model)
    windows = plan_band_windows(noisy.shape[0], window, min(TileConfig().band_stride, window))
    mapped = [
        normalise_window(noisy[w], init[w], sigma[w], lo=float(noisy[w].min()), hi=float(noisy[w].max()))
        for w in windows
    ]

    def stacked(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(m, name) for m in mapped])).to(device)

    with torch.no_grad(), autocast(device):
        clean, _ = model(stacked("noisy"), init=stacked("init"), sigma=stacked("sigma"))
    clean = clean.float().cpu().numpy()
    total = np.zeros(noisy.shape, dtype=np.float64)
    weight = np.zeros(noisy.shape[0], dtype=np.float64)
    for w, band_weight, m, out in zip(windows, blend_weights(windows), mapped, clean, strict=True):
        total[w] += band_weight[:, None, None] * (out * (m.hi - m.lo) + m.lo)
        weight[w] += band_weight
    return (total / weight[:, None, None]).astype(np.float32)


def validate(model: DECSC, cases: Sequence[ValidationCase], *, device: torch.device) -> ValidationScore:
    """Score the model on the validation cases (eval mode, no gradient; torch's random state is untouched)."""
    import torch

    from hsidenoise.quality.metrics import mpsnr

    was_training = model.training
    model.eval()
    per_case: dict[str, tuple[float, float, float]] = {}
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for case in cases:
                denoised = denoise_windows(model, case.noisy, case.init, case.sigma, device=device)
                per_case[case.name] = (
                    mpsnr(denoised, case.clean),
                    mpsnr(case.init, case.clean),
                    mpsnr(case.noisy, case.clean),
                )
    finally:
        model.train(was_training)
    return mean_score(per_case)




def mean_score(per_case: dict[str, tuple[float, float, float]]) -> ValidationScore:
    scores = np.array(list(per_case.values()), dtype=np.float64)
    return ValidationScore(*(float(v) for v in scores.mean(axis=0)), per_case=per_case)



def band_window_of(model: DECSC) -> int:
    """The band-window model's window: ``model.config.bands``."""
    return int(model.config.bands)
