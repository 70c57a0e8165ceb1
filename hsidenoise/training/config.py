"""What a training run needs: :class:`TrainConfig` and its defaults, in a module of their own.

:mod:`~hsidenoise.training.loop` runs it; :mod:`~hsidenoise.training.checkpoints` and
:mod:`~hsidenoise.training.card` record it. Keeping the type here means none of them imports another for a type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hsidenoise.errors import ConfigError
from hsidenoise.training.data import SamplerConfig

if TYPE_CHECKING:
    from hsidenoise.model import DECSCConfig

DEFAULT_LR = 1e-4
"""Adam's learning rate for :func:`fit` (the paper's)."""
FINETUNE_LR = 2e-5
"""Adam's learning rate for :func:`finetune`: small steps away from weights that already work."""
LR_DECAY = 0.5
"""Factor applied to the learning rate every ``lr_step_epochs`` epochs (the paper halves it)."""
LOSSES: tuple[str, ...] = ("mse", "logmse", "mpsnr")
"""``mse``: mean squared error over the batch (subspace models: of the whitened eigen-images). ``logmse``
(band-window models): mean over examples of log(MSE_n), i.e. -PSNR up to constants, so that easy (low-noise)
and hard (mixture) examples weigh the same. ``mpsnr``: minus the per-band PSNR averaged over bands and examples,
the users' metric (subspace models: of the eigen-images mapped back to data units as the pipeline does); see
:mod:`hsidenoise.training.losses`."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs.

    Attributes:
        model: a preset name of :data:`hsidenoise.model.PRESETS` or a :class:`DECSCConfig` (ignored by
            :func:`finetune`, which takes the architecture from the weights).
        data: cube files or directories of cubes (any format, any band count, searched recursively).
        validation: cube files to score on after each epoch; never trained on, even when under ``data``.
        out_dir: where ``checkpoint.pt``, the weights and the card go.
        sampler: crops, noise mix and examples per front-end run.
        batch_size: examples per optimizer step (per process under torchrun).
        lr: Adam's initial learning rate; None is :data:`DEFAULT_LR` for fit, :data:`FINETUNE_LR` for finetune.
        lr_step_epochs: the learning rate is multiplied by :data:`LR_DECAY` every this many epochs.
        epochs: epochs to run; None runs until ``time_budget_s``.
        time_budget_s: stop (checkpoint and weights written) once this much training time has passed,
            counted across resumes; None for no limit.
        steps_per_epoch: optimizer steps per epoch (validation runs between epochs).
        seed: seeds the model initialisation, the sampler and torch's random state.
        checkpoint_every_s: seconds between checkpoints (one is always written at the end).
        loss: one of :data:`LOSSES`.
        validation_crop: side of the central crop of each validation cube that is scored (keeps it cheap); 0: the
            whole cube (the front end then fits the whole cube, as ``run`` does).
    """

    model: str | DECSCConfig = "subspace"
    data: tuple[Path, ...] = ()
    validation: tuple[Path, ...] = ()
    out_dir: Path = Path("runs/decsc")
    sampler: SamplerConfig = SamplerConfig()
    batch_size: int = 8
    lr: float | None = None
    lr_step_epochs: int = 10
    epochs: int | None = 30
    time_budget_s: float | None = None
    steps_per_epoch: int = 250
    seed: int = 0
    checkpoint_every_s: float = 300.0
    loss: Literal["mse", "logmse", "mpsnr"] = "mse"
    validation_crop: int = 96

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("TrainConfig.data is empty; pass at least one cube file or directory (--data DIR)")
        for name in ("batch_size", "lr_step_epochs", "steps_per_epoch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be at least 1; got {getattr(self, name)}")
        if self.validation_crop < 0:
            raise ConfigError(f"TrainConfig.validation_crop must be >= 0 (0: whole cubes); got {self.validation_crop}")
        if self.epochs is None and self.time_budget_s is None:
            raise ConfigError("give epochs or a time budget (--epochs N or --time-budget SECONDS); got neither")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"TrainConfig.epochs must be at least 1 (or None with a time budget); got {self.epochs}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"time_budget_s must be positive; got {self.time_budget_s}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number; got {self.lr}")
        if not self.checkpoint_every_s >= 0:
            raise ConfigError(f"checkpoint_every_s must be >= 0; got {self.checkpoint_every_s}")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
