"""The subspace DECSC as an eigen-image denoiser of the one subspace pipeline (``--method decsc``).

``--method decsc`` with subspace weights is :class:`hsidenoise.subspace.LowRankDenoiser` with
:class:`DECSCEigenImageDenoiser` as its step 5 (:func:`build_subspace_decsc`): the pipeline fits the front end
(noise, whitening, Marchenko-Pastur subspace) on the whole-cube pixel sample exactly as ``--method lowrank``
does and, per tile, projects it on the subspace (k eigen-images with unit noise). This eigen-image denoiser
then takes the DCT (or BM3D) pilot of each eigen-image and corrects it with one model call on the (1, k, h, w)
stack and the components' eigenvalues; the pipeline back-projects to the bands. Any band count runs through
one model call per tile; there are no band windows. The eigenvalues come from the whole cube, so tiles of one
scene see one model of the noise and no seams appear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from hsidenoise.model.adapt import AdaptConfig, AdaptResult
    from hsidenoise.model.dct_csc import DCTCSC
    from hsidenoise.model.solver import SolverStats
    from hsidenoise.model.subspace_decsc import SubspaceDECSC
    from hsidenoise.denoiser import Denoiser
    from hsidenoise.subspace import EigenImageDenoiser, LowRankConfig, LowRankDenoiser, Subspace
    from hsidenoise.tiling import TileConfig


def solver_facts(stats: SolverStats) -> dict[str, float]:
    """What a tile's solve did, for the run report: ``evaluations`` (mean per eigen-image, phantom steps
    included), ``max_residual``, ``converged`` (the share that met ``tol``) and ``tol``."""
    return {
        "evaluations": float(stats.evaluations.float().mean()) + stats.extra_evaluations,
        "max_residual": float(stats.residual.max()),
        "converged": float(stats.converged.float().mean()),
        "tol": float(stats.tol),
    }


def _as_batch(array: np.ndarray, model: DCTCSC, device: torch.device) -> torch.Tensor:
    """``array`` as a batch of one in the model's precision on ``device``."""
    import torch

    dtype = next(model.parameters()).dtype
    return torch.from_numpy(np.array(array, dtype=np.float64)).to(device=device, dtype=dtype)[None]


def correct_eigenimages(
    model: SubspaceDECSC, eigen: np.ndarray, pilot: np.ndarray, eigenvalues: np.ndarray, device: torch.device
) -> tuple[np.ndarray, dict[str, float]]:
    """One model call on one tile's eigen-images.

    Args:
        eigen, pilot: (k, h, w) in whitened units; eigenvalues: (k,).

    Returns:
        (corrected (k, h, w) float64, solver facts: ``evaluations``, ``max_residual``, ``converged`` (1.0 when
        the solve met ``tol``, else 0.0) and ``tol``).
    """
    import torch

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)

    pilot_t = tensor(pilot)
    corrected, stats = model(tensor(eigen), pilot_t, tensor(eigenvalues))
    facts = solver_facts(stats)
    # the correction is added in float64, so that a zero correction returns the front end's pilot bit for bit
    correction = (corrected.float() - pilot_t)[0].double().cpu().numpy()
    return np.asarray(pilot, dtype=np.float64) + correction, facts


def solve_eigenimages(
    model: DCTCSC, eigen: np.ndarray, noise: np.ndarray, eigenvalues: np.ndarray, device: torch.device
) -> tuple[np.ndarray, dict[str, float]]:
    """One call of a model that computes the front end's DCT itself (:class:`hsidenoise.model.dct_csc.DCTCSC`).

    Args:
        eigen: (k, h, w) in whitened units; noise: (k,) each eigen-image's noise level; eigenvalues: (k,).

    Returns:
        (denoised (k, h, w) float64, solver facts as :func:`correct_eigenimages`'s).
    """
    denoised, stats = model(
        _as_batch(eigen, model, device), None, _as_batch(eigenvalues, model, device), noise=_as_batch(noise, model, device)
    )
    facts = solver_facts(stats)
    return denoised[0].double().cpu().numpy(), facts


def solve_with_response(
    model: DCTCSC,
    eigen: np.ndarray,
    noise: np.ndarray,
    eigenvalues: np.ndarray,
    device: torch.device,
    perturbation: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """:func:`solve_eigenimages` as the band blend needs it
    (:meth:`hsidenoise.model.dct_csc.DCTCSC.solve_with_response`).

    Args:
        eigen, perturbation: (k, h, w) in whitened units; noise, eigenvalues: (k,).

    Returns:
        the front end FE0 (k, h, w), the model's changes to it (2, k, h, w: the trained second stage's and the
        equilibrium's) and their responses to ``perturbation`` (2, k, h, w), float64, and the solver facts (the
        first solve's).
    """
    departure, changes, responses, stats = model.solve_with_response(
        _as_batch(eigen, model, device), _as_batch(eigenvalues, model, device), _as_batch(noise, model, device),
        _as_batch(perturbation, model, device),
    )  # fmt: skip
    facts = solver_facts(stats)
    departure = departure[0].double().cpu().numpy()
    changes, responses = (t[:, 0].double().cpu().numpy() for t in (changes, responses))
    return np.asarray(eigen, dtype=np.float64) - departure, changes, responses, facts


def _levels(noise: float | np.ndarray, eigen_images: np.ndarray) -> np.ndarray:
    """The noise level of each of the (k, h, w) eigen-images: (k,)."""
    return np.broadcast_to(np.asarray(noise, dtype=np.float64), (eigen_images.shape[0],))


class DECSCEigenImageDenoiser:
    """The subspace DECSC behind :class:`hsidenoise.subspace.EigenImageDenoiser`: pilot, then model correction.

    Args:
        model: the network (put in eval mode, difference convolutions folded).
        pilot: the classical eigen-image denoiser whose output the model corrects (the DCT the weights were
            trained with, by default).
        device: where the model runs (the pilot runs on the CPU in numpy).
        adaptation: ``--adapt``: self-supervised adaptation to each cube before it is denoised; None: none.
        band_blend: a model that computes its own front end (DCT-CSC) returns it, its change and the change's
            response to a probe too, and the pipeline keeps, per band, the share of the change that SURE chooses
            (:mod:`hsidenoise.subspace.band_blend`); False: the model's output as it is. Ignored for other models.
    """

    name = "decsc"

    def __init__(
        self,
        model: SubspaceDECSC | DCTCSC,
        *,
        pilot: EigenImageDenoiser,
        device: str | torch.device = "cpu",
        adaptation: AdaptConfig | None = None,
        band_blend: bool = True,
    ) -> None:
        import torch

        self.model = model.to(torch.device(device)).fold_for_inference()
        self.band_blend = band_blend and getattr(model, "owns_front_end", False)
        # the band blend's parts: the trained second stage is kept unless SURE is confident it hurts the band (it
        # helps on average: weighed from 0 like the equilibrium, the 12 validation cases gained +0.154 dB on average
        # against +0.206 with this default, bench/README.md), the equilibrium's change is weighed from 0
        self.blend_default: tuple[float | None, ...] = (1.0, None)
        self._blend_sum = 0.0
        self._blend_bands = 0
        self.original_model = self.model
        self.device = torch.device(device)
        self.pilot = pilot
        self.adaptation = adaptation
        self.adapt_result: AdaptResult | None = None
        self.last_facts: dict[str, float] = {}
        self._eigenvalues: np.ndarray | None = None
        self._tiles = 0
        self._evaluations = 0.0

    @property
    def corrected_pilot(self) -> EigenImageDenoiser | None:
        """The per-image denoiser whose output the model corrects (a subspace DECSC that takes a pilot), else None.

        The pipeline's component blend (:mod:`hsidenoise.subspace.component_blend`) runs it again on the components
        it weighs, so that a model whose correction is zero is the front end exactly. A DCT-CSC computes the front
        end itself and gets the blend inside its band blend, or not at all with ``band_blend`` off (its output as it
        is).
        """
        return None if getattr(self.model, "owns_front_end", False) else self.pilot

    @property
    def wants_samples(self) -> bool:
        """Whether :meth:`adapt_to` should be given crops of the cube after ``prepare`` (``--adapt``)."""
        return self.adaptation is not None and self.adaptation.seconds > 0

    def prepare(self, subspace: Subspace) -> None:
        """Take the cube's subspace (its eigenvalues condition the model); any earlier adaptation is dropped.

        Raises:
            ConfigError: the subspace has more components than the model takes.
        """
        self._tiles, self._evaluations = 0, 0.0
        self._blend_sum, self._blend_bands = 0.0, 0
        self.model, self.adapt_result = self.original_model, None
        if subspace.rank > self.model.config.max_components:
            raise ConfigError(
                f"the front end kept {subspace.rank} components, more than the model's "
                f"{self.model.config.max_components}; lower the front end's max_rank to the model's"
            )
        self._eigenvalues = np.asarray(subspace.eigenvalues[: subspace.rank], dtype=np.float64)

    def denoise(self, eigen_images: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
        """(k, h, w) whitened eigen-images of one tile, their noise std -> (k, h, w) float64.

        :attr:`last_facts` then holds the solve's ``evaluations`` (layer evaluations: solve, initial point,
        phantom steps), ``max_residual``, ``converged`` and ``tol`` (:func:`correct_eigenimages`).
        """
        import torch

        if self._eigenvalues is None:
            raise ConfigError("decsc: call prepare(stats) before denoising tiles")
        if getattr(self.model, "owns_front_end", False):  # DCT-CSC: the front end's DCT is the model's first layer
            with torch.inference_mode():
                corrected, facts = solve_eigenimages(
                    self.model, eigen_images, _levels(noise, eigen_images), self._eigenvalues, self.device
                )
        else:
            pilot = self.pilot.denoise(eigen_images, noise)
            with torch.inference_mode():
                corrected, facts = correct_eigenimages(self.model, eigen_images, pilot, self._eigenvalues, self.device)
        self._count(facts)
        return corrected

    def denoise_parts(
        self, eigen_images: np.ndarray, noise: float | np.ndarray, perturbation: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k, h, w) whitened eigen-images of one tile -> for the band blend, the front end (k, h, w), the model's
        changes to it (parts, k, h, w; they add up to the output minus the front end) and their responses to the
        (k, h, w) ``perturbation`` of the eigen-images (parts, k, h, w), float64. :attr:`last_facts` as
        :meth:`denoise`'s.
        """
        import torch

        if self._eigenvalues is None:
            raise ConfigError("decsc: call prepare(stats) before denoising tiles")
        with torch.inference_mode():
            front, change, response, facts = solve_with_response(
                self.model, eigen_images, _levels(noise, eigen_images), self._eigenvalues, self.device, perturbation
            )
        self._count(facts)
        return front, change, response

    def _count(self, facts: dict[str, float]) -> None:
        """One tile's solver facts: :attr:`last_facts` and the run's totals (:meth:`info`)."""
        self.last_facts = facts
        self._tiles += 1
        self._evaluations += facts["evaluations"]

    def record_blend(self, beta: np.ndarray) -> None:
        """Add one tile's blend weights (parts, B) to the run's mean (:meth:`info`)."""
        self._blend_sum += float(np.sum(beta))
        self._blend_bands += int(np.size(beta))

    def adapt_to(
        self, eigen_images: Sequence[np.ndarray], progress: Callable[[float, float], None] | None = None
    ) -> AdaptResult:
        """Fine-tune the model on eigen-image crops of this cube by SURE (see :mod:`hsidenoise.model.adapt`).

        Args:
            eigen_images: (k, h, w) whitened eigen-images of crops of the cube (after ``prepare``).
            progress: called with (seconds spent, seconds allowed).

        Returns:
            What happened; the adapted weights are used for the following tiles only if they measured better.
        """
        from hsidenoise.model.adapt import AdaptConfig, EigenCrop, adapt

        if self._eigenvalues is None:
            raise ConfigError("decsc: call prepare(stats) before adapt_to(crops)")

        def pilot_of(eigen: np.ndarray) -> np.ndarray:
            return self.pilot.denoise(eigen, 1.0)

        eigen_crops = [EigenCrop(eigen, pilot_of(eigen)) for eigen in eigen_images]
        model, result = adapt(
            self.original_model.cpu(), eigen_crops, self._eigenvalues, pilot_of, self.adaptation or AdaptConfig(),
            progress=progress,
        )  # fmt: skip
        self.model = model.to(self.device).eval()
        self.adapt_result = result
        return result

    def info(self) -> dict[str, Any]:
        """Preset, device, adaptation and solver work, for the run report."""
        from dataclasses import asdict

        from hsidenoise.model import preset_name

        preset = preset_name(self.model.config)
        return {
            "preset": preset or "custom",
            "device": str(self.device),
            "adaptation": None if self.adapt_result is None else asdict(self.adapt_result),
            "tiles": self._tiles,
            "evaluations_per_tile": self._evaluations / self._tiles if self._tiles else None,
            "band_blend": self.band_blend,
            "band_blend_mean_weight": self._blend_sum / self._blend_bands if self._blend_bands else None,
        }


def build_subspace_decsc(
    model: SubspaceDECSC | DCTCSC,
    *,
    front_end: LowRankConfig | None = None,
    device: str | torch.device = "cpu",
    adaptation: AdaptConfig | None = None,
    band_blend: bool = True,
    component_blend: bool = True,
) -> LowRankDenoiser:
    """``--method decsc`` with subspace weights: the subspace pipeline with the model as its eigen-image denoiser.

    Args:
        model: the network.
        front_end: the pipeline settings the weights were trained with (DCT pilot by default).
        device: where the model runs.
        adaptation: ``--adapt`` settings; None: no adaptation.
        band_blend: the per-band SURE blend of a DCT-CSC's change (:class:`DECSCEigenImageDenoiser`).
        component_blend: the components nearest the edge weighed per band in its front end
            (:mod:`~hsidenoise.subspace.component_blend`).
    """
    from dataclasses import replace

    from hsidenoise.subspace import LowRankConfig, LowRankDenoiser, spatial_denoiser

    config = replace(front_end or LowRankConfig(spatial="dct"), component_blend=component_blend)
    decsc = DECSCEigenImageDenoiser(
        model, pilot=spatial_denoiser(config), device=device, adaptation=adaptation, band_blend=band_blend
    )
    return LowRankDenoiser(config, decsc, name="decsc")


def build_decsc(
    *,
    config: TileConfig,
    model: str | None = None,
    device: str = "auto",
    window_batch: int | None = None,
    solver: dict[str, float | int] | None = None,
    adapt_seconds: float = 0.0,
    band_blend: bool = True,
    component_blend: bool = True,
) -> Denoiser:
    """``--method decsc``: the network named by ``model`` (a preset, untrained, or a weights path; None: the
    shipped weights) as the method its family makes: the subspace DECSC through :func:`build_subspace_decsc`,
    the band-window DECSC (``paper``) through :class:`hsidenoise.methods.decsc_bands.DECSCDenoiser`.

    Arguments as :func:`hsidenoise.methods.build_method`'s.

    Raises:
        ConfigError: an unknown preset, no weights, ``--adapt`` on a band-window model, or a band window that is
            not the model's.
        CheckpointError: a weights file that is missing, corrupt or mismatched.
    """
    from dataclasses import replace

    from hsidenoise.device import select_device
    from hsidenoise.model import PRESETS, build_model, find_default_weights, load_weights
    from hsidenoise.model.decsc import EIGEN_MODELS
    from hsidenoise.subspace import LowRankConfig

    torch_device = select_device(device)
    front_end = None
    if model is not None and model in PRESETS:
        network = build_model(model).fold_for_inference()
    else:
        path = model if model is not None else find_default_weights()
        if path is None:
            raise ConfigError(
                "no DECSC weights found in weights/ (decsc-dctcsc-coupled.safetensors + .json); pass --model PATH, "
                "train some with hsidenoise train, or use --method lowrank"
            )
        network, _, card = load_weights(path, device=torch_device)
        if card.get("front_end"):
            front_end = LowRankConfig(**card["front_end"])
    if solver:
        network.deq.config = replace(network.deq.config, **solver)
    if isinstance(network, EIGEN_MODELS):  # works on the eigen-images: no band windows
        from hsidenoise.model.adapt import AdaptConfig

        adaptation = AdaptConfig(seconds=adapt_seconds) if adapt_seconds > 0 else None
        return build_subspace_decsc(
            network, front_end=front_end, device=torch_device, adaptation=adaptation, band_blend=band_blend,
            component_blend=component_blend,
        )  # fmt: skip
    if adapt_seconds > 0:
        raise ConfigError(
            "--adapt needs subspace DECSC weights (preset subspace); the band-window model cannot adapt; drop --adapt"
        )
    if config.band_window != network.config.bands:
        raise ConfigError(
            f"--band-window {config.band_window} does not match the model's {network.config.bands}-band window; "
            f"leave it at {network.config.bands} for DECSC"
        )
    from hsidenoise.methods.decsc_bands import DECSCDenoiser, InferenceConfig

    return DECSCDenoiser(
        network,
        front_end=replace(front_end or LowRankConfig(spatial="dct"), component_blend=component_blend),
        device=torch_device,
        config=InferenceConfig(window_batch=window_batch or (16 if torch_device.type == "cuda" else 1)),
        band_stride=config.band_stride,
    )
