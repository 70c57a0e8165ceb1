"""The provenance an output of ``hsidenoise run`` records: method, weights, version, command line and date.

The record is a `CubeMeta.provenance` dict (keys `hsidenoise.cube.PROVENANCE_KEYS`, one-line strings) that
every writer stores in its format's own place (see `PROVENANCE_KEYS`), so a converted output keeps it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HASH_PREFIX = 12
"""Hex digits of the weights' sha256 that are recorded (48 bits: enough to tell two weights files apart)."""


def weights_identity(path: str | os.PathLike[str] | None) -> str:
    """``"<file name> sha256:<first HASH_PREFIX hex digits>"`` of a weights file, or ``"none"`` without one.

    A path to the ``.json`` card or the bare stem names its ``.safetensors`` file.
    """
    if path is None:
        return "none"
    path = Path(path)
    if path.suffix != ".safetensors" and (path.with_suffix(".safetensors").is_file() or not path.is_file()):
        path = path.with_suffix(".safetensors")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return f"{path.name} (unreadable)"
    return f"{path.name} sha256:{digest.hexdigest()[:HASH_PREFIX]}"


def run_provenance(
    method: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    preset: str | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, str]:
    """The provenance record of a run of `method` started by `argv`.

    Args:
        method: the ``--method`` name.
        weights: the weights file used (``.safetensors``, its ``.json`` or the stem), or None.
        preset: the preset name of an untrained network (``--model paper``), instead of `weights`.
        argv: the command line (None: ``sys.argv``, the program shown as ``hsidenoise``).
    """
    from hsidenoise import __version__

    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = "hsidenoise"
    if preset is not None:
        identity = f"preset {preset} (untrained)"
    else:
        identity = weights_identity(weights)
    return {
        "software": f"hsidenoise {__version__}",
        "method": method,
        "weights": identity,
        "command": shlex.join(argv).replace("\n", " "),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def method_provenance(method: str, model: str | None, *, random_weights: bool = False) -> dict[str, str]:
    """`run_provenance` for ``run --method METHOD [--model MODEL] [--random-weights]`` (`model` as resolved by
    the CLI: a weights path, a preset name with `random_weights`, or None for the shipped default weights)."""
    if method != "decsc":
        return run_provenance(method)
    if random_weights and model is not None:
        return run_provenance(method, preset=model)
    if model is None:
        from hsidenoise.model import find_default_weights

        model = find_default_weights()
    return run_provenance(method, weights=model)
