"""Self-supervised adaptation of the subspace DECSC to a noisy cube: SURE in whitened units, no clean data.

After whitening, every eigen-image carries white noise of variance at most 1 (measured 0.54 to 1.0 in std per
component on non-i.i.d. noise, DESIGN.md "The noise each eigen-image carries"); SURE below assumes 1, which
overstates the risk of the components that carry less: a known bias, not a noise estimate. For a denoiser f of the eigen-images z (N elements),

    SURE(f, z) = ||f(z) - z||^2 / N - 1 + 2 div f(z) / N,

whose expectation over the noise is the mean squared error of f(z) against the clean eigen-images. The
divergence is estimated by Monte Carlo (Ramani et al. 2008): div f(z) ~ b . (f(z + eps b) - f(z)) / eps with a
fresh Rademacher probe b. Here f is the whole eigen-image denoiser, pilot included: f(z) = model(z, P(z)),
and the perturbed input gets its own pilot P(z + eps b).

:func:`adapt` fine-tunes a copy of the model on crops of the cube itself for a bounded time, keeps a quarter
of the crops out, and returns the adapted weights only if their held-out SURE is lower than the original
weights' (same probes), so that adapting can never make the estimated error worse.

Shapes: crops are (k, h, w) eigen-images with their pilots; eigenvalues (k,).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hsidenoise.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    """Settings of one adaptation.

    Attributes:
        seconds: time budget of the optimisation (0 disables adaptation).
        lr: Adam's learning rate.
        batch_size: crops per step.
        holdout_fraction: share of the crops kept out to judge the result.
        epsilon: the Monte-Carlo divergence step, in unit-noise units.
        max_steps: an upper bound on the steps whatever the time (None: the time alone).
        seed: probes, crop order and augmentation.
    """

    seconds: float = 60.0
    lr: float = 1e-4
    batch_size: int = 4
    holdout_fraction: float = 0.25
    epsilon: float = 1e-2
    max_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ConfigError(f"adaptation time must be >= 0 seconds; got {self.seconds}")
        if not (self.lr > 0 and self.epsilon > 0 and self.batch_size >= 1):
            raise ConfigError(f"adaptation needs lr > 0, epsilon > 0, batch_size >= 1; got {self}")
        if not 0 < self.holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction must be in (0, 1); got {self.holdout_fraction}")


@dataclass(frozen=True)
class AdaptResult:
    """What an adaptation did, for the run report.

    Attributes:
        kept: whether the adapted weights are used (their held-out SURE was lower).
        steps: optimiser steps taken.
        seconds: wall time spent (optimisation and checks).
        holdout_before, holdout_after: held-out SURE (MSE per eigen-image element, unit-noise units) of the
            original and the adapted weights; None when nothing ran.
        reason: one line for the report.
    """

    kept: bool
    steps: int
    seconds: float
    holdout_before: float | None
    holdout_after: float | None
    reason: str


@dataclass(frozen=True, eq=False)
class EigenCrop:
    """One crop of the cube in the whitened subspace: eigen (k, h, w), pilot (k, h, w)."""

    eigen: np.ndarray
    pilot: np.ndarray


PilotFunction = Callable[[np.ndarray], np.ndarray]
"""(k, h, w) noisy eigen-images -> (k, h, w) their front-end estimate."""


def sure(model, crop: EigenCrop, eigenvalues, pilot_of: PilotFunction, probe: np.ndarray, epsilon: float):
    """Monte-Carlo SURE of ``model`` on one crop (a scalar tensor, differentiable in the model's parameters).

    Args:
        model: a :class:`hsidenoise.model.subspace_decsc.SubspaceDECSC`.
        crop: the noisy eigen-images and their pilot.
        eigenvalues: (1, k) tensor.
        pilot_of: the front end's eigen-image denoiser (for the perturbed input's pilot).
        probe: (k, h, w) Rademacher probe b.
        epsilon: the divergence step.
    """
    import torch

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]

    perturbed = crop.eigen + epsilon * probe
    z = tensor(crop.eigen)
    output, _ = model(z, tensor(crop.pilot), eigenvalues)
    moved, _ = model(tensor(perturbed), tensor(pilot_of(perturbed)), eigenvalues)
    count = z.numel()
    divergence = (tensor(probe) * (moved - output)).sum() / epsilon
    return (output - z).square().sum() / count - 1.0 + 2.0 * divergence / count


def sure_batch(network, eigen, pilot, eigenvalues, mask, pilot_of: PilotFunction, epsilon: float, rng: np.random.Generator):
    """Monte-Carlo SURE of a batch (the training loss of ``--self-supervised``), mean over real components.

    Args:
        network: the subspace DECSC (or its DDP wrapper).
        eigen, pilot: (N, k, h, w) tensors; eigenvalues, mask: (N, k).
        pilot_of: the front end's eigen-image denoiser, for the perturbed inputs' pilots.
        rng: draws the Rademacher probes.
    """
    import torch

    probe_np = rng.choice([-1.0, 1.0], size=tuple(eigen.shape)).astype(np.float32)
    probe = torch.from_numpy(probe_np).to(eigen.device) * mask[:, :, None, None]
    perturbed = eigen + epsilon * probe
    moved_pilot = np.stack([pilot_of(x.double().cpu().numpy()) for x in perturbed]).astype(np.float32)
    output, _ = network(eigen, pilot, eigenvalues, mask)
    moved, _ = network(perturbed, torch.from_numpy(moved_pilot).to(eigen.device), eigenvalues, mask)
    weights = mask[:, :, None, None]
    count = weights.sum() * eigen.shape[-1] * eigen.shape[-2]
    fidelity = ((output - eigen).square() * weights).sum() / count
    divergence = (probe * (moved - output)).sum() / (epsilon * count)
    return fidelity - 1.0 + 2.0 * divergence


def _holdout_sure(model, crops, eigenvalues, pilot_of, probes, epsilon) -> float:
    import torch

    with torch.no_grad():
        return float(np.mean([float(sure(model, c, eigenvalues, pilot_of, p, epsilon)) for c, p in zip(crops, probes)]))


def adapt(
    model,
    crops: Sequence[EigenCrop],
    eigenvalues: np.ndarray,
    pilot_of: PilotFunction,
    config: AdaptConfig,
    *,
    progress: Callable[[float, float], None] | None = None,
):
    """Fine-tune a copy of ``model`` on the cube's own crops by SURE; keep it only if the held-out SURE drops.

    Args:
        model: the subspace DECSC (left unchanged).
        crops: eigen-image crops of the cube (at least 2: one is held out).
        eigenvalues: (k,) the cube's eigenvalues.
        pilot_of: the front end's eigen-image denoiser.
        config: time budget and optimiser settings.
        progress: called with (seconds spent, seconds allowed) after every step.

    Returns:
        (the model to use: the adapted copy or ``model`` itself, :class:`AdaptResult`).
    """
    import torch

    started = time.perf_counter()
    if config.seconds == 0 or config.max_steps == 0:
        return model, AdaptResult(False, 0, 0.0, None, None, "adaptation off (0 seconds)")
    if len(crops) < 2:
        return model, AdaptResult(False, 0, 0.0, None, None, "the cube is too small to hold crops out")
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(crops))
    held = max(1, int(round(config.holdout_fraction * len(crops))))
    holdout = [crops[i] for i in order[:held]]
    training = [crops[i] for i in order[held:]]
    values = torch.from_numpy(np.asarray(eigenvalues, dtype=np.float32))[None]
    probes = [rng.choice([-1.0, 1.0], size=c.eigen.shape) for c in holdout]
    before = _holdout_sure(model.eval(), holdout, values, pilot_of, probes, config.epsilon)

    candidate = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(candidate.parameters(), lr=config.lr)
    steps = 0
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        while (steps == 0 or time.perf_counter() - started < config.seconds) and (
            config.max_steps is None or steps < config.max_steps
        ):  # at least one step, then until the time is spent
            batch = rng.choice(len(training), size=min(config.batch_size, len(training)), replace=False)
            loss = 0.0
            for index in batch:
                turns, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
                crop = _augment(training[index], turns, flip)
                probe = rng.choice([-1.0, 1.0], size=crop.eigen.shape)
                loss = loss + sure(candidate, crop, values, pilot_of, probe, config.epsilon) / len(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            optimizer.step()
            steps += 1
            if progress is not None:
                progress(min(time.perf_counter() - started, config.seconds), config.seconds)
    candidate.eval()
    after = _holdout_sure(candidate, holdout, values, pilot_of, probes, config.epsilon)
    seconds = time.perf_counter() - started
    if after < before:
        reason = f"adapted: held-out SURE {before:.4f} -> {after:.4f} in {steps} steps"
        return candidate, AdaptResult(True, steps, seconds, before, after, reason)
    reason = f"kept the original weights: adapting did not lower the held-out SURE ({before:.4f} -> {after:.4f})"
    logger.info(reason)
    return model, AdaptResult(False, steps, seconds, before, after, reason)


def _augment(crop: EigenCrop, turns: int, flip: bool) -> EigenCrop:
    def op(x: np.ndarray) -> np.ndarray:
        x = np.rot90(x, turns, axes=(1, 2))
        return np.ascontiguousarray(x[:, :, ::-1] if flip else x)

    return EigenCrop(op(crop.eigen), op(crop.pilot))
