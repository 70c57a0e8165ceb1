"""The training loop: :func:`fit` and :func:`finetune`, behind ``hsidenoise train`` and ``hsidenoise finetune``.

One loop serves both (:func:`fit` from a fresh model, :func:`finetune` from saved weights at a lower learning
rate) and both model families: what differs per family (the sampler, the loss, the validation, the parameter
groups) comes from its :class:`~hsidenoise.training.families.Family`, so the loop has no branch on it. Per step:
a batch from the family's sampler, its loss, Adam, and the learning rate halved every ``lr_step_epochs`` epochs
(the paper's schedule). bf16 autocast on CUDA only.

Each step runs through :mod:`~hsidenoise.training.processes` (data-parallel under ``torchrun``); after every
epoch the model is scored (:mod:`~hsidenoise.training.validation`), checkpoints are written on a timer
(:mod:`~hsidenoise.training.checkpoints`), and the final weights with their card at the end
(:mod:`~hsidenoise.training.card`).

The library never prints: progress goes to the ``progress`` callback as :class:`TrainProgress` events.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hsidenoise.device import autocast
from hsidenoise.errors import ConfigError
from hsidenoise.training.card import model_card, write_weights
from hsidenoise.training.checkpoints import CHECKPOINT_NAME, Checkpoint, Position, run_identity
from hsidenoise.training.config import DEFAULT_LR, FINETUNE_LR, LR_DECAY, TrainConfig
from hsidenoise.training.data import load_training_set, make_rng
from hsidenoise.training.families import family_of
from hsidenoise.training.processes import Processes
from hsidenoise.training.validation import ValidationScore

if TYPE_CHECKING:
    from hsidenoise.model import DECSC

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainProgress:
    """One progress event for the caller (the CLI draws a bar from these).

    Attributes:
        event: ``"round"`` (noise + front end for a new round of examples is being made), ``"step"`` (an
            optimizer step finished), ``"epoch"`` (an epoch and its validation finished), ``"done"``.
        step: optimizer steps done, counted across resumes.
        total_steps: steps the run will make, or None when only a time budget bounds it.
        epoch: the epoch in progress, 1-based; for ``"epoch"`` and ``"done"`` the epochs finished.
        epochs: epochs the run will make, or None.
        loss: the last step's loss (None before the first).
        steps_per_s: optimizer steps per second since this process started.
        lr: the current learning rate.
        elapsed_s: training time so far, across resumes.
        validation: the latest validation score, or None.
    """

    event: Literal["round", "step", "epoch", "done"]
    step: int
    total_steps: int | None
    epoch: int
    epochs: int | None
    loss: float | None
    steps_per_s: float | None
    lr: float
    elapsed_s: float
    validation: ValidationScore | None


ProgressCallback = Callable[[TrainProgress], None]


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What a finished (or time-budgeted) run produced.

    Attributes:
        model: the trained model (unwrapped from DistributedDataParallel), in eval mode.
        weights: path of the written ``.safetensors`` file (None on ranks other than 0).
        checkpoint: path of ``checkpoint.pt``.
        steps: optimizer steps done in total.
        epochs: whole epochs done in total.
        wall_time_s: training time across resumes.
        validation: the last validation score (None without validation cubes).
        history: one validation score per finished epoch.
        card: the model card written next to the weights.
    """

    model: DECSC
    weights: Path | None
    checkpoint: Path
    steps: int
    epochs: int
    wall_time_s: float
    validation: ValidationScore | None
    history: tuple[ValidationScore, ...]
    card: dict[str, Any]



def is_best_epoch(score: ValidationScore, history: Sequence[ValidationScore]) -> bool:
    """Whether ``score`` gains more over its front end than every earlier epoch in ``history`` gained over theirs.

    The gain (model MPSNR minus the front end's, on the same validation cases) and not the MPSNR itself: a resume
    re-measures the front end, which may have changed (a new release) or be scored on other cases
    (``--validation-crop``), and only the gain stays comparable across that.
    """
    return score.mpsnr - score.init_mpsnr > max((s.mpsnr - s.init_mpsnr for s in history), default=-math.inf)

def fit(cfg: TrainConfig, *, progress: ProgressCallback | None = None, resume: bool = False) -> TrainResult:
    """Train a DECSC model from scratch on ``cfg.data``.

    Args:
        cfg: the run's settings.
        progress: called with a :class:`TrainProgress` at every step, round and epoch (rank 0 only).
        resume: continue from ``cfg.out_dir/checkpoint.pt`` exactly where it stopped.

    Returns:
        The trained model and where its weights, card and checkpoint were written.

    Raises:
        ConfigError: bad settings or no usable training cube.
        CheckpointError: ``resume`` without a checkpoint, or one written by a different run setup.
    """
    import torch

    from hsidenoise.model import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR
    return _run(cfg, model, lr=lr, from_weights=None, progress=progress, resume=resume)


def finetune(
    cfg: TrainConfig,
    from_weights: Path,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = False,
) -> TrainResult:
    """Continue training saved weights on new data (e.g. a user's own sensor) at a lower learning rate.

    The architecture comes from the weights' config; ``cfg.model`` is not used. Everything else is as in
    :func:`fit`, and the card records the weights it started from.

    Raises:
        CheckpointError: the weights are missing or do not match their config.
    """
    from hsidenoise.model import load_weights

    model, _, _ = load_weights(Path(from_weights))
    return _run(
        cfg,
        model,
        lr=cfg.lr if cfg.lr is not None else FINETUNE_LR,
        from_weights=Path(from_weights),
        progress=progress,
        resume=resume,
    )



@dataclass
class _Clock:
    """Training time across resumes, and this process's speed."""

    before_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    steps: int = 0

    def elapsed_s(self) -> float:
        return self.before_s + time.monotonic() - self.started

    def steps_per_s(self) -> float | None:
        seconds = time.monotonic() - self.started
        return self.steps / seconds if self.steps and seconds > 0 else None


def _run(
    cfg: TrainConfig,
    model: DECSC,
    *,
    lr: float,
    from_weights: Path | None,
    progress: ProgressCallback | None,
    resume: bool,
) -> TrainResult:
    processes = Processes.start()
    try:
        return _loop(cfg, model, processes, lr=lr, from_weights=from_weights, progress=progress, resume=resume)
    finally:
        processes.close()


def _loop(
    cfg: TrainConfig,
    model: DECSC,
    processes: Processes,
    *,
    lr: float,
    from_weights: Path | None,
    progress: ProgressCallback | None,
    resume: bool,
) -> TrainResult:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    device = processes.device()
    family = family_of(cfg, model)
    out_dir = Path(cfg.out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if not resume and checkpoint_path.exists():
        raise ConfigError(
            f"{out_dir} already holds a training run ({CHECKPOINT_NAME}); pass --resume to continue it, or choose "
            "another --out (delete the folder to start over)"
        )
    training = load_training_set(
        cfg.data, band_window=family.band_window, patch_size=cfg.sampler.patch_size, exclude=cfg.validation
    )
    if processes.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    cases = family.validation_cases() if processes.is_main and cfg.validation else []
    model.to(device).train()
    network: torch.nn.Module = model
    if processes.world_size > 1:
        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(family.parameter_groups(lr), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=LR_DECAY)
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, processes.rank, 1]).generate_state(1)[0]))

    position = Position()
    clock = _Clock()
    last_loss: float | None = None

    def report(event: str) -> None:
        if progress is None or not processes.is_main:
            return
        progress(
            TrainProgress(
                event=event,  # type: ignore[arg-type]
                step=position.step,
                total_steps=cfg.epochs * cfg.steps_per_epoch if cfg.epochs is not None else None,
                epoch=position.epoch if event in ("epoch", "done") else position.epoch + 1,
                epochs=cfg.epochs,
                loss=last_loss,
                steps_per_s=clock.steps_per_s(),
                lr=float(optimizer.param_groups[0]["lr"]),
                elapsed_s=clock.elapsed_s(),
                validation=position.history[-1] if position.history else None,
            )
        )

    sampler = family.sampler(training.cubes, make_rng(cfg.seed, processes.rank), lambda _: report("round"))
    checkpoint = Checkpoint(
        checkpoint_path, run_identity(cfg, model.config, training, processes), processes, model, optimizer,
        scheduler, sampler,
    )  # fmt: skip
    if resume:
        clock.before_s = checkpoint.restore(position, device)

    def out_of_time() -> bool:
        return cfg.time_budget_s is not None and clock.elapsed_s() >= cfg.time_budget_s

    last_save = time.monotonic()
    stop = processes.broadcast_flags([out_of_time()], device)[0]
    while not stop and (cfg.epochs is None or position.epoch < cfg.epochs):
        while position.step_in_epoch < cfg.steps_per_epoch:
            batch = sampler.next_batch(cfg.batch_size).to(device)
            with autocast(device):
                loss = family.loss(network, batch, (cfg.seed, processes.rank, position.step))  # resumable
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            position.step_in_epoch += 1
            position.step += 1
            clock.steps += 1
            last_loss = float(loss.detach())
            save_now, stop = processes.broadcast_flags(
                [time.monotonic() - last_save >= cfg.checkpoint_every_s, out_of_time()], device
            )
            if save_now and not stop:
                checkpoint.save(position, clock.elapsed_s(), from_weights)
                last_save = time.monotonic()
            report("step")
            if stop:
                break
        if position.step_in_epoch >= cfg.steps_per_epoch:
            position.epoch += 1
            position.step_in_epoch = 0
            with warnings.catch_warnings():  # after a resume at an epoch's end no optimizer step came first
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                scheduler.step()
            if cases:
                score = family.validate(cases, device)
                best = is_best_epoch(score, position.history)
                position.history.append(score)
                if processes.is_main and best:  # keep the best epoch's weights too
                    card = model_card(
                        cfg, training, position, clock.elapsed_s(), from_weights, lr, processes,
                        family.card_front_end,
                    )  # fmt: skip
                    write_weights(model, out_dir, from_weights, {**card, "best_of_run": True}, suffix="-best")
                    model.train()
            report("epoch")

    wall_time_s = clock.elapsed_s()
    checkpoint.save(position, wall_time_s, from_weights)
    model.eval()
    card = model_card(cfg, training, position, wall_time_s, from_weights, lr, processes, family.card_front_end)
    weights = write_weights(model, out_dir, from_weights, card) if processes.is_main else None
    report("done")
    return TrainResult(
        model=model,
        weights=weights,
        checkpoint=checkpoint_path,
        steps=position.step,
        epochs=position.epoch,
        wall_time_s=wall_time_s,
        validation=position.history[-1] if position.history else None,
        history=tuple(position.history),
        card=card,
    )
