"""Deep-equilibrium wrapper: solve the fixed point without gradient, then differentiate a few damped steps.

Forward (Fig. 1 of the DECSC paper): the equilibrium z* = f(z*, injection) (eq. 14) is found by a solver from
:mod:`hsidenoise.model.solver` under ``torch.no_grad``. Backward: the phantom gradient (eqs. 18-19), i.e. L damped
steps z <- (1 - lambda) z + lambda f(z, injection) from z*, tracked by autograd; their gradient is an L-term
truncation of the implicit gradient (I - df/dz)^-1 df/dtheta.

The wrapper knows nothing about the model: the state is a tuple of tensors with the batch first, which it
packs into one flat (N, D) state for the solver, and the injection is a tuple of tensors with the batch first,
which it slices when the solver evaluates f on a subset of samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from hsidenoise.model.solver import SolverConfig, SolverStats, anderson

State = tuple[Tensor, ...]
Layer = Callable[[State, State], State]
"""``f(state, injection) -> state``: every tensor has the batch first, the output has the state's shapes."""

Solver = Callable[..., tuple[Tensor, SolverStats]]


@dataclass(frozen=True)
class _Packing:
    """The per-sample shapes of a tuple state and how to flatten it to (N, D) and back."""

    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, state: Sequence[Tensor]) -> _Packing:
        return cls(tuple(t.shape[1:] for t in state))

    def pack(self, state: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.reshape(t.shape[0], -1) for t in state], dim=1)

    def unpack(self, flat: Tensor) -> State:
        sizes = [s.numel() for s in self.shapes]
        parts = torch.split(flat, sizes, dim=1)
        return tuple(p.reshape(flat.shape[0], *s) for p, s in zip(parts, self.shapes))


class DEQ:
    """Equilibrium of a layer f, solved without gradient, differentiated by the phantom gradient.

    Args:
        config: the solver and phantom-gradient knobs.
        solver: ``solver(f, z0, config) -> (z*, stats)`` on flat states, :func:`hsidenoise.model.solver.anderson`
            by default.
        phantom_at_eval: also run the ``phantom_steps`` damped steps when gradients are off (inference), so
            that inference sees exactly the map that training optimised (the authors do this too).

    Example:
        >>> deq = DEQ(SolverConfig(max_iter=30))
        >>> (z,), stats = deq(lambda s, inj: (torch.cos(s[0]) + inj[0],), (torch.zeros(2, 3),), (torch.zeros(2, 3),))
    """

    def __init__(self, config: SolverConfig, *, solver: Solver = anderson, phantom_at_eval: bool = True) -> None:
        self.config = config
        self.solver = solver
        self.phantom_at_eval = phantom_at_eval

    def __call__(self, f: Layer, z0: Sequence[Tensor], injection: Sequence[Tensor]) -> tuple[State, SolverStats]:
        """Solve z* = f(z*, injection) from z0, then take the phantom-gradient steps.

        Args:
            f: the layer, ``f(state, injection) -> state``.
            z0: the initial state, a tuple of (N, ...) tensors (no gradient is taken through it).
            injection: the layer's input, a tuple of (N, ...) tensors, fixed during the solve.

        Returns:
            The equilibrium state (tensors shaped like ``z0``; with gradient when grad mode is on) and the
            solver's statistics, whose ``extra_evaluations`` counts the phantom steps.
        """
        packing = _Packing.of(z0)
        injection = tuple(injection)
        batch = z0[0].shape[0]

        def flat_f(z: Tensor, index: Tensor) -> Tensor:
            subset = injection if index.numel() == batch else tuple(t[index] for t in injection)
            return packing.pack(f(packing.unpack(z), subset)).to(z.dtype)  # autocast may return lower precision

        with torch.no_grad():
            z_star, stats = self.solver(flat_f, packing.pack(z0).detach(), self.config)
        steps = self.config.phantom_steps if (torch.is_grad_enabled() or self.phantom_at_eval) else 0
        state = packing.unpack(z_star)
        damping = self.config.phantom_damping
        for _ in range(steps):  # eq. (19): the L-step unrolled (phantom) gradient
            image = f(state, injection)
            state = tuple((1 - damping) * s + damping * fs for s, fs in zip(state, image))
        return state, replace(stats, extra_evaluations=stats.extra_evaluations + steps)
