"""The final weights of a training run and their JSON model card (data, noise, front end, schedule, scores)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsidenoise import __version__
from hsidenoise.training.data import format_noise_mix

if TYPE_CHECKING:
    from hsidenoise.training.data import TrainingSet
    from hsidenoise.model import DECSC
    from hsidenoise.subspace import LowRankConfig
    from hsidenoise.training.checkpoints import Position
    from hsidenoise.training.config import TrainConfig
    from hsidenoise.training.processes import Processes


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if completed.returncode != 0:
        return None
    return completed.stdout.strip() or None


def model_card(
    cfg: TrainConfig,
    training: TrainingSet,
    position: Position,
    wall_time_s: float,
    from_weights: Path | None,
    lr: float,
    processes: Processes,
    front_end: LowRankConfig | None,
) -> dict[str, Any]:
    last = position.history[-1] if position.history else None
    return {
        "trained_with": "finetune" if from_weights is not None else "train",
        "from_weights": None if from_weights is None else str(from_weights),
        "data": [
            {"file": cube.name, "path": str(cube.source), "bands_used": cube.bands, "shape": list(cube.data.shape)}
            for cube in training.cubes
        ],
        "skipped": [{"path": path, "reason": reason} for path, reason in training.skipped],
        "validation_cubes": [str(path) for path in cfg.validation],
        "validation_crop": cfg.validation_crop,
        "noise": format_noise_mix(cfg.sampler.noise),
        "front_end": dataclasses.asdict(front_end) if front_end is not None else None,
        "patch_size": cfg.sampler.patch_size,
        "patches_per_cube": getattr(cfg.sampler, "patches_per_cube", None),
        "patches_per_round": getattr(cfg.sampler, "patches_per_round", None),
        "batch_size": cfg.batch_size,
        "processes": processes.world_size,
        "loss": "sure" if getattr(cfg.sampler, "self_supervised", False) else cfg.loss,
        "self_supervised": bool(getattr(cfg.sampler, "self_supervised", False)),
        "clean_reference_used": not getattr(cfg.sampler, "self_supervised", False),
        "lr": lr,
        "lr_step_epochs": cfg.lr_step_epochs,
        "seed": cfg.seed,
        "steps": position.step,
        "epochs": position.epoch,
        "wall_time_s": round(wall_time_s, 1),
        "validation": None if last is None else dataclasses.asdict(last),
        "validation_history": [round(score.mpsnr, 3) for score in position.history],
        "validation_gain_history": [round(score.mpsnr - score.init_mpsnr, 3) for score in position.history],
        "version": __version__,
        "commit": git_commit(),
    }


def write_weights(
    model: DECSC, out_dir: Path, from_weights: Path | None, card: dict[str, Any], *, suffix: str = ""
) -> Path:
    """Save the weights and card as ``out_dir/decsc-<preset><suffix>`` (or ``<source>-finetuned<suffix>``).

    Returns:
        The .safetensors path. ``suffix="-best"`` is the best validation epoch so far, written as it happens.
    """
    from hsidenoise.model import preset_name, save_weights

    if from_weights is not None:
        source = Path(from_weights)
        name = f"{source.stem if source.suffix in ('.safetensors', '.json') else source.name}-finetuned"
    else:
        name = f"decsc-{preset_name(model.config) or 'custom'}"
    return save_weights(model, model.config, out_dir / f"{name}{suffix}", card)
