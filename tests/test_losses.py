"""Training losses (``hsidenoise.training.losses``): ``mpsnr`` is minus the users' metric.

For a subspace model the eigen-images are mapped back to data units as the pipeline maps them, so on a patch the
loss equals -MPSNR of the back-projected output against the clean crop, out-of-subspace residual included.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from hsidenoise.errors import ConfigError
from hsidenoise.quality.metrics import mpsnr
from hsidenoise.subspace import back_project
from hsidenoise.training.data import TrainingCube
from hsidenoise.training.losses import back_projected_mpsnr, band_mse, window_loss
from hsidenoise.training.subspace_pairs import EigenBatch, SubspaceSampler, SubspaceSamplerConfig, eigen_region


def clean_cube(bands: int, rows: int = 40, cols: int = 40, seed: int = 0) -> np.ndarray:
    """(B, H, W) float32 in [0, 1]: five smooth maps times spectra, plus a little structure outside their span."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(np.cumsum(rng.standard_normal((5, rows, cols)), axis=1), axis=2)
    maps = (walk - walk.min()) / np.ptp(walk)
    spectra = rng.uniform(0.1, 1.0, (bands, 5)) / 5
    cube = np.einsum("bk,khw->bhw", spectra, maps) + 0.003 * rng.standard_normal((bands, rows, cols))
    return np.clip(cube, 0, 1).astype(np.float32)


def one_example_batch(clean: np.ndarray, seed: int = 1) -> tuple[EigenBatch, np.ndarray, object]:
    """The whole region of a noisy version of ``clean`` as one batch, its clean region and the fitted subspace."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.005, 0.05, clean.shape[0])
    noisy = (clean + sigma[:, None, None] * rng.standard_normal(clean.shape)).astype(np.float32)
    config = SubspaceSamplerConfig(patch_size=clean.shape[1], region_size=clean.shape[1])
    full = slice(0, clean.shape[1])
    region, subspace = eigen_region(clean, noisy, full, full, config, seed=3)
    arrays = (
        region.eigen, region.pilot, region.target, region.eigenvalues, np.ones(region.rank), region.noise,
        region.bands, region.loadings, np.ones(clean.shape[0]),
    )  # fmt: skip
    batch = EigenBatch(*(torch.as_tensor(np.asarray(a, np.float32))[None] for a in arrays))
    return batch, region, subspace


def test_the_mpsnr_loss_is_minus_the_mpsnr_of_the_back_projected_output() -> None:
    clean = clean_cube(bands=14)
    batch, region, subspace = one_example_batch(clean)
    for output in (region.pilot, region.eigen, region.target):  # the front end, no denoising, the oracle
        loss = back_projected_mpsnr(torch.as_tensor(output, dtype=torch.float32)[None], batch)
        expected = -mpsnr(back_project(output, subspace), clean.astype(np.float64))
        assert float(loss) == pytest.approx(expected, abs=2e-3)
    # the oracle eigen-images still leave the out-of-subspace part: a finite floor, not +inf
    assert np.isfinite(float(back_projected_mpsnr(batch.target, batch)))


def test_each_band_counts_by_its_own_error_unlike_the_whitened_eigen_image_mse() -> None:
    """The same whitened error costs much more MPSNR on the band with the least noise."""
    clean = clean_cube(bands=14)
    batch, region, _ = one_example_batch(clean)
    per_band = band_mse(torch.as_tensor(region.pilot, dtype=torch.float32)[None], batch)[0]
    assert per_band.shape == (14,) and bool((per_band > 0).all())
    gradient_weight = 1 / per_band  # d(10 log10 MSE_b)/d MSE_b, up to 10 / ln 10
    assert float(gradient_weight.max() / gradient_weight.min()) > 2  # bands do not weigh the same


def test_padded_bands_and_components_leave_each_examples_loss_unchanged() -> None:
    small, large = clean_cube(bands=9, seed=4), clean_cube(bands=17, seed=5)
    cubes = [TrainingCube(name=n, source=None, data=c, kept_bands=np.arange(c.shape[0])) for n, c in (("s", small), ("l", large))]
    config = SubspaceSamplerConfig(patch_size=16, region_size=40, patches_per_round=2, real_fraction=1.0)
    sampler = SubspaceSampler(cubes, config, rng=np.random.default_rng(0))
    batch = sampler.next_batch(4)  # two examples of each cube: bands and components padded for one of them
    assert batch.bands.shape[1] == 17 and batch.loadings.shape == (4, 17, batch.eigen.shape[1])
    assert sorted(batch.band_mask.sum(dim=1).tolist()) == [9, 9, 17, 17]
    together = float(back_projected_mpsnr(batch.pilot, batch))
    alone = []
    for index in range(4):
        bands, comps = int(batch.band_mask[index].sum()), int(batch.mask[index].sum())
        one = EigenBatch(
            batch.eigen[index : index + 1, :comps], batch.pilot[index : index + 1, :comps],
            batch.target[index : index + 1, :comps], batch.eigenvalues[index : index + 1, :comps],
            batch.mask[index : index + 1, :comps], batch.noise[index : index + 1, :comps],
            batch.bands[index : index + 1, :bands], batch.loadings[index : index + 1, :bands, :comps],
            batch.band_mask[index : index + 1, :bands],
        )  # fmt: skip
        alone.append(float(back_projected_mpsnr(one.pilot, one)))
    assert together == pytest.approx(np.mean(alone), abs=1e-4)


def test_the_gradient_of_the_mpsnr_loss_reaches_the_dct_csc_model() -> None:
    from hsidenoise.model import build_model
    from hsidenoise.training.families import subspace_loss

    cube = clean_cube(bands=12, rows=48, cols=48, seed=6)
    cubes = [TrainingCube(name="c", source=None, data=cube, kept_bands=np.arange(12))]
    config = SubspaceSamplerConfig(patch_size=24, region_size=48, patches_per_round=4, synthetic_noise=(0.5, 1.0))
    batch = SubspaceSampler(cubes, config, rng=np.random.default_rng(2)).next_batch(4)
    torch.manual_seed(0)
    model = build_model("dctcsc").train()
    loss = subspace_loss(model, batch, loss="mpsnr")
    loss.backward()
    assert np.isfinite(float(loss.detach()))
    assert float(model.gate.grad.abs()) > 0 and float(model.wiener.grad.abs().max()) > 0
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    with pytest.raises(ConfigError, match="mse or mpsnr"):
        subspace_loss(model, batch, loss="logmse")


def test_the_window_mpsnr_loss_is_minus_the_mean_band_psnr() -> None:
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, (2, 5, 8, 8))
    output = clean + rng.uniform(0.001, 0.1, (2, 5, 1, 1)) * rng.standard_normal(clean.shape)
    loss = window_loss("mpsnr", torch.as_tensor(output), torch.as_tensor(clean))
    expected = -np.mean([mpsnr(output[n], clean[n]) for n in range(2)])
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_a_subspace_run_refuses_the_band_window_loss_and_sure_with_mpsnr(tmp_path) -> None:
    from hsidenoise.model import build_model
    from hsidenoise.training.config import TrainConfig
    from hsidenoise.training.families import family_of

    model = build_model("dctcsc")
    for loss, sampler, message in (
        ("logmse", SubspaceSamplerConfig(), "mse or mpsnr"),
        ("mpsnr", SubspaceSamplerConfig(self_supervised=True), "SURE"),
    ):
        cfg = TrainConfig(model="dctcsc", data=(tmp_path,), sampler=sampler, loss=loss)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=message):
            family_of(cfg, model)
    cfg = TrainConfig(model="dctcsc", data=(tmp_path,), loss="mpsnr")
    assert family_of(cfg, model).name == "subspace"
    with pytest.raises(ConfigError, match="unknown loss"):
        replace(cfg, loss="psnr")  # type: ignore[arg-type]
