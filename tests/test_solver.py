"""Anderson acceleration and plain iteration on problems whose fixed points are known independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.model.solver import SolverConfig, anderson, fixed_point_iteration

torch.set_num_threads(1)


def cosine(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.cos(z)


def linear_contraction(dim: int, radius: float, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric A (samples, dim, dim) with spectral radius ``radius`` and offsets b (samples, dim), float64."""
    rng = np.random.default_rng(seed)
    a = np.empty((samples, dim, dim))
    for i in range(samples):
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        eigenvalues = radius * np.linspace(-1.0, 1.0, dim) ** 3
        eigenvalues[-1] = radius
        a[i] = q @ np.diag(eigenvalues) @ q.T
    return a, rng.standard_normal((samples, dim))


def affine_map(a: np.ndarray, b: np.ndarray):
    a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)

    def f(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.bmm(a_t[index], z.unsqueeze(2)).squeeze(2) + b_t[index]

    return f


def test_anderson_solves_x_equals_cos_x_faster_than_plain_iteration():
    root = brentq(lambda x: x - math.cos(x), 0.0, 1.0)
    config = SolverConfig(max_iter=60, tol=1e-6)
    z0 = torch.zeros(1, 1, dtype=torch.float64)
    z_anderson, stats_anderson = anderson(cosine, z0, config)
    z_plain, stats_plain = fixed_point_iteration(cosine, z0, config)
    assert bool(stats_anderson.converged.all()) and bool(stats_plain.converged.all())
    assert float(z_anderson) == pytest.approx(root, abs=1e-5)
    assert float(z_plain) == pytest.approx(root, abs=1e-5)
    assert int(stats_anderson.evaluations) < int(stats_plain.evaluations)


def test_anderson_solves_a_linear_contraction_faster_than_plain_iteration():
    a, b = linear_contraction(dim=30, radius=0.95, samples=3, seed=0)
    exact = np.stack([np.linalg.solve(np.eye(30) - a[i], b[i]) for i in range(3)])
    f = affine_map(a, b)
    config = SolverConfig(max_iter=400, tol=1e-8)
    z0 = torch.zeros(3, 30, dtype=torch.float64)
    z_anderson, stats_anderson = anderson(f, z0, config)
    z_plain, stats_plain = fixed_point_iteration(f, z0, config)
    np.testing.assert_allclose(z_anderson.numpy(), exact, atol=1e-5)
    np.testing.assert_allclose(z_plain.numpy(), exact, atol=1e-5)
    assert bool((stats_anderson.evaluations * 3 < stats_plain.evaluations).all())


def test_each_sample_of_a_batch_gets_the_result_it_gets_alone():
    a_easy, b_easy = linear_contraction(dim=12, radius=0.3, samples=1, seed=1)
    a_hard, b_hard = linear_contraction(dim=12, radius=0.97, samples=1, seed=2)
    a, b = np.concatenate([a_easy, a_hard]), np.concatenate([b_easy, b_hard])
    config = SolverConfig(max_iter=50, tol=1e-7)
    z_batch, stats_batch = anderson(affine_map(a, b), torch.zeros(2, 12, dtype=torch.float64), config)
    for i in range(2):
        z_alone, stats_alone = anderson(
            affine_map(a[i : i + 1], b[i : i + 1]), torch.zeros(1, 12, dtype=torch.float64), config
        )
        np.testing.assert_allclose(z_batch[i].numpy(), z_alone[0].numpy(), rtol=1e-9, atol=1e-12)
        assert int(stats_batch.evaluations[i]) == int(stats_alone.evaluations[0])
        assert float(stats_batch.residual[i]) == pytest.approx(float(stats_alone.residual[0]), rel=1e-6)
    assert int(stats_batch.evaluations[0]) < int(stats_batch.evaluations[1])


def test_a_converged_sample_is_frozen_and_no_longer_evaluated():
    calls: list[list[int]] = []
    a, b = linear_contraction(dim=8, radius=0.9, samples=2, seed=3)
    affine = affine_map(a, b)

    def f(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        calls.append(index.tolist())
        return affine(z, index)

    fixed_point = np.linalg.solve(np.eye(8) - a[0], b[0])
    z0 = torch.zeros(2, 8, dtype=torch.float64)
    z0[0] = torch.from_numpy(fixed_point)  # sample 0 starts at its fixed point
    z, stats = anderson(f, z0, SolverConfig(max_iter=10, tol=1e-6))
    assert calls[0] == [0, 1]
    assert all(index == [1] for index in calls[1:])
    assert int(stats.evaluations[0]) == 1
    assert torch.equal(z[0], z0[0])
    assert stats.calls == len(calls)
    assert bool(torch.isnan(stats.trace[1:, 0]).all())


def test_the_best_iterate_is_returned_when_the_iteration_diverges():
    # z <- -1.5 z + 2.5 has the fixed point 1 but plain iteration moves away from it.
    def f(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return -1.5 * z + 2.5

    z0 = torch.tensor([[0.9]], dtype=torch.float64)
    z, stats = fixed_point_iteration(f, z0, SolverConfig(max_iter=6, tol=1e-9))
    assert float(z) == pytest.approx(0.9)  # later iterates are 1.15, 0.775, ...: farther from 1
    assert float(stats.residual[0]) == pytest.approx(float(np.nanmin(stats.trace[:, 0].numpy())))
    assert not bool(stats.converged[0])


def test_stats_merge_groups_by_their_worst_member():
    a, b = linear_contraction(dim=6, radius=0.8, samples=4, seed=4)
    _, stats = anderson(affine_map(a, b), torch.zeros(4, 6, dtype=torch.float64), SolverConfig(max_iter=30, tol=1e-6))
    grouped = stats.grouped(2)
    assert grouped.evaluations.tolist() == [max(stats.evaluations[0:2]).item(), max(stats.evaluations[2:4]).item()]
    assert grouped.residual.tolist() == [max(stats.residual[0:2]).item(), max(stats.residual[2:4]).item()]
    assert stats.as_dict()["evaluations"] == stats.evaluations.tolist()


@pytest.mark.parametrize(
    "changes",
    [{"max_iter": 0}, {"memory": 0}, {"tol": 0.0}, {"beta": 0.0}, {"phantom_damping": 1.5}, {"phantom_steps": -1}],
)
def test_impossible_solver_settings_are_rejected(changes):
    with pytest.raises(ConfigError):
        SolverConfig(**changes)


def test_states_must_be_flat():
    with pytest.raises(CubeShapeError):
        anderson(cosine, torch.zeros(2, 3, 4))
