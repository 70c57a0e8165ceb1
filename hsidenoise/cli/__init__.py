"""The `hsidenoise` command line: a thin Typer layer over the library, one module per command.

Every command parses its options, builds the config dataclasses, calls one library function and prints a
summary. Heavy modules (torch, rasterio, h5py, matplotlib) are imported inside the commands, so
`hsidenoise --help` stays fast. Library errors (`HsiDenoiseError`) become one red line on stderr and exit 1;
usage errors exit 2: Typer's own (an unknown option, a value out of range) and option values the library
rejects (`ConfigError`: tile smaller than the overlap, an unknown preset, ...), the latter as one line too.

Layout (rasterio's `rio/`): :mod:`~hsidenoise.cli.options` holds the shared option types,
:mod:`~hsidenoise.cli.terminal` the printing (errors, JSON, progress), and each command has its module:
`info`, `convert`, `noise`, `run`, `eval` (:mod:`~hsidenoise.cli.evaluate`), `train` and `finetune`
(:mod:`~hsidenoise.cli.train`), `models`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hsidenoise import __version__
from hsidenoise.cli import convert, evaluate, info, models, noise, run, train
from hsidenoise.commands import COMMANDS, DESCRIPTION

app = typer.Typer(
    name="hsidenoise",
    help=DESCRIPTION,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"hsidenoise {__version__}\n")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version_callback, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Denoise hyperspectral cubes with DECSC (deep-equilibrium convolutional sparse coding)."""


# Registered in the order of the original single-module CLI, which is the order `--help` lists them in; the
# one-line summaries are hsidenoise.commands', which hsidenoise.console also reads to answer `hsidenoise --help` without importing Typer.
app.command("noise", short_help=COMMANDS["noise"])(noise.noise)
app.command("eval", short_help=COMMANDS["eval"])(evaluate.evaluate_command)
app.command("info", short_help=COMMANDS["info"])(info.info)
app.command("convert", short_help=COMMANDS["convert"])(convert.convert)
app.command("run", short_help=COMMANDS["run"])(run.run)
app.command("train", short_help=COMMANDS["train"])(train.train)
app.command("finetune", short_help=COMMANDS["finetune"])(train.finetune)
app.command("models", short_help=COMMANDS["models"])(models.models)

__all__ = ["app"]
