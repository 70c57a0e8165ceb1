"""`hsidenoise train` and `hsidenoise finetune`: one command body, two entry points (`hsidenoise.train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hsidenoise.cli.options import DataOpt, FrontEnd, JsonOpt, NoiseMixOpt, OutDirOpt, QuietOpt, ThreadsOpt
from hsidenoise.cli.process import thread_count
from hsidenoise.cli.terminal import ProgressBars, errors_as_one_line, print_json, say, stderr_console
from hsidenoise.errors import ConfigError


def _train_config(
    *,
    model: str,
    data: list[Path],
    validation: list[Path],
    out: Path,
    noise: str,
    sigma_max: float | None,
    patch_size: int,
    patches_per_cube: int,
    front_end: str,
    batch_size: int,
    lr: float | None,
    lr_step_epochs: int,
    epochs: int | None,
    time_budget: float | None,
    steps_per_epoch: int,
    seed: int,
    checkpoint_every: float,
    loss: str,
    self_supervised: bool = False,
    validation_crop: int = 96,
):
    from hsidenoise.training.data import SamplerConfig, parse_noise_mix
    from hsidenoise.subspace import LowRankConfig
    from hsidenoise.training import TrainConfig

    sampler: Any = SamplerConfig(
        noise=parse_noise_mix(noise, sigma_max=sigma_max),
        patch_size=patch_size,
        patches_per_cube=patches_per_cube,
        front_end=LowRankConfig(spatial=front_end),
    )
    if self_supervised:  # the data are the user's noisy cubes: no synthetic noise, SURE in whitened units
        from dataclasses import replace

        from hsidenoise.training.families import subspace_sampler_config

        sampler = replace(subspace_sampler_config(sampler), self_supervised=True, real_fraction=1.0)
    return TrainConfig(
        model=model,
        data=tuple(data),
        validation=tuple(validation),
        out_dir=out,
        sampler=sampler,
        batch_size=batch_size,
        lr=lr,
        lr_step_epochs=lr_step_epochs,
        epochs=None if time_budget is not None and epochs is None else (epochs if epochs is not None else 30),
        time_budget_s=time_budget,
        steps_per_epoch=steps_per_epoch,
        seed=seed,
        checkpoint_every_s=checkpoint_every,
        loss=loss,
        validation_crop=validation_crop,
    )


def _train_progress(bars: ProgressBars, quiet: bool):
    update = bars.callback("training")
    stderr = stderr_console()

    def on_event(event) -> None:
        total = event.total_steps or 0
        loss = "" if event.loss is None else f"loss {event.loss:.4g}"
        speed = "" if event.steps_per_s is None else f"{event.steps_per_s:.2f} step/s"
        update(event.step, total or event.step + 1, f"epoch {event.epoch} {loss} {speed} lr {event.lr:.2g}")
        if event.event == "epoch" and event.validation is not None and not quiet:
            v = event.validation
            stderr.print(
                f"epoch {event.epoch}: validation MPSNR {v.mpsnr:.2f} dB "
                f"(front end {v.init_mpsnr:.2f}, noisy {v.noisy_mpsnr:.2f})"
            )

    return on_event


def _train_document(result) -> dict[str, Any]:
    v = result.validation
    return {
        "weights": None if result.weights is None else str(result.weights),
        "checkpoint": str(result.checkpoint),
        "steps": result.steps,
        "epochs": result.epochs,
        "wall_time_s": round(result.wall_time_s, 1),
        "validation": None
        if v is None
        else {"mpsnr": v.mpsnr, "front_end_mpsnr": v.init_mpsnr, "noisy_mpsnr": v.noisy_mpsnr, "per_case": v.per_case},
    }


def _training_command(finetuning: bool):
    def command(
        data: DataOpt,
        out: OutDirOpt,
        *,
        validation: Annotated[
            list[Path] | None, typer.Option("--validation", help="Cubes scored each epoch, never trained on.")
        ] = None,
        preset: Annotated[str, typer.Option("--preset", help="Model preset (train only): subspace, dctcsc, dctcsc-coupled or paper.")] = "subspace",
        from_weights: Annotated[
            Path | None, typer.Option("--from", help="Weights to start from (finetune; default: the shipped ones).")
        ] = None,
        noise: NoiseMixOpt = "noniid",
        sigma_max: Annotated[
            float | None, typer.Option("--sigma-max", min=0, help="Gaussian level, 0-255 scale (default 95).")
        ] = None,
        patch_size: Annotated[int, typer.Option("--patch-size", min=8, help="Training crop side.")] = 64,
        patches_per_cube: Annotated[
            int, typer.Option("--patches-per-cube", min=1, help="Crops per cube per noise draw.")
        ] = 256,
        front_end: Annotated[
            FrontEnd, typer.Option("--front-end", help="Spatial denoiser of the low-rank front end.")
        ] = FrontEnd.dct,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
        lr: Annotated[
            float | None, typer.Option("--lr", help="Adam learning rate (default 1e-4 train, 2e-5 finetune).")
        ] = None,
        lr_step_epochs: Annotated[int, typer.Option("--lr-step-epochs", min=1, help="Halve the rate every N.")] = 10,
        epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (default 30).")] = None,
        time_budget: Annotated[
            float | None,
            typer.Option(
                "--time-budget",
                min=1,
                help="Stop after this many seconds of training, checked after each step (a step that starts a new "
                "round of front-end runs can take a minute on a 200-band cube, so a short budget can run past).",
            ),
        ] = None,
        steps_per_epoch: Annotated[int, typer.Option("--steps-per-epoch", min=1)] = 250,
        seed: Annotated[int, typer.Option("--seed")] = 0,
        checkpoint_every: Annotated[
            float, typer.Option("--checkpoint-every", min=0, help="Seconds between checkpoints.")
        ] = 300.0,
        loss: Annotated[
            str,
            typer.Option(
                "--loss",
                help="mse (subspace models: whitened eigen-images), logmse (band-window models: mean -PSNR per "
                "example) or mpsnr (mean -PSNR per band in data units, the users' metric).",
            ),
        ] = "mse",
        validation_crop: Annotated[
            int,
            typer.Option(
                "--validation-crop",
                min=0,
                help="Side of the central window of each --validation cube scored each epoch (default 96); 0: the "
                "whole cube, as run sees it (slower, but a crop may not stand for its cube).",
            ),
        ] = 96,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
        self_supervised: Annotated[
            bool,
            typer.Option(
                "--self-supervised",
                help="The --data cubes are real noisy data with no clean version: no synthetic noise is added "
                "(--noise is ignored) and the loss is SURE in whitened units. Subspace weights only. Without it, "
                "--data must be clean cubes, on which noise is synthesised.",
            ),
        ] = False,
        threads: ThreadsOpt = None,
        quiet: QuietOpt = False,
        json_output: JsonOpt = False,
    ) -> None:
        with errors_as_one_line():
            cpu_threads = thread_count(threads)  # before numpy and torch load their thread pools
            from hsidenoise import training
            from hsidenoise.device import configure_threads

            configure_threads(cpu_threads)

            cfg = _train_config(
                model=preset,
                data=data,
                validation=validation or [],
                out=out,
                noise=noise,
                sigma_max=sigma_max,
                patch_size=patch_size,
                patches_per_cube=patches_per_cube,
                front_end=front_end.value,
                batch_size=batch_size,
                lr=lr,
                lr_step_epochs=lr_step_epochs,
                epochs=epochs,
                time_budget=time_budget,
                steps_per_epoch=steps_per_epoch,
                seed=seed,
                checkpoint_every=checkpoint_every,
                loss=loss,
                self_supervised=self_supervised,
                validation_crop=validation_crop,
            )
            with ProgressBars(not (quiet or json_output)) as bars:
                progress = _train_progress(bars, quiet or json_output)
                if finetuning:
                    source = from_weights
                    if source is None:
                        from hsidenoise.model import find_default_weights

                        source = find_default_weights()
                        if source is None:
                            raise ConfigError("no shipped weights in weights/ to finetune; pass --from WEIGHTS")
                    result = training.finetune(cfg, source, progress=progress, resume=resume)
                else:
                    result = training.fit(cfg, progress=progress, resume=resume)
            document = _train_document(result)
            if json_output:
                print_json(document)
            elif not quiet:
                say(f"wrote {document['weights']} ({result.steps} steps, {result.wall_time_s:.0f} s)")

    return command


train = _training_command(finetuning=False)
train.__doc__ = "Train DECSC on your cubes with synthetic noise; checkpoints, --resume, torchrun-ready."
finetune = _training_command(finetuning=True)
finetune.__doc__ = "Continue training existing weights (default: the shipped ones) on your own sensor's cubes."
