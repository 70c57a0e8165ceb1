"""The band-space SURE blend of a learned eigen-image denoiser's change (``hsidenoise.subspace.band_blend``) and
the divergence the DCT-CSC returns for it: each piece against a truth the test constructs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsidenoise.model import build_model
from hsidenoise.model.dct_csc import DCTCSCConfig
from hsidenoise.subspace.band_blend import band_divergence, blend_weights
from hsidenoise.subspace.signal_subspace import Subspace


def smooth(rng: np.random.Generator, bands: int, rows: int, cols: int) -> np.ndarray:
    walk = np.cumsum(np.cumsum(rng.standard_normal((bands, rows, cols)), axis=1), axis=2)
    return walk / walk.std(axis=(1, 2), keepdims=True)


def test_a_change_that_repairs_the_front_end_is_kept_and_one_that_harms_it_is_not() -> None:
    rng = np.random.default_rng(0)
    bands, rows, cols, sigma = 5, 40, 37, np.full(5, 0.1)
    clean = smooth(rng, bands, rows, cols)
    noisy = clean + sigma[:, None, None] * rng.standard_normal(clean.shape)
    front = clean + 0.05 * smooth(rng, bands, rows, cols)  # a biased front end, independent of the noise
    kept = np.ones(clean.shape, bool)
    repair, harm = clean - front, front - clean
    beta = blend_weights(noisy, kept, front, repair, np.zeros(bands), sigma)
    np.testing.assert_allclose(beta, 1.0, atol=0.1)
    assert np.all(blend_weights(noisy, kept, front, harm, np.zeros(bands), sigma) < 0.1)
    assert np.all(blend_weights(noisy, kept, front, np.zeros_like(front), np.zeros(bands), sigma) == 0)


@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_reinjecting_noise_is_weighed_by_its_divergence(bias: float) -> None:
    """change = c (y - FE): its divergence is c per entry; SURE's beta is the oracle's
    ||s||^2 / (c (||s||^2 + n sigma^2)) (s the front end's bias), 0 when the front end is unbiased."""
    rng = np.random.default_rng(1)
    bands, rows, cols, c = 4, 200, 190, 0.5
    sigma = np.array([0.05, 0.1, 0.2, 0.4])
    clean = smooth(rng, bands, rows, cols)
    noisy = clean + sigma[:, None, None] * rng.standard_normal(clean.shape)
    shift = bias * sigma[:, None, None] * smooth(rng, bands, rows, cols)
    front = clean - shift
    kept = np.ones(clean.shape, bool)
    kept[:, :5] = False  # entries the front end replaced: left out of the sums and of the divergence
    entries = kept.reshape(bands, -1).sum(axis=1)
    beta = blend_weights(noisy, kept, front, c * (noisy - front), c * entries, sigma)
    energy = np.where(kept, shift, 0.0).reshape(bands, -1)
    energy = (energy**2).sum(axis=1)
    oracle = np.clip(energy / (c * (energy + entries * sigma**2)), 0, 1)
    np.testing.assert_allclose(beta, oracle, atol=0.03)  # SURE fluctuates with ||n||^2 - n sigma^2


def test_band_divergence_is_the_derivative_of_each_band_by_itself() -> None:
    """A linear eigen-image map (each component scaled by a_i): d change_b / d y_b summed over the tile."""
    rng = np.random.default_rng(2)
    bands, rank, rows, cols = 7, 3, 9, 8
    basis = np.linalg.qr(rng.standard_normal((bands, rank)))[0]
    sigma = rng.uniform(0.5, 2.0, bands)
    subspace = Subspace(sigma=sigma, mean=rng.standard_normal(bands), basis=basis,
                        eigenvalues=np.linspace(30, 1, bands), edge=1.5)  # fmt: skip
    scale = np.array([0.3, -0.2, 0.7])

    def change(tile: np.ndarray) -> np.ndarray:
        eigen = np.einsum("bk,bp->kp", basis / sigma[:, None], tile.reshape(bands, -1) - subspace.mean[:, None])
        return np.einsum("bk,kp->bp", sigma[:, None] * basis, scale[:, None] * eigen).reshape(tile.shape)

    tile = rng.standard_normal((bands, rows, cols))
    numeric = np.empty(bands)
    for band in range(bands):
        step = np.zeros_like(tile)
        step[band] = 1e-3
        numeric[band] = ((change(tile + step) - change(tile))[band] / 1e-3).sum()
    pixels = rows * cols
    np.testing.assert_allclose(band_divergence(scale * pixels, subspace, np.ones(bands)), numeric, rtol=1e-8)
    np.testing.assert_allclose(band_divergence(scale * pixels, subspace, np.full(bands, 0.5)), numeric / 2, rtol=1e-8)


def test_the_models_divergence_probe_is_its_jacobians_quadratic_form() -> None:
    """solve_with_divergence's estimate is b^T J b per component (J the Jacobian of x* - FE, by finite
    differences on a tiny stack, float64), and its FE is the gate-shut model's output."""
    torch.manual_seed(0)
    model = build_model(DCTCSCConfig(coupling=True)).double().eval()
    with torch.no_grad():
        model.gate.fill_(0.4)
        model.mix.fill_(0.3)
        model.coupling.fill_(0.5)
        model.dictionary_rotation.add_(0.05 * torch.randn_like(model.dictionary_rotation))
    rng = np.random.default_rng(3)
    eigen = torch.as_tensor(smooth(rng, 2, 10, 9) * np.array([20.0, 3.0])[:, None, None]
                            + rng.standard_normal((2, 10, 9)))[None]  # fmt: skip
    eigenvalues, noise = torch.tensor([[400.0, 9.0]], dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    probe = torch.as_tensor(rng.choice([-1.0, 1.0], size=eigen.shape))
    with torch.no_grad():
        out, front, divergence, stats = model.solve_with_divergence(eigen, eigenvalues, noise, probe, step=1e-6)
        plain, _ = model(eigen, None, eigenvalues, noise=noise)
        gate = model.gate.clone()
        model.gate.fill_(-1.0)
        shut, _ = model(eigen, None, eigenvalues, noise=noise)
        model.gate.copy_(gate)

        def change(z: torch.Tensor) -> torch.Tensor:
            x, _ = model(z, None, eigenvalues, noise=noise)
            model.gate.fill_(-1.0)
            fe, _ = model(z, None, eigenvalues, noise=noise)
            model.gate.copy_(gate)
            return (x - fe)[0]

        base, moved = change(eigen), change(eigen + 1e-6 * probe)
    assert bool(stats.converged.all())
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-9)
    torch.testing.assert_close(front, shut, rtol=0, atol=1e-9)
    expected = ((moved - base) / 1e-6 * probe[0]).flatten(1).sum(dim=1)
    assert float(expected.abs().min()) > 0.1  # the change does depend on the input
    torch.testing.assert_close(divergence[0], expected, rtol=2e-3, atol=1e-3)


def test_run_blends_by_default_and_no_band_blend_turns_it_off(tmp_path) -> None:
    """From the CLI as a user runs it, with the shipped DCT-CSC weights on a small cube: the run reports the blend
    (the bands' mean share of the change, in [0, 1]); ``--no-band-blend`` turns it off."""
    import json

    from typer.testing import CliRunner

    from hsidenoise.cli import app
    from hsidenoise.cube import Cube, CubeMeta
    from hsidenoise.io import read_cube, write_cube

    rng = np.random.default_rng(4)
    clean = np.einsum("bk,khw->bhw", rng.uniform(0.1, 1, (23, 3)), np.abs(smooth(rng, 3, 33, 29)))
    noisy = clean + rng.uniform(0.01, 0.2, 23)[:, None, None] * rng.standard_normal(clean.shape)
    write_cube(tmp_path / "c.hdr", Cube(noisy.astype(np.float32), CubeMeta()))
    runner, documents, outputs = CliRunner(), {}, {}
    for name, flags in (("blend", []), ("raw", ["--no-band-blend"]), ("front", ["--method", "lowrank", "--spatial", "dct"])):
        method = [] if name == "front" else ["--method", "decsc"]
        result = runner.invoke(app, ["run", str(tmp_path / "c.hdr"), "-o", str(tmp_path / f"{name}.hdr"), *method, *flags, "--json"])
        assert result.exit_code == 0, result.stderr
        documents[name] = json.loads(result.stdout)
        outputs[name] = read_cube(tmp_path / f"{name}.hdr").data.astype(np.float64)
    assert documents["blend"]["method_info"]["band_blend"] is True
    assert documents["raw"]["method_info"]["band_blend"] is False
    weight = documents["blend"]["method_info"]["band_blend_mean_weight"]
    assert 0.0 <= weight <= 1.0
    assert not np.allclose(outputs["raw"], outputs["front"], atol=1e-4)  # the model changes something here
