"""The band-space SURE blend of a learned eigen-image denoiser's change (``hsidenoise.subspace.band_blend``) and
the divergence the DCT-CSC returns for it: each piece against a truth the test constructs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsidenoise.model import build_model
from hsidenoise.model.dct_csc import DCTCSCConfig
from hsidenoise.subspace.band_blend import band_divergence, band_probe, blend_weights, probe_perturbation
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


def test_band_divergence_is_each_bands_derivative_by_itself_cross_components_included() -> None:
    """A linear eigen-image map that mixes the components (M, as the coupling does): the band-space Monte-Carlo
    estimate is sum_p d change_b(p) / d y_b(p) over the kept entries, (L M W)_bb times their count, within its
    sampling error; a mean-field sum over each component alone (M's diagonal) is not."""
    rng = np.random.default_rng(2)
    bands, rank, rows, cols = 7, 3, 300, 290
    basis = np.linalg.qr(rng.standard_normal((bands, rank)))[0]
    sigma = rng.uniform(0.5, 2.0, bands)
    subspace = Subspace(sigma=sigma, mean=rng.standard_normal(bands), basis=basis,
                        eigenvalues=np.linspace(30, 1, bands), edge=1.5)  # fmt: skip
    mixing = np.array([[0.3, 0.4, 0.0], [-0.5, -0.2, 0.1], [0.2, 0.0, 0.7]])
    kept = rng.random((bands, rows, cols)) > 0.2
    probe = band_probe(kept, seed=7)
    response = np.einsum("ij,jhw->ihw", mixing, probe_perturbation(probe, subspace))
    jacobian = (sigma[:, None] * basis) @ mixing @ (basis.T / sigma[None, :])  # d change_b / d y_b', per pixel
    exact = np.diag(jacobian) * kept.reshape(bands, -1).sum(axis=1)
    estimate = band_divergence(response, subspace, probe)
    np.testing.assert_allclose(estimate, exact, rtol=0, atol=0.02 * np.abs(exact).max())
    entries = kept.reshape(bands, -1).sum(axis=1)
    mean_field = (sigma[:, None] * basis * basis / sigma[:, None]) @ np.diag(mixing) * entries
    assert np.abs(mean_field - exact).max() > 0.1 * np.abs(exact).max()


def test_the_models_response_is_its_change_run_again_on_the_moved_input() -> None:
    """solve_with_response's front end is the gate-shut model's output, its change the model's output minus
    it, and its response the change on z + perturbation minus the change on z, with stage 1's hard thresholds
    free to move (a perturbation large enough to cross some)."""
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
    perturbation = 0.3 * torch.as_tensor(rng.choice([-1.0, 1.0], size=eigen.shape))
    gate = model.gate.clone()

    def parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = model(z, None, eigenvalues, noise=noise)
        model.gate.fill_(-1.0)
        fe, _ = model(z, None, eigenvalues, noise=noise)
        model.gate.copy_(gate)
        return fe, x - fe

    with torch.no_grad():
        departure, change, response, stats = model.solve_with_response(eigen, eigenvalues, noise, perturbation)
        front, expected_change = parts(eigen)
        _, moved_change = parts(eigen + perturbation)
    assert bool(stats.converged.all())
    torch.testing.assert_close(eigen - departure, front, rtol=0, atol=1e-9)
    torch.testing.assert_close(change, expected_change, rtol=0, atol=1e-9)
    torch.testing.assert_close(response, moved_change - expected_change, rtol=0, atol=1e-9)
    assert float(response.abs().max()) > 1e-3  # the change does depend on the input


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
