"""DECSC, the deep-equilibrium convolutional sparse coding network: presets, construction and weights I/O.

>>> from hsidenoise.model import build_model, count_parameters
>>> count_parameters(build_model("paper"))
4294768
"""

from __future__ import annotations

from typing import Any

from hsidenoise.model.decsc import (
    DECSC,
    PRESETS,
    SIGMA_FLOOR,
    DECSCConfig,
    build_model,
    count_parameters,
    preset_name,
)
from hsidenoise.model.weights import (
    DEFAULT_WEIGHTS_NAME,
    find_default_weights,
    load_weights,
    save_weights,
    weights_dir,
)

__all__ = [
    "DECSC",
    "DECSCConfig",
    "DEFAULT_WEIGHTS_NAME",
    "PRESETS",
    "SIGMA_FLOOR",
    "build_model",
    "count_parameters",
    "find_default_weights",
    "list_presets",
    "load_weights",
    "preset_name",
    "save_weights",
    "weights_dir",
]


def list_presets() -> list[dict[str, Any]]:
    """One row per preset for ``hsidenoise models``: name, parameters, noise awareness, band window, weights.

    ``weights`` is the path of shipped weights for that preset (``weights/decsc-<name>.safetensors``) or None.
    Parameter counts come from a model built on the meta device (no memory, no initialisation cost).
    """
    import torch

    rows = []
    for name, config in PRESETS.items():
        with torch.device("meta"):
            parameters = count_parameters(build_model(config))
        shipped = weights_dir() / f"decsc-{name}.safetensors"
        rows.append(
            {
                "name": name,
                "parameters": parameters,
                "noise_aware": config.noise_aware,
                "bands": getattr(config, "bands", "any"),  # the subspace family takes any band count
                "prior": getattr(config, "prior", "conv"),
                "family": getattr(config, "kind", "band-window"),
                "weights": str(shipped) if shipped.is_file() and shipped.with_suffix(".json").is_file() else None,
            }
        )
    return rows
