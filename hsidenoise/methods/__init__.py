"""The registry behind ``hsidenoise run --method``: :data:`METHODS` and :func:`build_method`.

Each method implements the :class:`hsidenoise.denoiser.Denoiser` protocol (defined in its own module, so that
the methods never import this registry back). A method's module is imported when it is built, so importing the
registry loads neither torch nor the models.
"""

from __future__ import annotations

from hsidenoise.denoiser import Denoiser, IdentityDenoiser
from hsidenoise.errors import ConfigError
from hsidenoise.tiling import TileConfig

METHODS: dict[str, str] = {
    "decsc": "the DECSC network (shipped lite weights by default, or --model PRESET|PATH)",
    "lowrank": "weight-free: noise estimate, whitened signal subspace, denoised eigen-images (fast)",
    "identity": "returns the input unchanged (measures the pipeline alone)",
}
"""Method name -> one-line description, as ``hsidenoise run --help`` and ``hsidenoise models`` show them."""


def build_method(
    name: str,
    *,
    model: str | None = None,
    device: str = "auto",
    config: TileConfig | None = None,
    window_batch: int | None = None,
    solver: dict[str, float | int] | None = None,
    spatial: str = "auto",
    adapt_seconds: float = 0.0,
) -> Denoiser:
    """The denoiser behind ``--method name``.

    Args:
        name: a key of :data:`METHODS`.
        model: ``decsc`` only: a preset name (an untrained network; for tests and timing) or a weights
            path; None takes the shipped weights (:func:`hsidenoise.model.find_default_weights`).
        device: ``auto``, ``cpu`` or ``cuda`` (:func:`hsidenoise.device.select_device`).
        config: the tiling (its band window must match the model's, its stride is used).
        window_batch: band windows per model call; None: 1 on the CPU (measured fastest: smaller working
            set, `bench/README.md`), 16 on CUDA as the floor of a batch sized from free GPU memory.
        solver: overrides of the model's :class:`hsidenoise.model.solver.SolverConfig` fields (e.g. ``max_iter``).
        adapt_seconds: ``decsc`` with subspace weights only: seconds of self-supervised adaptation to each cube
            before it is denoised (``--adapt``; 0: none). Other methods refuse a positive value.
        spatial: ``lowrank`` only: the eigen-image denoiser (``auto``, ``bm3d``, ``dct``, ``none``). DECSC's
            front end always uses the one its weights were trained with.

    Raises:
        ConfigError: an unknown method or preset, a band window that is not the model's, or no weights.
        CheckpointError: a weights file that is missing, corrupt or mismatched.
    """
    config = config if config is not None else TileConfig()
    if adapt_seconds > 0 and name != "decsc":
        raise ConfigError(f"--adapt adapts the DECSC model; --method {name} has nothing to adapt; drop --adapt")
    if name == "identity":
        return IdentityDenoiser()
    if name == "lowrank":
        from hsidenoise.subspace import LowRankConfig, LowRankDenoiser

        return LowRankDenoiser(LowRankConfig(spatial=spatial))
    if name != "decsc":
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    from dataclasses import replace

    from hsidenoise.device import select_device
    from hsidenoise.subspace import LowRankConfig
    from hsidenoise.model import PRESETS, build_model, find_default_weights, load_weights
    from hsidenoise.methods.decsc_bands import DECSCDenoiser, InferenceConfig

    torch_device = select_device(device)
    front_end = None
    if model is not None and model in PRESETS:
        network = build_model(model).fold_for_inference()
    else:
        path = model if model is not None else find_default_weights()
        if path is None:
            raise ConfigError(
                "no DECSC weights found in weights/ (decsc-subspace.safetensors + .json); pass --model PATH, "
                "train some with hsidenoise train, or use --method lowrank"
            )
        network, _, card = load_weights(path, device=torch_device)
        if card.get("front_end"):
            front_end = LowRankConfig(**card["front_end"])
    if solver:
        network.deq.config = replace(network.deq.config, **solver)
    from hsidenoise.model.subspace_decsc import SubspaceDECSC

    if isinstance(network, SubspaceDECSC):  # works on the eigen-images: no band windows
        from hsidenoise.model.adapt import AdaptConfig
        from hsidenoise.methods.decsc import build_subspace_decsc

        adaptation = AdaptConfig(seconds=adapt_seconds) if adapt_seconds > 0 else None
        return build_subspace_decsc(network, front_end=front_end, device=torch_device, adaptation=adaptation)
    if adapt_seconds > 0:
        raise ConfigError(
            "--adapt needs subspace DECSC weights (preset subspace); the band-window model cannot adapt; drop --adapt"
        )
    if config.band_window != network.config.bands:
        raise ConfigError(
            f"--band-window {config.band_window} does not match the model's {network.config.bands}-band window; "
            f"leave it at {network.config.bands} for DECSC"
        )
    return DECSCDenoiser(
        network,
        front_end=front_end,
        device=torch_device,
        config=InferenceConfig(window_batch=window_batch or (16 if torch_device.type == "cuda" else 1)),
        band_stride=config.band_stride,
    )
