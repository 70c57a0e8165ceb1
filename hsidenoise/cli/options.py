"""Option types shared by the commands (one definition each, rasterio's `rio/options.py` in Typer form).

Enums spell out the choices so that `--help` imports no library code; the `Annotated` aliases carry the flag
names and help text; :func:`resolve_model` is the one `--model` check that `run` and `eval` share.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hsidenoise.errors import ConfigError


class OutputDtype(str, Enum):
    float32 = "float32"
    same = "same"


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class FrontEnd(str, Enum):
    dct = "dct"
    bm3d = "bm3d"
    auto = "auto"
    none = "none"


class SsimMode(str, Enum):
    wang = "wang"
    matlab = "matlab"


class FormatChoice(str, Enum):
    """The format names of `hsidenoise.io.FORMATS` (spelled out so that --help imports no I/O code)."""

    envi = "envi"
    geotiff = "geotiff"
    mat = "mat"
    mat73 = "mat73"
    hdf5 = "hdf5"


def value_of(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


FormatOpt = Annotated[
    FormatChoice | None,
    typer.Option("--format", help="Input format when the suffix does not tell."),
]
VarOpt = Annotated[
    str | None,
    typer.Option("--var", "--dataset", help="MAT variable or HDF5 dataset path holding the cube."),
]
AxesOpt = Annotated[
    str | None,
    typer.Option("--axes", help="Axis order of a MAT/HDF5 array, e.g. hwb (rows, cols, bands; the default) or bhw."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist.")]
DtypeOpt = Annotated[
    OutputDtype,
    typer.Option("--dtype", help="Output data type: float32, or the input's own type (rounded and clipped)."),
]
ReportOpt = Annotated[
    Path | None, typer.Option("--report", help="Write report.json and PNG plots here (one folder per input).")
]
ProfileBandsOpt = Annotated[
    str | None,
    typer.Option(
        "--profile-bands", metavar="B,B,...", help="With --report: the bands of the row/column-mean profile "
        "plot, numbered from 0 as the report shows them (e.g. 3,103,150); default: the most striped and noisy.",
    ),
]
SpectraPixelsOpt = Annotated[
    str | None,
    typer.Option(
        "--spectra-pixels", metavar="ROW,COL;...", help="With --report: the pixels of spectra.png, numbered from 0 "
        "(quote them: '10,20;300,41'; at most 8); default: the brightest, darkest, median and most changed.",
    ),
]


class SureMethodChoice(str, Enum):
    lowrank = "lowrank"
    decsc = "decsc"


class MethodChoice(str, Enum):
    decsc = "decsc"
    lowrank = "lowrank"
    identity = "identity"


ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads (torch, BLAS). Default: OMP_NUM_THREADS when set, else the usable cores up to 8; "
        "give 1 per process when several run side by side.",
    ),
]
RandomWeightsOpt = Annotated[
    bool,
    typer.Option(
        "--random-weights",
        help="With --model PRESET: run the untrained network of that preset (timing and tests; it does not denoise).",
    ),
]


def resolve_model(model: str | None, *, random_weights: bool = False) -> str | None:
    """What ``--model`` names, for :func:`hsidenoise.methods.build_method`: a weights path, or a preset name when
    its untrained network is asked for (``--random-weights``).

    A preset with shipped weights (``weights/decsc-<preset>.safetensors``) resolves to them; a preset without
    is refused unless ``random_weights``, so that no untrained network runs by accident.

    Raises:
        ConfigError: a bare name that is no preset and no file, a preset with no weights, or
            ``--random-weights`` without a preset.
    """
    if model is None:
        if random_weights:
            raise ConfigError("--random-weights needs --model PRESET (the network to leave untrained)")
        return None
    path = Path(model)
    if path.suffix or len(path.parts) > 1 or path.exists() or path.with_suffix(".safetensors").exists():
        if random_weights:
            raise ConfigError(f"--random-weights takes a preset name, not the weights file {model}; drop one")
        return model  # a path: the weights loader says what is wrong with it
    from hsidenoise.model import PRESETS, weights_dir

    if model not in PRESETS:
        raise ConfigError(
            f"--model {model!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a weights file; "
            "pass a preset name or the path of a .safetensors file"
        )
    if random_weights:
        return model
    shipped = weights_dir() / f"decsc-{model}.safetensors"
    if shipped.is_file() and shipped.with_suffix(".json").is_file():
        return str(shipped)
    raise ConfigError(
        f"--model {model}: no trained weights for the {model} preset ship with hsidenoise; train them "
        f"(hsidenoise train --preset {model} --data CUBES --out DIR) and pass --model DIR/decsc-{model}.safetensors, "
        "or add --random-weights to run the untrained network"
    )


DataOpt = Annotated[
    list[Path], typer.Option("--data", help="Cube files or directories of cubes (any format); repeat for more.")
]
OutDirOpt = Annotated[Path, typer.Option("--out", help="Directory for checkpoint.pt, the weights and the card.")]
NoiseMixOpt = Annotated[
    str,
    typer.Option("--noise", help="Noise recipes and weights drawn per cube, e.g. noniid or noniid:0.5,mixture:0.5."),
]
