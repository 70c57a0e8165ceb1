"""The band-space SURE blend of a learned eigen-image denoiser's change (``hsidenoise.subspace.band_blend``) and
the divergence the DCT-CSC returns for it: each piece against a truth the test constructs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsidenoise.model import build_model
from hsidenoise.model.dct_csc import DCTCSCConfig
from hsidenoise.subspace.band_blend import (
    band_probe,
    blend_weights,
    centre_lines,
    probe_perturbation,
    subspace_divergence,
)
from hsidenoise.subspace.signal_subspace import Subspace


def smooth(rng: np.random.Generator, bands: int, rows: int, cols: int) -> np.ndarray:
    walk = np.cumsum(np.cumsum(rng.standard_normal((bands, rows, cols)), axis=1), axis=2)
    return walk / walk.std(axis=(1, 2), keepdims=True)


def test_a_change_that_repairs_the_front_end_is_kept_and_one_that_harms_it_is_not() -> None:
    rng = np.random.default_rng(0)
    bands, rows, cols, sigma = 5, 40, 37, np.full(5, 0.1)
    clean = smooth(rng, bands, rows, cols)
    noisy = clean + sigma[:, None, None] * rng.standard_normal(clean.shape)
    front = clean + 0.2 * smooth(rng, bands, rows, cols)  # a biased front end, independent of the noise
    kept = np.ones(clean.shape, bool)
    repair, harm = clean - front, front - clean
    beta = blend_weights(noisy, kept, front, repair, np.zeros(bands), sigma)
    np.testing.assert_allclose(beta, 1.0, atol=0.1)
    assert np.all(blend_weights(noisy, kept, front, harm, np.zeros(bands), sigma) < 0.1)
    assert np.all(blend_weights(noisy, kept, front, np.zeros_like(front), np.zeros(bands), sigma) == 0)


@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_reinjecting_noise_is_weighed_by_its_divergence(bias: float) -> None:
    """change = c (y - FE): SURE's sums run over the kept entries centred along columns (P), so its divergence is
    c tr(P) = c (r - 1) q on a complete r x q grid, and SURE's beta is the oracle's
    ||P s||^2 / (c (||P s||^2 + (r - 1) q sigma^2)) (s the front end's bias), 0 when the front end is unbiased."""
    rng = np.random.default_rng(1)
    bands, rows, cols, c = 4, 200, 190, 0.5
    sigma = np.array([0.05, 0.1, 0.2, 0.4])
    clean = smooth(rng, bands, rows, cols)
    noisy = clean + sigma[:, None, None] * rng.standard_normal(clean.shape)
    shift = bias * sigma[:, None, None] * smooth(rng, bands, rows, cols)
    front = clean - shift
    kept = np.ones(clean.shape, bool)
    kept[:, :5] = False  # rows the front end replaced: left out of the sums and of the divergence
    entries = np.full(bands, (rows - 5 - 1) * cols)
    beta = blend_weights(noisy, kept, front, c * (noisy - front), c * entries, sigma)
    energy = (centre_lines(shift, kept).reshape(bands, -1) ** 2).sum(axis=1)
    oracle = np.clip(energy / (c * (energy + entries * sigma**2)), 0, 1)
    np.testing.assert_allclose(beta, oracle, atol=0.03)  # SURE fluctuates with ||n||^2 - n sigma^2


def linear_case(seed: int, bands: int, rank: int, rows: int, cols: int, quiet_row: float = 1.0):
    """A subspace (band 0's basis row scaled by ``quiet_row``: a band with little of its variance in the subspace),
    and a linear per-pixel eigen-image map that mixes the components (as the coupling does)."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((bands, rank))
    raw[0] *= quiet_row
    basis = np.linalg.qr(raw)[0]
    sigma = rng.uniform(0.5, 2.0, bands)
    subspace = Subspace(sigma=sigma, mean=rng.standard_normal(bands), basis=basis,
                        eigenvalues=np.linspace(30, 1, bands), edge=1.5)  # fmt: skip
    mixing = rng.uniform(-0.5, 0.7, (rank, rank))
    return subspace, mixing


def test_subspace_divergence_is_each_bands_derivative_by_itself_cross_components_included() -> None:
    """For a linear per-pixel map M of the eigen-images, sum_p d (P change)_b(p) / d y_b(p) is (L M W E)_bb times
    tr(P) = rows cols (1 - 1 / rows) (P: each column less its mean), within the one probe's sampling error; a
    mean-field sum over each component alone (M's diagonal) is not."""
    bands, rank, rows, cols = 7, 3, 300, 290
    subspace, mixing = linear_case(2, bands, rank, rows, cols)
    kept = np.ones((bands, rows, cols), bool)
    perturbation = probe_perturbation(band_probe(kept, seed=7), subspace)
    responses = np.einsum("ij,jhw->ihw", mixing, perturbation)[None]
    basis, sigma = subspace.basis, subspace.sigma
    jacobian = (sigma[:, None] * basis) @ mixing @ (basis.T / sigma[None, :])  # d change_b / d y_b', per pixel
    exact = np.diag(jacobian) * rows * cols * (1 - 1 / rows)
    estimate = subspace_divergence(perturbation, responses, subspace)[0]
    np.testing.assert_allclose(estimate, exact, rtol=0, atol=0.02 * np.abs(exact).max())
    mean_field = (basis * basis) @ np.diag(mixing) * rows * cols * (1 - 1 / rows)
    assert np.abs(mean_field - exact).max() > 0.1 * np.abs(exact).max()


def test_subspace_divergence_is_less_noisy_than_a_bands_own_probe_where_the_subspace_holds_little_of_it() -> None:
    """The k x k traces pool every band's probe: on a band with a small basis row (its own probe moves the
    eigen-images little, the other bands' probes still move its change), the estimate from its own probe alone,
    sum_p probe_b (P L r)_b / (h sigma_b), errs several times more over probes than the pooled one."""
    bands, rank, rows, cols, step = 12, 3, 40, 37, 0.01
    subspace, mixing = linear_case(5, bands, rank, rows, cols, quiet_row=0.05)
    assert np.linalg.norm(subspace.basis[0]) < 0.1
    kept = np.ones((bands, rows, cols), bool)
    basis, sigma = subspace.basis, subspace.sigma
    exact = np.diag((sigma[:, None] * basis) @ mixing @ (basis.T / sigma[None, :]))[0] * rows * cols * (1 - 1 / rows)
    pooled, own = [], []
    for seed in range(40):
        probe = band_probe(kept, seed=seed)
        perturbation = probe_perturbation(probe, subspace, step)
        response = np.einsum("ij,jhw->ihw", mixing, perturbation)
        pooled.append(subspace_divergence(perturbation, response[None], subspace, step)[0, 0])
        moved = centre_lines(((sigma[:, None] * basis) @ response.reshape(rank, -1)).reshape(kept.shape), kept)
        own.append(float(np.sum(moved[0] * probe[0])) / (step * sigma[0]))
    pooled_error = np.sqrt(np.mean((np.array(pooled) - exact) ** 2))
    own_error = np.sqrt(np.mean((np.array(own) - exact) ** 2))
    assert abs(np.mean(pooled) - exact) < 3 * pooled_error / np.sqrt(40)  # no bias beyond its sampling error
    assert pooled_error < own_error / 4


def test_the_models_response_is_its_change_run_again_on_the_moved_input() -> None:
    """solve_with_response's front end is the untrained model's output (``--method lowrank``'s DCT), its two changes
    the trained front end's (gate shut) minus it and the model's output minus the trained front end, and their
    responses the changes on z + perturbation minus the changes on z, with stage 1's hard thresholds free to move
    (a perturbation large enough to cross some)."""
    torch.manual_seed(0)
    model = build_model(DCTCSCConfig(coupling=True)).double().eval()
    with torch.no_grad():
        model.gate.fill_(0.4)
        model.mix.fill_(0.3)
        model.coupling.fill_(0.5)
        model.wiener.add_(0.2 * torch.randn_like(model.wiener))
        model.dictionary_rotation.add_(0.05 * torch.randn_like(model.dictionary_rotation))
    untrained = build_model(DCTCSCConfig(coupling=True)).double().eval()
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
        fe0, _ = untrained(z, None, eigenvalues, noise=noise)
        return fe0, torch.stack([fe - fe0, x - fe])

    with torch.no_grad():
        departure, changes, responses, stats = model.solve_with_response(eigen, eigenvalues, noise, perturbation)
        front, expected_changes = parts(eigen)
        _, moved_changes = parts(eigen + perturbation)
    assert bool(stats.converged.all())
    torch.testing.assert_close(eigen - departure, front, rtol=0, atol=1e-9)
    torch.testing.assert_close(changes, expected_changes, rtol=0, atol=1e-9)
    torch.testing.assert_close(responses, moved_changes - expected_changes, rtol=0, atol=1e-9)
    assert float(changes[0].abs().max()) > 1e-3  # the trained second stage does change the front end
    assert float(responses.abs().amax(dim=(1, 2, 3, 4)).min()) > 1e-3  # both changes depend on the input


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


def test_the_box_quadratic_minimum_is_the_grids_best() -> None:
    """Two parts, random convex quadratics (some degenerate: one part zero, or two parts collinear): the exact face
    search is at least as good as a fine grid over [0, 1]^2 and within the box."""
    from hsidenoise.subspace.band_blend import box_quadratic_minimum

    rng = np.random.default_rng(5)
    factors = rng.standard_normal((40, 2, 3))
    factors[0, 1] = 0.0  # a part that is zero
    factors[1, 1] = 2 * factors[1, 0]  # collinear parts
    gram = np.einsum("bip,bjp->bij", factors, factors)
    linear = rng.standard_normal((40, 2)) * 2
    beta = box_quadratic_minimum(gram, linear, 1.0)
    assert np.all((beta >= 0) & (beta <= 1))
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201)), axis=-1).reshape(-1, 2)

    def value(b: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.einsum("ci,ij,cj->c", candidates, gram[b], candidates) + 2 * candidates @ linear[b]

    for b in range(40):
        assert value(b, beta[b][None])[0] <= value(b, grid).min() + 1e-9
    assert np.all(beta[0, 1] == 0.0)


def test_a_change_whose_gain_is_within_sures_noise_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changes that neither help nor hurt (small fields independent of the noise): without the significance guard
    SURE keeps some of about half of them (its estimate of the gain is noise), with it only where the estimated gain
    exceeds two standard errors (a few per cent); a change that repairs a large error is kept either way."""
    import hsidenoise.subspace.band_blend as band_blend

    rng = np.random.default_rng(6)
    bands, rows, cols = 300, 24, 25
    sigma = np.full(bands, 1.0)
    clean = smooth(rng, bands, rows, cols)
    noisy = clean + rng.standard_normal(clean.shape)
    front = clean.copy()
    kept = np.ones(clean.shape, bool)
    idle = 0.01 * smooth(rng, bands, rows, cols)
    guarded = blend_weights(noisy, kept, front, idle, np.zeros(bands), sigma)
    monkeypatch.setattr(band_blend, "SIGNIFICANCE", 0.0)
    unguarded = blend_weights(noisy, kept, front, idle, np.zeros(bands), sigma)
    assert 0.35 < np.mean(unguarded > 0) < 0.65
    assert np.mean(guarded > 0) < 0.08
    monkeypatch.undo()
    error = 30.0 * centre_lines(smooth(rng, bands, rows, cols), kept)  # no line means: nothing for P to remove
    np.testing.assert_allclose(blend_weights(noisy, kept, clean + error, -error, np.zeros(bands), sigma), 1.0, atol=0.1)


def test_the_ramp_shrinks_toward_the_default_in_proportion_to_sures_confidence() -> None:
    """``ramp=R``: a band moves from its default toward SURE's minimum by min(1, z / R), z the saving in standard
    errors. Idle changes (neither help nor hurt) stay near the default; a change that repairs a large error is
    taken whole; between them the share falls as R grows, and SURE never rises above the default's."""
    rng = np.random.default_rng(7)
    bands, rows, cols = 300, 24, 25
    sigma = np.full(bands, 1.0)
    clean = smooth(rng, bands, rows, cols)
    noisy = clean + rng.standard_normal(clean.shape)
    kept = np.ones(clean.shape, bool)
    idle = 0.01 * smooth(rng, bands, rows, cols)
    free = blend_weights(noisy, kept, clean, idle, np.zeros(bands), sigma, ramp=1e-12)  # the minimum itself
    ramped = {r: blend_weights(noisy, kept, clean, idle, np.zeros(bands), sigma, ramp=r) for r in (2.0, 6.0)}
    assert 0.35 < np.mean(free > 0) < 0.65
    assert np.all(ramped[6.0] <= ramped[2.0] + 1e-12) and np.all(ramped[2.0] <= free + 1e-12)
    assert np.mean(ramped[6.0]) < 0.25 * np.mean(free)
    default = np.full(bands, 0.5)  # a default inside the box: shares move toward the minimum from either side
    halfway = blend_weights(noisy, kept, clean, idle, np.zeros(bands), sigma, default=[0.5], ramp=6.0)
    assert np.all(np.abs(halfway - default) <= np.abs(free - default) + 1e-12)
    delta = centre_lines(idle, kept).reshape(bands, -1)
    residual = centre_lines(clean - noisy, kept).reshape(bands, -1)

    def sure(beta: np.ndarray) -> np.ndarray:
        return beta**2 * (delta**2).sum(1) + 2 * beta * (delta * residual).sum(1)

    assert np.all(sure(halfway) <= sure(default) + 1e-9)
    error = 30.0 * centre_lines(smooth(rng, bands, rows, cols), kept)
    np.testing.assert_allclose(
        blend_weights(noisy, kept, clean + error, -error, np.zeros(bands), sigma, ramp=6.0), 1.0, atol=0.1
    )


def test_imputed_entries_follow_the_moved_entries_as_the_cleaning_imputes_them() -> None:
    """move_cleaned against the cleaning itself: a tile with dead columns and impulses, cleaned, then cleaned again
    after its kept entries moved a little (every decision the same): the imputed entries moved as move_cleaned
    says, within the Gauss-Seidel sweeps' convergence."""
    from hsidenoise.subspace import LowRankConfig, fit_lowrank, sample_pixels
    from hsidenoise.subspace.outliers import clean_tile, move_cleaned

    rng = np.random.default_rng(7)
    bands, rows, cols = 19, 41, 43
    maps = np.abs(smooth(rng, 3, rows, cols))
    clean = 0.2 + np.einsum("bk,khw->bhw", rng.uniform(0.05, 0.2, (bands, 3)), maps)
    noisy = clean + rng.uniform(0.002, 0.01, bands)[:, None, None] * rng.standard_normal(clean.shape)
    noisy[4][:, [5, 6, 30]] = 0.0  # dead columns
    hits = rng.random((rows, cols)) < 0.3
    noisy[11][hits] = rng.choice([0.0, 1.0], size=int(hits.sum()))  # impulse
    config = LowRankConfig(spatial="dct")
    subspace = fit_lowrank(sample_pixels(noisy, 65536, 0), config)
    before = clean_tile(noisy, subspace, config)
    kept = ~before.missing & (before.values == noisy)
    step = 1e-4 * np.where(kept, rng.choice([-1.0, 1.0], size=noisy.shape), 0.0)
    after = clean_tile(noisy + step, subspace, config)
    np.testing.assert_array_equal(after.missing, before.missing)  # the same decisions
    moved = move_cleaned(step, before, subspace.regression)
    np.testing.assert_array_equal(moved[kept], step[kept])
    actual = after.values - before.values
    assert before.missing.sum() > 500 and np.abs(actual[before.missing]).max() > 1e-6  # imputed entries do move
    error = np.abs(moved - actual)[before.missing]
    assert error.max() < 0.05 * np.abs(actual[before.missing]).max()
