"""The registry behind ``hsidenoise run --method`` (step 5 of the data flow): :data:`METHODS` and :func:`build_method`.

Each entry is a :class:`MethodSpec` carrying its description, the options it reads and its builder (as
xarray's backend entry points carry their opener). The DECSC builder, :func:`hsidenoise.methods.decsc.build_decsc`,
chooses between the subspace DECSC (:mod:`~hsidenoise.methods.decsc`) and the band-window DECSC of the ``paper``
preset (:mod:`~hsidenoise.methods.decsc_bands`) from the weights. Each method implements the :class:`hsidenoise.denoiser.Denoiser` protocol (defined in its own module, so that
the methods never import this registry back). A method's module is imported when it is built, so importing the
registry loads neither torch nor the models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hsidenoise.denoiser import Denoiser, IdentityDenoiser
from hsidenoise.errors import ConfigError
from hsidenoise.tiling import TileConfig

@dataclass(frozen=True)
class MethodSpec:
    """One entry of :data:`METHODS`: what ``run --method NAME`` is and how it is built.

    Attributes:
        description: one line, as ``hsidenoise models`` shows it.
        options: the keyword arguments of :func:`build_method` the method reads beyond ``config``; the others
            are ignored, except a positive ``adapt_seconds``, which a method without it refuses.
        build: keyword arguments (those named in ``options``, plus ``config``) -> the method; imports its module
            only when called, so the registry loads neither torch nor the models.
    """

    description: str
    options: tuple[str, ...]
    build: Callable[..., Denoiser]


def _identity(**_: Any) -> Denoiser:
    return IdentityDenoiser()


def _lowrank(*, spatial: str, device: str, component_blend: bool = True, **_: Any) -> Denoiser:
    from hsidenoise.device import lowrank_device
    from hsidenoise.subspace import LowRankConfig, LowRankDenoiser
    from hsidenoise.subspace.eigenimages import resolve_spatial

    config = LowRankConfig(spatial=spatial, component_blend=component_blend)
    gpu = lowrank_device(device) if resolve_spatial(spatial) == "dct" else None
    if gpu is None:
        return LowRankDenoiser(config)
    from hsidenoise.subspace.dct_torch import TorchDCTDenoiser  # the eigen-image DCT on the GPU

    return LowRankDenoiser(config, TorchDCTDenoiser(config.dct_threshold, gpu))


def _decsc(**options: Any) -> Denoiser:
    from hsidenoise.methods.decsc import build_decsc

    return build_decsc(**options)


METHODS: dict[str, MethodSpec] = {
    "decsc": MethodSpec(
        "the DECSC network (shipped subspace weights by default, or --model PRESET|PATH)",
        ("model", "device", "window_batch", "solver", "adapt_seconds", "band_blend", "component_blend"),
        _decsc,
    ),
    "lowrank": MethodSpec(
        "weight-free: noise estimate, whitened signal subspace, denoised eigen-images (fast)",
        ("spatial", "device", "component_blend"),
        _lowrank,
    ),
    "identity": MethodSpec("returns the input unchanged (measures the pipeline alone)", (), _identity),
}
"""Method name -> :class:`MethodSpec`: the registry behind ``hsidenoise run --method``."""


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
    band_blend: bool = True,
    component_blend: bool = True,
) -> Denoiser:
    """The denoiser behind ``--method name``.

    Args:
        name: a key of :data:`METHODS`.
        model: ``decsc`` only: a preset name (an untrained network; for tests and timing) or a weights
            path; None takes the shipped weights (:func:`hsidenoise.model.find_default_weights`).
        device: ``auto``, ``cpu`` or ``cuda`` (:func:`hsidenoise.device.select_device`); ``lowrank`` runs its
            eigen-image DCT there when it is a GPU (:func:`hsidenoise.device.lowrank_device`), else numpy.
        config: the tiling (its band window must match the model's, its stride is used).
        window_batch: band windows per model call; None: 1 on the CPU (measured fastest: smaller working
            set, `bench/README.md`), 16 on CUDA as the floor of a batch sized from free GPU memory.
        solver: overrides of the model's :class:`hsidenoise.model.solver.SolverConfig` fields (e.g. ``max_iter``).
        adapt_seconds: ``decsc`` with subspace weights only: seconds of self-supervised adaptation to each cube
            before it is denoised (``--adapt``; 0: none). Other methods refuse a positive value.
        spatial: ``lowrank`` only: the eigen-image denoiser (``auto``, ``bm3d``, ``dct``, ``none``). DECSC's
            front end always uses the one its weights were trained with.
        band_blend: ``decsc`` with DCT-CSC weights: keep per band the share of the model's change that SURE
            chooses (:mod:`hsidenoise.subspace.band_blend`; ``--no-band-blend``: the model's output as it is).
        component_blend: ``lowrank`` and the subspace ``decsc``: each band keeps the components nearest the edge in
            the share SURE chooses (:mod:`hsidenoise.subspace.component_blend`; ``--no-component-blend``: the
            edge's rank for every band, faster).

    Raises:
        ConfigError: an unknown method or preset, a band window that is not the model's, or no weights.
        CheckpointError: a weights file that is missing, corrupt or mismatched.
    """
    config = config if config is not None else TileConfig()
    spec = METHODS.get(name)
    if adapt_seconds > 0 and (spec is None or "adapt_seconds" not in spec.options):
        raise ConfigError(f"--adapt adapts the DECSC model; --method {name} has nothing to adapt; drop --adapt")
    if spec is None:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    given = {
        "model": model,
        "device": device,
        "window_batch": window_batch,
        "solver": solver,
        "spatial": spatial,
        "adapt_seconds": adapt_seconds,
        "band_blend": band_blend,
        "component_blend": component_blend,
    }
    return spec.build(config=config, **{option: given[option] for option in spec.options})
