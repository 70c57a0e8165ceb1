"""What the training loop does differently per model family: a :class:`Family` strategy each
(:class:`BandWindowFamily`, :class:`SubspaceFamily`), picked by :func:`family_of`.

:mod:`hsidenoise.training.loop` runs one loop for every model family, with no branch on it; for a subspace model
the family supplies

- the sampler (:class:`hsidenoise.training.subspace_pairs.SubspaceSampler`, built from the run's sampler settings),
- the loss (:mod:`hsidenoise.training.losses`): ``mse``, the mean squared error of the corrected eigen-images
  against the clean projection in whitened units over the real (unpadded) components (it weighs each band's
  data-unit error by 1 / sigma_b²), or ``mpsnr``, minus the per-band MPSNR of the eigen-images mapped back to
  data units as the pipeline maps them (each band's error by 1 / its MSE, as the users' metric does),
- the validation: the real inference path (:func:`hsidenoise.denoise.denoise_array` with
  :func:`hsidenoise.methods.decsc.build_subspace_decsc`) on fixed noisy crops of the validation
  cubes, next to the front end alone (``--method lowrank`` with the same settings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsidenoise.errors import ConfigError
from hsidenoise.noise import add_noise
from hsidenoise.training.data import SamplerConfig, TrainingCube
from hsidenoise.training.losses import back_projected_mpsnr, eigen_mse, window_loss
from hsidenoise.training.subspace_pairs import EigenBatch, SubspaceSamplerConfig

if TYPE_CHECKING:
    import torch

    from hsidenoise.model.subspace_decsc import SubspaceDECSC
    from hsidenoise.training.config import TrainConfig
    from hsidenoise.training.validation import ValidationScore


def subspace_sampler_config(sampler: SamplerConfig | SubspaceSamplerConfig) -> SubspaceSamplerConfig:
    """The subspace sampler settings for a run: as given, or carried over from band-window settings
    (noise mix, patch side, examples per round; the front end's pilot is the DCT)."""
    if isinstance(sampler, SubspaceSamplerConfig):
        return sampler
    from dataclasses import replace

    front_end = sampler.front_end
    if front_end.spatial not in ("dct", "none"):
        front_end = replace(front_end, spatial="dct")
    defaults = SubspaceSamplerConfig()
    return SubspaceSamplerConfig(
        noise=sampler.noise,
        patch_size=sampler.patch_size,
        region_size=max(defaults.region_size, sampler.patch_size),
        patches_per_round=sampler.patches_per_cube,
        front_end=front_end,
        front_end_pixels=sampler.front_end_pixels,
    )


SURE_EPSILON = 1e-2
"""Monte-Carlo divergence step of the self-supervised loss, unit-noise units."""

SUBSPACE_LOSSES = ("mse", "mpsnr")
"""The losses a subspace model trains with (``logmse`` is the band-window family's)."""


def subspace_loss(
    network: torch.nn.Module,
    batch: EigenBatch,
    *,
    sampler: SubspaceSamplerConfig | None = None,
    rng: np.random.Generator | None = None,
    loss: str = "mse",
) -> torch.Tensor:
    """The loss of one batch of a subspace model.

    ``loss="mse"``: masked MSE of the corrected eigen-images (unit-noise units), mean over real components and
    pixels (:func:`hsidenoise.training.losses.eigen_mse`). ``loss="mpsnr"``: minus the mean per-band PSNR of
    the corrected eigen-images mapped back to data units (:func:`hsidenoise.training.losses.back_projected_mpsnr`).
    With a self-supervised ``sampler`` (no clean target) the loss is instead the Monte-Carlo SURE of
    :func:`hsidenoise.model.adapt.sure_batch`, whose expectation is the eigen-image MSE; ``rng`` draws its probes.

    Raises:
        ConfigError: an unknown ``loss``.
    """
    if loss not in SUBSPACE_LOSSES:
        raise ConfigError(f"a subspace model trains with --loss {' or '.join(SUBSPACE_LOSSES)}; got {loss!r}")
    if sampler is not None and sampler.self_supervised:
        from hsidenoise.model.adapt import sure_batch
        from hsidenoise.subspace import spatial_denoiser

        def pilot_of(eigen: np.ndarray) -> np.ndarray:
            return spatial_denoiser(sampler.front_end).denoise(eigen, 1.0)

        return sure_batch(
            network, batch.eigen, batch.pilot, batch.eigenvalues, batch.mask, pilot_of, SURE_EPSILON,
            rng if rng is not None else np.random.default_rng(0),
        )  # fmt: skip
    corrected, _ = network(batch.eigen, batch.pilot, batch.eigenvalues, batch.mask, noise=batch.noise)
    if loss == "mpsnr":
        return back_projected_mpsnr(corrected, batch)
    return eigen_mse(corrected, batch)


@dataclass(frozen=True, eq=False)
class SubspaceValidationCase:
    """A fixed noisy crop of a validation cube and the front end's output on it ([0, 1] cube units).

    Attributes:
        name: ``"cube/recipe"``.
        clean, noisy, front_end: (B, h, w) float32.
    """

    name: str
    clean: np.ndarray
    noisy: np.ndarray
    front_end: np.ndarray


def prepare_subspace_validation(
    paths: Sequence[Path], sampler: SubspaceSamplerConfig, *, crop: int, seed: int
) -> list[SubspaceValidationCase]:
    """One case per validation cube and noise recipe: central crop, fixed-seed noise, the front end's output."""
    from hsidenoise.denoise import denoise_array
    from hsidenoise.subspace import LowRankDenoiser
    from hsidenoise.training.validation import central_window

    cases = []
    for cube_index, path in enumerate(paths):
        cube = TrainingCube.load(Path(path))
        _, rows, cols = cube.data.shape
        clean = np.ascontiguousarray(cube.data[central_window(rows, cols, crop)])
        for recipe_index, spec in enumerate(dict.fromkeys(spec for spec, _ in sampler.noise)):
            noisy = add_noise(clean, spec, np.random.default_rng([seed, cube_index, recipe_index])).noisy
            front_end = denoise_array(noisy, LowRankDenoiser(sampler.front_end))
            cases.append(SubspaceValidationCase(f"{cube.name}/{spec.recipe}", clean, noisy, front_end))
    return cases


def validate_subspace(
    model: SubspaceDECSC, cases: Sequence[SubspaceValidationCase], sampler: SubspaceSamplerConfig, *, device: torch.device
) -> dict[str, tuple[float, float, float]]:
    """``"cube/recipe"`` -> (model, front end, noisy) MPSNR through the real inference path."""
    from hsidenoise.denoise import denoise_array
    from hsidenoise.quality.metrics import mpsnr
    from hsidenoise.methods.decsc import build_subspace_decsc

    denoiser = build_subspace_decsc(model, front_end=sampler.front_end, device=device)
    return {
        case.name: (
            mpsnr(denoise_array(case.noisy, denoiser), case.clean),
            mpsnr(case.front_end, case.clean),
            mpsnr(case.noisy, case.clean),
        )
        for case in cases
    }


# ------------------------------------------------------------------------------------------ the two families


class Family:
    """What the training loop asks of a model family: its band window, validation cases, sampler, loss, score,
    parameter groups and the front end its card records. :func:`family_of` picks the one for a model; the loop
    (:mod:`hsidenoise.training.loop`) has no branch on the family.

    Args:
        cfg: the run's settings.
        model: the network being trained.
    """

    name: str = ""

    def __init__(self, cfg: TrainConfig, model: Any) -> None:
        self.cfg = cfg
        self.model = model

    @property
    def band_window(self) -> int:
        """The fewest bands a training cube needs."""
        raise NotImplementedError

    @property
    def card_front_end(self) -> Any:
        """The front-end settings the model card records (None: the model uses none)."""
        raise NotImplementedError

    def validation_cases(self) -> list[Any]:
        """Fixed noisy crops of the validation cubes (computed once, on the main process)."""
        raise NotImplementedError

    def sampler(self, cubes: Sequence[TrainingCube], rng: np.random.Generator, on_round: Callable[[int], None]) -> Any:
        """The sampler of training batches (its state is part of the checkpoint)."""
        raise NotImplementedError

    def loss(self, network: torch.nn.Module, batch: Any, key: tuple[int, int, int]) -> torch.Tensor:
        """The loss of one batch; ``key`` = (seed, rank, step) seeds any randomness of the loss (resumable)."""
        raise NotImplementedError

    def validate(self, cases: Sequence[Any], device: torch.device) -> ValidationScore:
        """The model's score on the validation cases."""
        raise NotImplementedError

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Adam's parameter groups: one, by default."""
        return [{"params": list(self.model.parameters())}]


class BandWindowFamily(Family):
    """The band-window DECSC (``paper``): random windows of ``band_window`` bands, normalised as at inference
    (:class:`hsidenoise.training.data.PatchSampler`), MSE or log-MSE against the clean window."""

    name = "band-window"

    def __init__(self, cfg: TrainConfig, model: Any) -> None:
        super().__init__(cfg, model)
        from hsidenoise.training.data import LowRankFrontEnd
        from hsidenoise.training.validation import band_window_of

        self._band_window = band_window_of(model)
        self.front_end = LowRankFrontEnd.from_sampler(cfg.sampler) if model.config.noise_aware else None

    @property
    def band_window(self) -> int:
        return self._band_window

    @property
    def card_front_end(self) -> Any:
        return self.cfg.sampler.front_end if self.front_end else None

    def validation_cases(self) -> list[Any]:
        from hsidenoise.training.validation import prepare_validation

        cfg = self.cfg
        return prepare_validation(
            cfg.validation, cfg.sampler, band_window=self.band_window, crop=cfg.validation_crop, front_end=self.front_end
        )

    def sampler(self, cubes: Sequence[TrainingCube], rng: np.random.Generator, on_round: Callable[[int], None]) -> Any:
        from hsidenoise.training.data import PatchSampler

        return PatchSampler(
            cubes, self.cfg.sampler, band_window=self.band_window, rng=rng, front_end=self.front_end, on_round=on_round
        )

    def loss(self, network: torch.nn.Module, batch: Any, key: tuple[int, int, int]) -> torch.Tensor:
        output, _ = network(batch.noisy, init=batch.init, sigma=batch.sigma)
        return window_loss(self.cfg.loss, output.float(), batch.clean)

    def validate(self, cases: Sequence[Any], device: torch.device) -> ValidationScore:
        from hsidenoise.training.validation import validate

        return validate(self.model, cases, device=device)


SYNTHETIC_NOISE = (0.5, 1.0)
"""Per-component noise levels of synthetic pairs for models that take the level as an input (DCT-CSC): the
range the front end's eigen-images carry on the shared cubes (``shared/reference/learned-eigenimage-notes.md``)."""

THRESHOLD_LR_FACTOR = 10.0
"""Thresholds (``rho``: theta = tau softplus(rho)) and their SNR gains learn this much faster than the rest, and so
do DCT-CSC's scalar knobs (its equilibrium gate and mix, Wiener and coupling functions)."""
FAST_PARAMETERS = ("rho", "snr_gain", "gate", "mix", "wiener", "coupling", "slots")


class SubspaceFamily(Family):
    """The eigen-image models (``subspace``, ``dctcsc``): eigen-domain pairs (:class:`hsidenoise.training.subspace_pairs.SubspaceSampler`),
    :func:`subspace_loss`, validation through the real inference path (:func:`validate_subspace`)."""

    name = "subspace"

    def __init__(self, cfg: TrainConfig, model: Any) -> None:
        super().__init__(cfg, model)
        self.settings = subspace_sampler_config(cfg.sampler)
        if getattr(model, "owns_front_end", False) and self.settings.synthetic_noise == (1.0, 1.0):
            from dataclasses import replace

            # a model told each eigen-image's level learns on the levels the pipeline produces, not unit noise
            self.settings = replace(self.settings, synthetic_noise=SYNTHETIC_NOISE)
        if cfg.loss not in SUBSPACE_LOSSES:
            raise ConfigError(f"a subspace model trains with --loss {' or '.join(SUBSPACE_LOSSES)}; got {cfg.loss!r}")
        if self.settings.self_supervised and cfg.loss != "mse":
            raise ConfigError("--self-supervised trains on SURE (no clean cube to compare bands with); drop --loss")

    @property
    def band_window(self) -> int:
        return 2  # the subspace model takes any band count >= 2

    @property
    def card_front_end(self) -> Any:
        return self.settings.front_end

    def validation_cases(self) -> list[Any]:
        from hsidenoise.training.validation import VALIDATION_SEED

        return prepare_subspace_validation(
            self.cfg.validation, self.settings, crop=self.cfg.validation_crop, seed=VALIDATION_SEED
        )

    def sampler(self, cubes: Sequence[TrainingCube], rng: np.random.Generator, on_round: Callable[[int], None]) -> Any:
        from hsidenoise.training.subspace_pairs import SubspaceSampler

        return SubspaceSampler(cubes, self.settings, rng=rng, on_round=on_round)

    def loss(self, network: torch.nn.Module, batch: Any, key: tuple[int, int, int]) -> torch.Tensor:
        return subspace_loss(
            network, batch, sampler=self.settings, rng=np.random.default_rng(list(key)), loss=self.cfg.loss
        )

    def validate(self, cases: Sequence[Any], device: torch.device) -> ValidationScore:
        """Mean (model, front end, noisy) MPSNR over the cases; the random state and the model's mode untouched."""
        import torch

        from hsidenoise.training.validation import mean_score

        was_training = self.model.training
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                return mean_score(validate_subspace(self.model, cases, self.settings, device=device))
        finally:
            self.model.train(was_training)

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The thresholds get their own, larger learning rate (:data:`THRESHOLD_LR_FACTOR`)."""
        named = list(self.model.named_parameters())
        thresholds = [p for name, p in named if name.endswith(FAST_PARAMETERS)]
        rest = [p for name, p in named if not name.endswith(FAST_PARAMETERS)]
        return [{"params": rest}, {"params": thresholds, "lr": lr * THRESHOLD_LR_FACTOR}]


def family_of(cfg: TrainConfig, model: Any) -> Family:
    """The family of ``model`` (by its config's type).

    Raises:
        ConfigError: subspace training settings for a band-window model.
    """
    from hsidenoise.model.decsc import EIGEN_CONFIGS

    if isinstance(model.config, EIGEN_CONFIGS):
        return SubspaceFamily(cfg, model)
    if isinstance(cfg.sampler, SubspaceSamplerConfig):
        raise ConfigError(
            "subspace training settings (self-supervised or eigen-domain pairs) need a subspace DECSC model; "
            "use --preset subspace or subspace weights"
        )
    return BandWindowFamily(cfg, model)
