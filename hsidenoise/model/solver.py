"""Fixed-point solvers for deep-equilibrium models: Anderson acceleration and plain iteration.

Pure functions on a batch of flattened states ``z`` of shape (N, D); they know nothing about spectra or
about the network behind ``f``. Convergence is judged per sample with the relative residual

    r(z) = ||f(z) - z|| / (1e-5 + ||f(z)||),

a sample whose residual falls below ``tol`` is frozen (its state no longer changes and ``f`` is no longer
evaluated on it), and each sample gets back its best iterate (the one with the lowest residual), as in the
DEQ reference solver (Bai et al.) that DECSC's authors use. Anderson's update is eq. (15)-(16) of the
DECSC paper.

``f`` is called as ``f(z, index)``: ``z`` (n, D) holds the states of the still-active samples and
``index`` (n,) int64 their positions in the batch, so that ``f`` can slice its own per-sample inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import torch
from torch import Tensor

from hsidenoise.errors import ConfigError, CubeShapeError

Function = Callable[[Tensor, Tensor], Tensor]
"""``f(z, index) -> f(z)``: z (n, D), index (n,) int64 positions in the batch; returns (n, D)."""


@dataclass(frozen=True)
class SolverConfig:
    """Every knob of the equilibrium solve and of the phantom gradient (the only place their defaults live).

    Attributes:
        max_iter: most evaluations of f per sample in the solve (the authors' threshold 20).
        tol: stop a sample once its relative residual is below this.
        memory: Anderson's history length m (eq. 16).
        regulariser: Tikhonov term added to the Gram matrix of past residuals, relative to its mean diagonal.
        beta: Anderson's mixing parameter (eq. 15); 1 uses only the f-values.
        phantom_steps: L damped steps z <- (1 - damping) z + damping f(z) that carry the gradient (eq. 19).
        phantom_damping: the damping lambda of those steps.
        per_sample: freeze each sample as soon as it converges (True); False keeps iterating every sample
            until all of them have converged, the batch-wide stopping of the authors' code (slower, kept for
            the naive path of ``bench/speed.py`` and for the test that both agree).
    """

    max_iter: int = 20
    tol: float = 1e-3
    memory: int = 6
    regulariser: float = 1e-4
    beta: float = 1.0
    phantom_steps: int = 5
    phantom_damping: float = 0.9
    per_sample: bool = True

    def __post_init__(self) -> None:
        if self.max_iter < 1 or self.memory < 1 or self.phantom_steps < 0:
            raise ConfigError(
                f"solver needs max_iter >= 1, memory >= 1 and phantom_steps >= 0; got max_iter={self.max_iter}, "
                f"memory={self.memory}, phantom_steps={self.phantom_steps}"
            )
        if not (self.tol > 0 and self.regulariser >= 0 and self.beta > 0 and 0 < self.phantom_damping <= 1):
            raise ConfigError(
                f"solver needs tol > 0, regulariser >= 0, beta > 0 and 0 < phantom_damping <= 1; got tol={self.tol}, "
                f"regulariser={self.regulariser}, beta={self.beta}, phantom_damping={self.phantom_damping}"
            )


@dataclass(frozen=True)
class SolverStats:
    """What a solve did, per sample.

    Attributes:
        evaluations: (N,) int64, evaluations of f each sample received in the solve.
        residual: (N,) float, relative residual of the returned (best) iterate.
        trace: (T, N) float, relative residual after each evaluation; NaN once a sample is frozen.
        calls: how many times f was called (each call on the active subset of the batch).
        tol: the tolerance the solve used.
        extra_evaluations: evaluations of f per sample outside the solve (initial point, phantom steps).
    """

    evaluations: Tensor
    residual: Tensor
    trace: Tensor
    calls: int
    tol: float
    extra_evaluations: int = 0

    @property
    def converged(self) -> Tensor:
        """(N,) bool: samples whose returned iterate meets the tolerance."""
        return self.residual < self.tol

    @property
    def total_evaluations(self) -> int:
        """Evaluations of f summed over samples, including those outside the solve."""
        return int(self.evaluations.sum()) + self.extra_evaluations * int(self.evaluations.numel())

    def grouped(self, size: int) -> SolverStats:
        """Merge consecutive groups of ``size`` samples (e.g. the shifted copies of one tile) into one.

        Each group reports its worst member: the most evaluations and the largest residual.
        """
        n = self.evaluations.numel() // size
        trace = torch.nan_to_num(self.trace, nan=-1.0).view(-1, n, size).amax(dim=2)
        return replace(
            self,
            evaluations=self.evaluations.view(n, size).amax(dim=1),
            residual=self.residual.view(n, size).amax(dim=1),
            trace=trace.masked_fill(trace < 0, float("nan")),
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-serialisable summary: per-sample lists and the totals."""
        return {
            "evaluations": self.evaluations.tolist(),
            "extra_evaluations": self.extra_evaluations,
            "residual": [float(r) for r in self.residual],
            "converged": self.converged.tolist(),
            "calls": self.calls,
            "tol": self.tol,
        }


class _Tracker:
    """Per-sample bookkeeping shared by the solvers: residuals, best iterates, the active set."""

    def __init__(self, z0: Tensor, config: SolverConfig) -> None:
        n = z0.shape[0]
        self.tol = config.tol
        self.per_sample = config.per_sample
        self.best = z0.clone()
        self.best_residual = torch.full((n,), float("inf"), dtype=z0.dtype, device=z0.device)
        self.evaluations = torch.zeros(n, dtype=torch.int64, device=z0.device)
        self.trace = torch.full((config.max_iter, n), float("nan"), dtype=z0.dtype, device=z0.device)
        self.active = torch.arange(n, device=z0.device)
        self.calls = 0
        self.step = 0

    def evaluate(self, f: Function, x: Tensor) -> Tensor:
        """f on the active samples' states x (n, D); records residuals, best iterates and freezes converged ones."""
        fx = f(x, self.active)
        self.calls += 1
        index = self.active
        residual = (fx - x).norm(dim=1) / (1e-5 + fx.norm(dim=1))
        self.trace[self.step, index] = residual
        self.step += 1
        self.evaluations[index] += 1
        improved = residual < self.best_residual[index]
        self.best[index[improved]] = x[improved]
        self.best_residual[index] = torch.where(improved, residual, self.best_residual[index])
        self.keep = ~(residual < self.tol)
        if not self.per_sample and bool(self.keep.any()):
            self.keep = torch.ones_like(self.keep)
        self.active = index[self.keep]
        return fx

    def stats(self) -> SolverStats:
        return SolverStats(
            evaluations=self.evaluations,
            residual=self.best_residual,
            trace=self.trace[: self.step],
            calls=self.calls,
            tol=self.tol,
        )


def _check_state(z0: Tensor) -> None:
    if z0.dim() != 2 or not z0.is_floating_point():
        raise CubeShapeError(
            f"solver states must be a float tensor of shape (N, D); got {tuple(z0.shape)} {z0.dtype}; "
            "flatten them first"
        )


@torch.no_grad()
def fixed_point_iteration(f: Function, z0: Tensor, config: SolverConfig = SolverConfig()) -> tuple[Tensor, SolverStats]:
    """Plain iteration z <- f(z), per sample, for comparison with :func:`anderson`.

    Args:
        f: ``f(z, index)``, see the module docstring.
        z0: (N, D) initial states.
        config: uses ``max_iter`` and ``tol``.

    Returns:
        (N, D) best iterate of each sample and the solve's :class:`SolverStats`.
    """
    _check_state(z0)
    tracker = _Tracker(z0, config)
    x = z0
    for _ in range(config.max_iter):
        fx = tracker.evaluate(f, x)
        x = fx[tracker.keep]
        if tracker.active.numel() == 0:
            break
    return tracker.best, tracker.stats()


@torch.no_grad()
def anderson(f: Function, z0: Tensor, config: SolverConfig = SolverConfig()) -> tuple[Tensor, SolverStats]:
    """Anderson acceleration (eqs. 15-16) of the fixed point z = f(z), per sample.

    The first step is a plain fixed-point step; then each new iterate mixes the last ``memory`` iterates
    with weights gamma minimising ||G gamma|| subject to sum(gamma) = 1 (G: the past residuals f(x) - x),
    regularised by ``regulariser``. Samples are independent: each has its own history and Gram system,
    and a converged sample is frozen and dropped from later calls of f.

    Args:
        f: ``f(z, index)``, see the module docstring.
        z0: (N, D) initial states.
        config: ``max_iter``, ``tol``, ``memory``, ``regulariser``, ``beta``.

    Returns:
        (N, D) best iterate of each sample and the solve's :class:`SolverStats`.

    Example:
        >>> z, stats = anderson(lambda z, index: torch.cos(z), torch.zeros(1, 1), SolverConfig(tol=1e-6))
        >>> round(float(z), 4), bool(stats.converged)
        (0.7391, True)
    """
    _check_state(z0)
    n, d = z0.shape
    m = config.memory
    tracker = _Tracker(z0, config)
    # Ring buffers of past iterates x and their images f(x), (N, m, D); frozen samples keep stale rows.
    xs = z0.new_zeros(n, m, d)
    fs = z0.new_zeros(n, m, d)
    xs[:, 0] = z0
    fs[:, 0] = tracker.evaluate(f, z0)
    for k in range(1, config.max_iter):
        index = tracker.active
        if index.numel() == 0:
            break
        full = index.numel() == n
        if k == 1:
            x = fs[index, 0]
        else:
            count = min(k, m)
            past_x = xs[:, :count] if full else xs[index, :count]
            past_f = fs[:, :count] if full else fs[index, :count]
            gamma = _anderson_weights(past_f - past_x, config.regulariser)  # eq. (16)
            mixed_f = torch.bmm(gamma.unsqueeze(1), past_f).squeeze(1)
            x = (
                mixed_f
                if config.beta == 1.0
                else (config.beta * mixed_f + (1 - config.beta) * torch.bmm(gamma.unsqueeze(1), past_x).squeeze(1))
            )  # eq. (15)
        slot = k % m
        fx = tracker.evaluate(f, x)
        if full:
            xs[:, slot], fs[:, slot] = x, fx
        else:
            xs[index, slot], fs[index, slot] = x, fx
    return tracker.best, tracker.stats()


def _anderson_weights(residuals: Tensor, regulariser: float) -> Tensor:
    """gamma = argmin ||G gamma||^2 s.t. sum(gamma) = 1 for each sample (eq. 16), via the bordered system.

    Args:
        residuals: (n, count, D) past residuals G of each sample.
        regulariser: added to the diagonal of G G^T, relative to its mean diagonal.

    Returns:
        (n, count) weights, in the dtype of ``residuals``.
    """
    n, count, _ = residuals.shape
    gram = torch.bmm(residuals, residuals.transpose(1, 2)).double()
    system = residuals.new_zeros(n, count + 1, count + 1, dtype=torch.float64)
    system[:, 0, 1:] = 1
    system[:, 1:, 0] = 1
    # Relative Tikhonov term: scaled by the mean squared residual, so the weights do not depend on the units of
    # the state (the reference solver adds it absolutely, which swamps small residuals).
    scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    system[:, 1:, 1:] = gram + (regulariser * scale)[:, None, None] * torch.eye(
        count, dtype=torch.float64, device=residuals.device
    )
    rhs = residuals.new_zeros(n, count + 1, 1, dtype=torch.float64)
    rhs[:, 0] = 1
    return torch.linalg.solve(system, rhs)[:, 1:, 0].to(residuals.dtype)


ConfigT = TypeVar("ConfigT")


def config_with_solver(cls: type[ConfigT], data: dict[str, Any], label: str) -> ConfigT:
    """A model config dataclass ``cls`` from its ``to_dict`` form, the nested ``solver`` dict as a :class:`SolverConfig`.

    Raises:
        ConfigError: a key (or a ``solver.`` key) that ``cls`` (or :class:`SolverConfig`) does not have.
    """
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    solver_names = {f.name for f in fields(SolverConfig)}
    unknown = sorted(set(data) - names) + sorted(f"solver.{k}" for k in set(data.get("solver", {})) - solver_names)
    if unknown:
        raise ConfigError(f"unknown {label} config keys {unknown}; expected a subset of {sorted(names)}")
    values = dict(data)
    if "solver" in values:
        values["solver"] = SolverConfig(**values["solver"])
    return cls(**values)
