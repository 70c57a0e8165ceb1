"""Training and fine-tuning DECSC: the loop behind ``hsidenoise train`` and ``hsidenoise finetune``.

One loop serves both (:func:`fit` from a fresh model, :func:`finetune` from saved weights at a lower learning
rate). Per step: a batch from :class:`hsidenoise.data.PatchSampler` (noise, low-rank front end, random windows,
each normalised as at inference), the model's output compared with the clean window by MSE (or log-MSE), Adam,
and the learning rate halved every ``lr_step_epochs`` epochs (the paper's schedule). bf16 autocast on CUDA only.

After every epoch the model denoises fixed noisy crops of the validation cubes (never trained on), window by
window as at inference, and its MPSNR is reported next to the front end's. A checkpoint (model, optimizer,
scheduler, sampler and torch random states, position, elapsed time) is written atomically to
``out_dir/checkpoint.pt`` every ``checkpoint_every_s`` seconds and at the end; ``resume=True`` continues from it
exactly: N steps in one go and N/2 + N/2 with a restart in between give bit-identical weights. The final
weights go to ``out_dir/<name>.safetensors`` with a JSON model card.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the loop runs data-parallel: one process per device (gloo on CPU, nccl
on CUDA), ``DistributedDataParallel``, one sampler stream per rank, and only rank 0 validates and writes.
``batch_size`` is per process.

The library never prints: progress goes to the ``progress`` callback as :class:`TrainProgress` events.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import subprocess
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hsidenoise import __version__
from hsidenoise.data import (
    LowRankFrontEnd,
    PatchSampler,
    SamplerConfig,
    TrainingCube,
    format_noise_mix,
    load_training_set,
    make_rng,
    normalise_window,
)
from hsidenoise.errors import CheckpointError, ConfigError
from hsidenoise.noise import add_noise

if TYPE_CHECKING:
    import torch

    from hsidenoise.data import FrontEnd, TrainingSet
    from hsidenoise.lowrank import LowRankConfig
    from hsidenoise.model import DECSC, DECSCConfig

logger = logging.getLogger(__name__)

DEFAULT_LR = 1e-4
"""Adam's learning rate for :func:`fit` (the paper's)."""
FINETUNE_LR = 2e-5
"""Adam's learning rate for :func:`finetune`: small steps away from weights that already work."""
LR_DECAY = 0.5
"""Factor applied to the learning rate every ``lr_step_epochs`` epochs (the paper halves it)."""
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
VALIDATION_SEED = 20_241_123
"""Seed of the validation noise: the same noisy crops for every epoch and every run."""
LOSSES: tuple[str, ...] = ("mse", "logmse")
"""``mse``: mean squared error over the batch. ``logmse``: mean over examples of log(MSE_n), i.e. -PSNR up to
constants, so that easy (low-noise) and hard (mixture) examples weigh the same."""


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
        validation_crop: side of the central crop of each validation cube that is scored (keeps it cheap).
    """

    model: str | DECSCConfig = "lite"
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
    loss: Literal["mse", "logmse"] = "mse"
    validation_crop: int = 96

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("TrainConfig.data is empty; pass at least one cube file or directory (--data DIR)")
        for name in ("batch_size", "lr_step_epochs", "steps_per_epoch", "validation_crop"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be at least 1; got {getattr(self, name)}")
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


@dataclass(frozen=True)
class ValidationScore:
    """MPSNR (dB, peak 1 on the [0, 1]-normalised cube) on the validation crops.

    Attributes:
        mpsnr: the model's, averaged over the validation cases.
        init_mpsnr: the front end's (the model's starting point), same cases.
        noisy_mpsnr: the noisy input's, same cases.
        per_case: ``"cube/recipe"`` -> (model, front end, noisy) MPSNR.
    """

    mpsnr: float
    init_mpsnr: float
    noisy_mpsnr: float
    per_case: dict[str, tuple[float, float, float]] = field(default_factory=dict)


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


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ValidationCase:
    """A fixed noisy crop of a validation cube and its front-end output, in [0, 1] cube units.

    Attributes:
        name: ``"cube/recipe"``.
        clean, noisy, init: (B, h, w) float32.
        sigma: (B,) front-end noise estimate.
    """

    name: str
    clean: np.ndarray
    noisy: np.ndarray
    init: np.ndarray
    sigma: np.ndarray


def prepare_validation(
    paths: Sequence[Path],
    sampler: SamplerConfig,
    *,
    band_window: int,
    crop: int,
    front_end: FrontEnd | None,
) -> list[ValidationCase]:
    """One case per validation cube and distinct noise recipe: central crop, fixed-seed noise, front end.

    Raises:
        ConfigError: a validation cube has fewer valid bands than the model's window.
    """
    cases: list[ValidationCase] = []
    for cube_index, path in enumerate(paths):
        cube = TrainingCube.load(Path(path))
        if cube.bands < band_window:
            raise ConfigError(
                f"validation cube {path} has {cube.bands} valid bands, fewer than the model's {band_window}-band "
                "window; choose another validation cube"
            )
        _, rows, cols = cube.data.shape
        top, left = max(0, (rows - crop) // 2), max(0, (cols - crop) // 2)
        clean = np.ascontiguousarray(cube.data[:, top : top + crop, left : left + crop])
        specs = list(dict.fromkeys(spec for spec, _ in sampler.noise))
        for recipe_index, spec in enumerate(specs):
            rng = np.random.default_rng([VALIDATION_SEED, cube_index, recipe_index])
            noisy = add_noise(clean, spec, rng)
            if front_end is None:
                init, sigma = noisy.noisy, np.asarray(noisy.sigma, dtype=np.float64)
            else:
                init, sigma = front_end(noisy.noisy, rng)
            cases.append(ValidationCase(f"{cube.name}/{spec.recipe}", clean, noisy.noisy, init, sigma))
    return cases


def denoise_windows(
    model: DECSC,
    noisy: np.ndarray,
    init: np.ndarray,
    sigma: np.ndarray,
    *,
    device: torch.device,
) -> np.ndarray:
    """Denoise a whole (B, h, w) cube with the model, band window by band window, as inference does.

    Windows of ``model.config.bands`` bands at most :class:`hsidenoise.tiling.TileConfig` ``band_stride`` bands
    apart, each normalised with its own (lo, hi) over the noisy window, blended along the spectrum with
    :func:`hsidenoise.tiling.blend_weights`. All windows go through the model as one batch.

    Returns:
        (B, h, w) float32 in cube units.
    """
    import torch

    from hsidenoise.tiling import TileConfig, blend_weights, plan_band_windows

    window = _band_window(model)
    windows = plan_band_windows(noisy.shape[0], window, min(TileConfig().band_stride, window))
    mapped = [
        normalise_window(noisy[w], init[w], sigma[w], lo=float(noisy[w].min()), hi=float(noisy[w].max()))
        for w in windows
    ]

    def stacked(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(m, name) for m in mapped])).to(device)

    with torch.no_grad(), _autocast(device):
        clean, _ = model(stacked("noisy"), init=stacked("init"), sigma=stacked("sigma"))
    clean = clean.float().cpu().numpy()
    total = np.zeros(noisy.shape, dtype=np.float64)
    weight = np.zeros(noisy.shape[0], dtype=np.float64)
    for w, band_weight, m, out in zip(windows, blend_weights(windows), mapped, clean, strict=True):
        total[w] += band_weight[:, None, None] * (out * (m.hi - m.lo) + m.lo)
        weight[w] += band_weight
    return (total / weight[:, None, None]).astype(np.float32)


def validate(model: DECSC, cases: Sequence[ValidationCase], *, device: torch.device) -> ValidationScore:
    """Score the model on the validation cases (eval mode, no gradient; torch's random state is untouched)."""
    import torch

    from hsidenoise.metrics import mpsnr

    was_training = model.training
    model.eval()
    per_case: dict[str, tuple[float, float, float]] = {}
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for case in cases:
                denoised = denoise_windows(model, case.noisy, case.init, case.sigma, device=device)
                per_case[case.name] = (
                    mpsnr(denoised, case.clean),
                    mpsnr(case.init, case.clean),
                    mpsnr(case.noisy, case.clean),
                )
    finally:
        model.train(was_training)
    return _score(per_case)


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Processes:
    """This process's place in a (possibly single-process) data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls) -> _Processes:
        """Join the process group torchrun describes in the environment (``WORLD_SIZE`` > 1), if any."""
        import torch
        import torch.distributed as dist

        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)

    def device(self) -> torch.device:
        import torch

        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def broadcast_flags(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Rank 0's decisions (checkpoint now, stop now) for every rank."""
        if self.world_size == 1:
            return flags
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(f) for f in flags], device=device)
        dist.broadcast(tensor, src=0)
        return [bool(v) for v in tensor.tolist()]

    def gather(self, value: Any) -> list[Any]:
        """``value`` from every rank, in rank order (on every rank)."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


@dataclass
class _Position:
    """Where the loop is, for checkpoints: epochs done, steps done in the current epoch, steps in total."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    history: list[ValidationScore] = field(default_factory=list)


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
    processes = _Processes.start()
    try:
        return _loop(cfg, model, processes, lr=lr, from_weights=from_weights, progress=progress, resume=resume)
    finally:
        processes.close()


def _loop(
    cfg: TrainConfig,
    model: DECSC,
    processes: _Processes,
    *,
    lr: float,
    from_weights: Path | None,
    progress: ProgressCallback | None,
    resume: bool,
) -> TrainResult:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    device = processes.device()
    subspace = _is_subspace(model)
    from hsidenoise.subspace_data import SubspaceSamplerConfig

    if isinstance(cfg.sampler, SubspaceSamplerConfig) and not subspace:
        raise ConfigError(
            "subspace training settings (self-supervised or eigen-domain pairs) need a subspace DECSC model; "
            "use --preset subspace or subspace weights"
        )
    band_window = 2 if subspace else _band_window(model)  # the subspace model takes any band count >= 2
    out_dir = Path(cfg.out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if not resume and checkpoint_path.exists():
        raise ConfigError(
            f"{out_dir} already holds a training run ({CHECKPOINT_NAME}); pass --resume to continue it, or choose "
            "another --out (delete the folder to start over)"
        )
    training = load_training_set(
        cfg.data, band_window=band_window, patch_size=cfg.sampler.patch_size, exclude=cfg.validation
    )
    if processes.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if subspace:
        from hsidenoise.subspace_training import prepare_subspace_validation, subspace_sampler_config

        subspace_sampler = subspace_sampler_config(cfg.sampler)
        front_end: FrontEnd | None = None
        cases: list[Any] = (
            prepare_subspace_validation(
                cfg.validation, subspace_sampler, crop=cfg.validation_crop, seed=VALIDATION_SEED
            )
            if processes.is_main and cfg.validation
            else []
        )
    else:
        front_end = LowRankFrontEnd.from_sampler(cfg.sampler) if model.config.noise_aware else None
        cases = (
            prepare_validation(
                cfg.validation, cfg.sampler, band_window=band_window, crop=cfg.validation_crop, front_end=front_end
            )
            if processes.is_main and cfg.validation
            else []
        )

    card_front_end = subspace_sampler.front_end if subspace else (cfg.sampler.front_end if front_end else None)
    model.to(device).train()
    network: torch.nn.Module = model
    if processes.world_size > 1:
        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(_parameter_groups(model, lr), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=LR_DECAY)
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, processes.rank, 1]).generate_state(1)[0]))

    position = _Position()
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

    sampler: Any
    if subspace:
        from hsidenoise.subspace_data import SubspaceSampler

        sampler = SubspaceSampler(
            training.cubes, subspace_sampler, rng=make_rng(cfg.seed, processes.rank), on_round=lambda _: report("round")
        )
    else:
        sampler = PatchSampler(
            training.cubes,
            cfg.sampler,
            band_window=band_window,
            rng=make_rng(cfg.seed, processes.rank),
            front_end=front_end,
            on_round=lambda _: report("round"),
        )
    checkpoint = _Checkpoint(
        checkpoint_path, _run_identity(cfg, model.config, training, processes), processes, model, optimizer,
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
            with _autocast(device):
                if subspace:
                    from hsidenoise.subspace_training import subspace_loss

                    probe_rng = np.random.default_rng([cfg.seed, processes.rank, position.step])  # resumable
                    loss = subspace_loss(network, batch, sampler=subspace_sampler, rng=probe_rng)
                else:
                    output, _ = network(batch.noisy, init=batch.init, sigma=batch.sigma)
                    loss = _loss(cfg.loss, output.float(), batch.clean)
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
                if subspace:
                    score = _score(_validate_subspace(model, cases, subspace_sampler, device=device))
                else:
                    score = validate(model, cases, device=device)
                best = max((s.mpsnr for s in position.history), default=-np.inf)
                position.history.append(score)
                if processes.is_main and score.mpsnr > best:  # keep the best epoch's weights too
                    card = _model_card(
                        cfg, training, position, clock.elapsed_s(), from_weights, lr, processes,
                        card_front_end,
                    )  # fmt: skip
                    _write_weights(model, out_dir, from_weights, {**card, "best_of_run": True}, suffix="-best")
                    model.train()
            report("epoch")

    wall_time_s = clock.elapsed_s()
    checkpoint.save(position, wall_time_s, from_weights)
    model.eval()
    card = _model_card(cfg, training, position, wall_time_s, from_weights, lr, processes, card_front_end)
    weights = _write_weights(model, out_dir, from_weights, card) if processes.is_main else None
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


def _loss(name: str, output: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """``mse``: mean squared error; ``logmse``: mean over examples of log(MSE_n + 1e-10)."""
    import torch

    if name == "mse":
        return torch.nn.functional.mse_loss(output, clean)
    per_example = (output - clean).square().flatten(1).mean(dim=1)
    return torch.log(per_example + 1e-10).mean()


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _band_window(model: DECSC) -> int:
    return int(model.config.bands)


def _is_subspace(model: Any) -> bool:
    from hsidenoise.model.subspace import KIND

    return getattr(model.config, "kind", None) == KIND


THRESHOLD_LR_FACTOR = 10.0
"""Thresholds (``rho``: theta = tau softplus(rho)) and their SNR gains learn this much faster than the rest."""


def _parameter_groups(model: Any, lr: float) -> list[dict[str, Any]]:
    """Adam parameter groups: the subspace model's thresholds get their own, larger learning rate."""
    if not _is_subspace(model):
        return [{"params": list(model.parameters())}]
    thresholds = [p for name, p in model.named_parameters() if name.endswith(("rho", "snr_gain"))]
    rest = [p for name, p in model.named_parameters() if not name.endswith(("rho", "snr_gain"))]
    return [{"params": rest}, {"params": thresholds, "lr": lr * THRESHOLD_LR_FACTOR}]


def _validate_subspace(model: Any, cases: Sequence[Any], sampler: Any, *, device: torch.device) -> dict[str, Any]:
    import torch

    from hsidenoise.subspace_training import validate_subspace

    was_training = model.training
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return validate_subspace(model, cases, sampler, device=device)
    finally:
        model.train(was_training)


def _score(per_case: dict[str, tuple[float, float, float]]) -> ValidationScore:
    scores = np.array(list(per_case.values()), dtype=np.float64)
    return ValidationScore(*(float(v) for v in scores.mean(axis=0)), per_case=per_case)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints, weights, card
# ---------------------------------------------------------------------------------------------------------


def _run_identity(
    cfg: TrainConfig, model_config: DECSCConfig, training: TrainingSet, processes: _Processes
) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume."""
    return {
        "model_config": repr(model_config),
        "data": [cube.name for cube in training.cubes],
        "world_size": processes.world_size,
        "batch_size": cfg.batch_size,
        "sampler": repr(cfg.sampler),
        "seed": cfg.seed,
    }


@dataclass
class _Checkpoint:
    """Saves and restores everything a bit-exact resume needs, at ``path`` (written by rank 0 only)."""

    path: Path
    identity: dict[str, Any]
    processes: _Processes
    model: DECSC
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: PatchSampler

    def save(self, position: _Position, elapsed_s: float, from_weights: Path | None) -> None:
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

    def restore(self, position: _Position, device: torch.device) -> float:
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
        changed = [key for key, value in self.identity.items() if state["identity"].get(key) != value]
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
        position.history = [ValidationScore(**_score_fields(score)) for score in state["history"]]
        logger.info("resumed %s at epoch %d, step %d", self.path, position.epoch, position.step)
        return float(state["elapsed_s"])


def _score_fields(score: dict[str, Any]) -> dict[str, Any]:
    return {**score, "per_case": {name: tuple(values) for name, values in score["per_case"].items()}}


def _git_commit() -> str | None:
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


def _model_card(
    cfg: TrainConfig,
    training: TrainingSet,
    position: _Position,
    wall_time_s: float,
    from_weights: Path | None,
    lr: float,
    processes: _Processes,
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
        "version": __version__,
        "commit": _git_commit(),
    }


def _write_weights(
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
