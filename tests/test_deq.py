"""The DEQ wrapper: packing of tuple states, subset evaluation, and the phantom gradient against the implicit one."""

from __future__ import annotations

import torch

from hsidenoise.model.deq import DEQ
from hsidenoise.model.solver import SolverConfig, anderson, fixed_point_iteration

torch.set_num_threads(1)


class TanhLayer(torch.nn.Module):
    """f(z, x) = tanh(W z + U x + c), a contraction in z (||W|| = radius < 1)."""

    def __init__(self, dim: int, seed: int, radius: float = 0.6) -> None:
        super().__init__()
        self.radius = radius
        generator = torch.Generator().manual_seed(seed)
        w = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        self.w = torch.nn.Parameter(self.radius * w / torch.linalg.matrix_norm(w, 2))
        self.u = torch.nn.Parameter(torch.randn(dim, dim, generator=generator, dtype=torch.float64) / dim**0.5)
        self.c = torch.nn.Parameter(0.1 * torch.randn(dim, generator=generator, dtype=torch.float64))

    def forward(self, state: tuple[torch.Tensor, ...], injection: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        (z,), (x,) = state, injection
        return (torch.tanh(z @ self.w.T + x @ self.u.T + self.c),)


def implicit_gradient(layer: TanhLayer, z_star: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """dL/dtheta for L = <g, z*> by implicit differentiation: v = (I - J^T)^-1 g, then v^T df/dtheta (eq. 17)."""
    grads = []
    z_star = z_star.detach()
    for i in range(z_star.shape[0]):
        x_i = x[i : i + 1]
        jacobian = torch.autograd.functional.jacobian(lambda z, x_i=x_i: layer((z[None],), (x_i,))[0][0], z_star[i])
        v = torch.linalg.solve(torch.eye(len(g[i]), dtype=g.dtype) - jacobian.T, g[i])
        image = layer((z_star[i : i + 1],), (x_i,))[0][0]
        grads.append(torch.autograd.grad(image, list(layer.parameters()), grad_outputs=v))
    return [sum(parts) for parts in zip(*grads)]


def cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    a_flat, b_flat = torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b])
    return float(a_flat @ b_flat / (a_flat.norm() * b_flat.norm()))


def test_phantom_gradient_agrees_with_the_implicit_gradient():
    layer = TanhLayer(dim=6, seed=1, radius=0.95)
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    similarity = {}
    for steps in (1, 5):
        deq = DEQ(SolverConfig(max_iter=200, tol=1e-12, phantom_steps=steps, phantom_damping=0.9))
        (z,), _ = deq(layer, (torch.zeros(3, 6, dtype=torch.float64),), (x,))
        phantom = torch.autograd.grad((g * z).sum(), list(layer.parameters()))
        similarity[steps] = cosine(list(phantom), implicit_gradient(layer, z, x, g))
    assert similarity[5] > 0.999
    assert similarity[5] > similarity[1]  # more Neumann terms (eq. 19), closer to the implicit gradient


def test_tuple_states_are_packed_and_unpacked_with_their_shapes():
    def layer(state, injection):
        a, b = state
        (x,) = injection
        return 0.5 * a + x[:, :1, None], 0.5 * b - x.sum(dim=1)[:, None, None, None]

    x = torch.randn(2, 3)
    z0 = (torch.zeros(2, 4, 5), torch.zeros(2, 3, 2, 2))
    (a, b), stats = DEQ(SolverConfig(max_iter=60, tol=1e-7, phantom_steps=0))(layer, z0, (x,))
    assert a.shape == (2, 4, 5) and b.shape == (2, 3, 2, 2)
    torch.testing.assert_close(a, (2 * x[:, :1, None]).expand(2, 4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(b, (-2 * x.sum(dim=1))[:, None, None, None].expand(2, 3, 2, 2), atol=1e-5, rtol=0)
    assert bool(stats.converged.all())


def test_the_layer_sees_only_the_injection_of_active_samples():
    seen: list[int] = []

    def layer(state, injection):
        (z,), (x,) = state, injection
        seen.append(x.shape[0])
        assert z.shape[0] == x.shape[0]
        return (0.5 * z + x,)

    x = torch.tensor([[0.0], [1.0]])
    z0 = (torch.tensor([[0.0], [0.0]]),)  # sample 0 starts at its fixed point 0
    DEQ(SolverConfig(max_iter=20, tol=1e-6, phantom_steps=0))(layer, z0, (x,))
    assert seen[0] == 2 and set(seen[1:]) == {1}


def test_phantom_steps_at_evaluation_follow_the_setting():
    layer = TanhLayer(dim=4, seed=3)
    x = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    z0 = (torch.zeros(2, 4, dtype=torch.float64),)
    config = SolverConfig(max_iter=3, phantom_steps=2)

    def flat(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return layer((z,), (x[index],))[0]

    with torch.no_grad():
        (kept,), stats_kept = DEQ(config)(layer, z0, (x,))
        (skipped,), stats_skipped = DEQ(config, phantom_at_eval=False)(layer, z0, (x,))
        (plain,), _ = DEQ(config, solver=fixed_point_iteration, phantom_at_eval=False)(layer, z0, (x,))
        z_star, _ = anderson(flat, z0[0], config)
        z_plain, _ = fixed_point_iteration(flat, z0[0], config)
        damped = z_star
        for _ in range(2):
            damped = 0.1 * damped + 0.9 * flat(damped, torch.arange(2))
    assert stats_kept.extra_evaluations == 2 and stats_skipped.extra_evaluations == 0
    assert not kept.requires_grad
    torch.testing.assert_close(skipped, z_star)
    torch.testing.assert_close(kept, damped)
    torch.testing.assert_close(plain, z_plain)
