"""DECSC weights on disk: ``<stem>.safetensors`` (the tensors) next to ``<stem>.json`` (config and model card).

The JSON file holds everything needed to rebuild the network and to judge it: the format tag, the package
version that wrote it, the preset name (or null for a custom config), the full :class:`DECSCConfig`, the band
window, the input normalisation, the parameter count and a free-form ``card`` (data, noise trained on, steps,
wall time, commit, validation scores...). Weights that ship with the package live in the repository's
``weights/`` directory, which a wheel carries as ``hsidenoise/_weights/`` (:func:`weights_dir` finds either).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from hsidenoise import __version__
from hsidenoise.errors import CheckpointError, HsiDenoiseError
from hsidenoise.model.decsc import AnyConfig, AnyModel, build_model, config_from_dict, count_parameters, preset_name

WEIGHTS_FORMAT = "hsidenoise-decsc-weights/1"
DEFAULT_WEIGHTS_NAME = "decsc-dctcsc-coupled"
"""Stem of the shipped weights in ``weights/`` that ``--method decsc`` uses without ``--model`` (the coupled DCT-CSC,
+0.13 dB over the front end on average on the validation cubes, CAVE mixture -0.13; the only weights that ship)."""
NORMALISATION = "min-max per band window, one (min, max) over the window's valid bands of the whole cube"


def weights_dir() -> Path:
    """The directory of the shipped weights (it may not exist).

    In an installed wheel that is the package data ``hsidenoise/_weights/`` (the repository's ``weights/``
    mapped into the package at build time, see setup.py); in a checkout or an editable install, where that
    directory does not exist, it is the repository's top-level ``weights/``.
    """
    package = Path(__file__).resolve().parents[1]
    installed = package / "_weights"
    return installed if installed.is_dir() else package.parent / "weights"


def find_default_weights() -> Path | None:
    """The shipped default weights (``weights/<DEFAULT_WEIGHTS_NAME>.safetensors``) with their JSON, else None."""
    path = weights_dir() / f"{DEFAULT_WEIGHTS_NAME}.safetensors"
    return path if path.is_file() and path.with_suffix(".json").is_file() else None


def _stem(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def save_weights(model: AnyModel, config: AnyConfig, path_stem: str | os.PathLike[str], card: dict[str, Any]) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; returns the ``.safetensors`` path.

    Args:
        model: the network (its config must equal ``config``).
        config: its configuration, stored in the JSON so that :func:`load_weights` can rebuild it.
        path_stem: target path without suffix (a ``.safetensors`` or ``.json`` suffix is dropped).
        card: JSON-serialisable model-card fields (data, noise, steps, commit, validation scores, ...).

    Raises:
        CheckpointError: config mismatch, a card that is not JSON-serialisable, or an unwritable target.
    """
    from safetensors.torch import save_file

    from hsidenoise.io.staging import staged

    if model.config != config:
        raise CheckpointError(
            f"model config {model.config} differs from the config to save {config}; pass model.config"
        )
    stem = _stem(path_stem)
    meta = {
        "format": WEIGHTS_FORMAT,
        "version": __version__,
        "preset": preset_name(config),
        "config": config.to_dict(),
        "band_window": getattr(config, "bands", None),
        "normalisation": NORMALISATION if getattr(config, "kind", None) is None else "whitened eigen-images (unit noise)",
        "parameters": count_parameters(model),
        "card": card,
    }
    try:
        text = json.dumps(meta, indent=2)
    except TypeError as error:
        raise CheckpointError(
            f"model card must be JSON-serialisable; {error}; convert its values to str/float/list"
        ) from None
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        with staged(stem.with_suffix(".safetensors")) as temporary:
            save_file(state, str(temporary), metadata={"format": WEIGHTS_FORMAT})
        with staged(stem.with_suffix(".json")) as temporary:
            temporary.write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        raise CheckpointError(
            f"cannot write weights {stem}.safetensors/.json: {error.strerror or error}; choose a writable path"
        ) from None
    return stem.with_suffix(".safetensors")


def load_weights(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[AnyModel, AnyConfig, dict[str, Any]]:
    """Rebuild a DECSC from ``<stem>.safetensors`` + ``<stem>.json`` (either path, or the stem).

    Returns:
        The model on ``device`` in eval mode with its difference convolutions folded (``train()`` undoes
        that), its config, and the model card.

    Raises:
        CheckpointError: a missing, corrupt or mismatched file (one line saying which and what to do).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    stem = _stem(path)
    tensors_path, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for needed in (tensors_path, meta_path):
        if not needed.is_file():
            raise CheckpointError(
                f"weights file {needed} not found; DECSC weights are a {tensors_path.name} + {meta_path.name} pair "
                "written by hsidenoise train"
            )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"cannot read weights metadata {meta_path}: {error}; the file is corrupt, re-export it"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT or not isinstance(meta.get("config"), dict):
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{meta_path} is not hsidenoise weights metadata (format {WEIGHTS_FORMAT!r} expected, got {found!r})"
        )
    try:
        config = config_from_dict(meta["config"])
    except (HsiDenoiseError, TypeError, ValueError) as error:
        raise CheckpointError(f"{meta_path} holds a config this version cannot build: {error}") from None
    try:
        state = load_file(str(tensors_path), device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"cannot read weights {tensors_path}: {error}; the file is corrupt or truncated"
        ) from None
    model = build_model(config)
    _check_state(model, state, tensors_path)
    model.load_state_dict(state)
    return model.to(device).fold_for_inference(), config, dict(meta.get("card") or {})


def _check_state(model: AnyModel, state: dict[str, torch.Tensor], path: Path) -> None:
    """One-line CheckpointError when the tensors do not match the network the JSON config describes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}" if unexpected else "",
                f"shape {wrong[:3]}{' ...' if len(wrong) > 3 else ''}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(
            f"weights {path} do not match the config in its JSON ({details}); re-export them together"
        )
