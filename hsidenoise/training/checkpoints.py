"""Checkpoints of a training run: everything a bit-exact resume needs, written atomically by rank 0.

A checkpoint (model, optimizer, scheduler, sampler and torch random states of every rank, position, elapsed time)
goes to ``out_dir/checkpoint.pt`` every ``checkpoint_every_s`` seconds and at the end; ``resume=True`` continues
from it exactly: N steps in one go and N/2 + N/2 with a restart in between give bit-identical weights. A resume
with other settings or data (:func:`run_identity`) is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsidenoise.errors import CheckpointError
from hsidenoise.training.validation import ValidationScore

if TYPE_CHECKING:
    import torch

    from hsidenoise.training.data import PatchSampler, TrainingSet
    from hsidenoise.model import DECSC, DECSCConfig
    from hsidenoise.training.config import TrainConfig
    from hsidenoise.training.processes import Processes

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class Position:
    """Where the loop is, for checkpoints: epochs done, steps done in the current epoch, steps in total."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    history: list[ValidationScore] = field(default_factory=list)



UNRECORDED_BEFORE = ("loss",)
"""Identity keys that older checkpoints lack; such a checkpoint is not checked on them (its card says which loss
it trained with)."""


def run_identity(
    cfg: TrainConfig, model_config: DECSCConfig, training: TrainingSet, processes: Processes
) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume."""
    return {
        "model_config": repr(model_config),
        "data": [cube.name for cube in training.cubes],
        "world_size": processes.world_size,
        "batch_size": cfg.batch_size,
        "sampler": repr(cfg.sampler),
        "seed": cfg.seed,
        "loss": cfg.loss,
    }


@dataclass
class Checkpoint:
    """Saves and restores everything a bit-exact resume needs, at ``path`` (written by rank 0 only)."""

    path: Path
    identity: dict[str, Any]
    processes: Processes
    model: DECSC
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: PatchSampler

    def save(self, position: Position, elapsed_s: float, from_weights: Path | None) -> None:
        """Gather every rank's random state and write the checkpoint atomically (temporary file, fsync, rename)."""
        import torch

        random_states = self.processes.gather(
            {
                "sampler": self.sampler.state_dict(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            }
        )
        if not self.processes.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "identity": self.identity,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "random": random_states,
            "epoch": position.epoch,
            "step_in_epoch": position.step_in_epoch,
            "step": position.step,
            "elapsed_s": elapsed_s,
            "history": [dataclasses.asdict(score) for score in position.history],
            "from_weights": None if from_weights is None else str(from_weights),
        }
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            torch.save(state, temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)

    def restore(self, position: Position, device: torch.device) -> float:
        """Load the checkpoint into the run's objects and ``position``; returns the training time already spent.

        Raises:
            CheckpointError: no checkpoint, an unreadable one, or one from a run with other settings or data.
        """
        import torch

        if not self.path.is_file():
            raise CheckpointError(
                f"resume found no checkpoint at {self.path}; start without --resume or point --out at the run"
            )
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as error:
            raise CheckpointError(f"checkpoint {self.path} cannot be read ({error}); start a fresh run") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint {self.path} has format {state.get('format')}, expected {CHECKPOINT_FORMAT}; "
                "start a fresh run"
            )
        saved = state["identity"]
        changed = [
            key
            for key, value in self.identity.items()
            if saved.get(key) != value and not (key in UNRECORDED_BEFORE and key not in saved)
        ]
        if changed:
            raise CheckpointError(
                f"checkpoint {self.path} was written by a run with different {', '.join(changed)}; resume with the "
                "same settings and data, or start a fresh run in another --out"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        mine = state["random"][self.processes.rank]
        self.sampler.load_state_dict(mine["sampler"])
        torch.set_rng_state(mine["torch"])
        if mine["cuda"] is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(mine["cuda"])
        position.epoch = int(state["epoch"])
        position.step_in_epoch = int(state["step_in_epoch"])
        position.step = int(state["step"])
        position.history = [ValidationScore(**score_fields(score)) for score in state["history"]]
        logger.info("resumed %s at epoch %d, step %d", self.path, position.epoch, position.step)
        return float(state["elapsed_s"])


def score_fields(score: dict[str, Any]) -> dict[str, Any]:
    return {**score, "per_case": {name: tuple(values) for name, values in score["per_case"].items()}}

