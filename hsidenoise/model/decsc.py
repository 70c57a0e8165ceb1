"""DECSC: the deep-equilibrium convolutional sparse coding network, its config and its presets.

X = C + U (eq. 2): C = K (x) S, global inter-band common structures with codes S shared by all bands (GIC
layer), U = D * H, local spatial-spectral unique structures with 3-D atoms (LSU layer). One layer of the
equilibrium is the Gauss-Seidel ISTA update of S, then of H (eq. 20); its fixed point (S*, H*) (eq. 14) is
found by Anderson acceleration without gradient and differentiated by the phantom gradient
(:mod:`hsidenoise.model.deq`); the output is X-hat = K (x) S* + D * H* (eq. 21).

Noise-aware mode (``noise_aware=True``; no shipped preset uses it since ``lite`` was retired, the subspace DECSC
of :mod:`hsidenoise.model.subspace_decsc` works the same way on eigen-images): the network does not denoise the noisy window
itself but the whitened residual of a classical estimate, r = (noisy - init) / sigma, which has unit noise in
every band, and returns init + sigma * X-hat(r). A band with little noise thus receives a correction scaled by
its small sigma, and the soft thresholds act on unit-noise data. Paper mode (``noise_aware=False``) is plain
DECSC on the noisy window, blind to the noise, as in the paper.

Cycle spinning (``shifts`` > 1, the authors' "data_stride"): the window is replicated shifts^2 times with
sub-stride offsets (reflect padding), each copy is solved as its own sample, and the outputs are aligned
back and averaged, so that strided dictionaries stay shift-invariant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hsidenoise.model.deq import DEQ
from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.model.diffconv import DifferenceConv3d
from hsidenoise.model.gic import GICLayer, ResidualConvPrior
from hsidenoise.model.lsu import LSULayer
from hsidenoise.model.swin import SwinPrior
from hsidenoise.model.solver import SolverConfig, SolverStats, config_with_solver

SIGMA_FLOOR = 1e-4
"""Per-band noise levels are clamped from below to this before whitening (in the data's units)."""


@dataclass(frozen=True)
class DECSCConfig:
    """The architecture and solver of one DECSC network. The defaults are the paper's network.

    Attributes:
        bands: B, the band window; the per-band GIC dictionaries fix it.
        gic_atoms: M, atoms of the shared 2-D dictionary.
        gic_kernel: k, GIC atoms are k x k.
        gic_stride: spatial stride of the GIC dictionaries.
        lsu_atoms: J, atoms of the 3-D dictionary.
        lsu_kernel: k, LSU atoms are 3 x k x k.
        lsu_stride: spatial stride of the LSU dictionaries.
        shifts: cycle-spinning factor (shifts^2 shifted copies are averaged; 1 = none).
        prior: Net1, ``"swin"`` (Swin blocks) or ``"conv"`` (residual 3x3 conv blocks).
        prior_depth: number of Swin or conv blocks.
        prior_width: token width (Swin) or hidden channels (conv).
        prior_heads: attention heads per Swin block.
        prior_window: Swin window side.
        prior_mlp_ratio: Swin MLP hidden width relative to ``prior_width``.
        noise_aware: denoise the whitened residual of ``init`` and scale the correction by sigma.
        threshold_init: initial soft-threshold lambda in input units (1 = unit noise for noise-aware).
        synthesis_init: the output (synthesis) dictionaries start as this multiple of the data-term ones;
            noise-aware models start near a zero correction (0.1): starting from a full-size correction that
            leaks noise, training first shrinks it by raising every threshold until no code survives, a
            dead zone of the soft threshold with no gradient left (seen in a CPU trial).
        solver: Anderson and phantom-gradient settings.
    """

    bands: int = 31
    gic_atoms: int = 192
    gic_kernel: int = 9
    gic_stride: int = 7
    lsu_atoms: int = 96
    lsu_kernel: int = 9
    lsu_stride: int = 7
    shifts: int = 7
    prior: Literal["swin", "conv"] = "swin"
    prior_depth: int = 4
    prior_width: int = 192
    prior_heads: int = 16
    prior_window: int = 4
    prior_mlp_ratio: float = 4.0
    noise_aware: bool = False
    threshold_init: float = 0.1
    synthesis_init: float = 1.0
    solver: SolverConfig = field(default_factory=SolverConfig)

    def __post_init__(self) -> None:
        positive = (
            "gic_atoms",
            "gic_kernel",
            "gic_stride",
            "lsu_atoms",
            "lsu_kernel",
            "lsu_stride",
            "shifts",
            "prior_depth",
            "prior_width",
            "prior_heads",
            "prior_window",
        )
        bad = [f"{name}={getattr(self, name)}" for name in positive if getattr(self, name) < 1]
        if bad:
            raise ConfigError(f"DECSC config needs positive sizes; got {', '.join(bad)}")
        if self.bands < 3:
            raise ConfigError(f"DECSC needs a band window of at least 3 (3-band LSU atoms); got bands={self.bands}")
        if not (self.threshold_init >= 0 and self.synthesis_init > 0):
            raise ConfigError(
                "DECSC needs threshold_init >= 0 and synthesis_init > 0; "
                f"got threshold_init={self.threshold_init}, synthesis_init={self.synthesis_init}"
            )
        if self.prior not in ("swin", "conv"):
            raise ConfigError(f"prior must be 'swin' or 'conv'; got {self.prior!r}")
        if self.prior == "swin" and self.prior_width % self.prior_heads:
            raise ConfigError(
                "Swin width must be divisible by its heads; "
                f"got prior_width={self.prior_width}, prior_heads={self.prior_heads}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the solver as a nested dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DECSCConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`ConfigError`."""
        return config_with_solver(cls, data, "DECSC")


PRESETS: dict[str, DECSCConfig] = {
    # The paper's network (Sec. IV-A-4): M = 192 atoms 9x9, J = 96 atoms 3x9x9, 4 Swin blocks of width 192,
    # 16 heads, window 4, MLP ratio 4, 20 Anderson iterations, L = 5 phantom steps; strides 7 with 7x7 cycle
    # spinning as the authors' code most likely ran it (see ../shared/reference/peers-and-conventions.md §1.2).
    "paper": DECSCConfig(),
}


class DECSC(nn.Module):
    """The DECSC network (Fig. 2): GIC and LSU layers at equilibrium, reconstructed as C + U.

    Args:
        config: architecture and solver.

    Example:
        >>> small = DECSCConfig(gic_atoms=8, gic_stride=4, lsu_atoms=4, lsu_kernel=5, lsu_stride=4, shifts=1,
        ...                     prior="conv", prior_depth=1, prior_width=8, noise_aware=True)
        >>> model = DECSC(small).eval()
        >>> noisy = torch.rand(1, 31, 32, 32)
        >>> with torch.inference_mode():
        ...     clean, stats = model(noisy, init=noisy, sigma=torch.full((1, 31), 0.05))
        >>> clean.shape
        torch.Size([1, 31, 32, 32])
    """

    def __init__(self, config: DECSCConfig) -> None:
        super().__init__()
        self.config = config
        if config.prior == "swin":
            net1: nn.Module = SwinPrior(
                config.gic_atoms,
                config.prior_width,
                config.prior_depth,
                config.prior_heads,
                config.prior_window,
                config.prior_mlp_ratio,
            )
        else:
            net1 = ResidualConvPrior(config.gic_atoms, config.prior_width, config.prior_depth)
        self.gic = GICLayer(
            config.bands,
            config.gic_atoms,
            config.gic_kernel,
            config.gic_stride,
            net1,
            config.threshold_init,
            config.synthesis_init,
        )
        self.lsu = LSULayer(
            config.bands,
            config.lsu_atoms,
            config.lsu_kernel,
            config.lsu_stride,
            config.threshold_init,
            config.synthesis_init,
        )
        self.deq = DEQ(config.solver)

    def forward(
        self, noisy: Tensor, init: Tensor | None = None, sigma: Tensor | None = None
    ) -> tuple[Tensor, SolverStats]:
        """Denoise a batch of band windows.

        Args:
            noisy: (N, B, H, W) float in [0, 1], B = ``config.bands``.
            init: (N, B, H, W) the classical estimate to refine (noise-aware mode; zeros if None).
                Ignored in paper mode.
            sigma: (N, B) per-band noise standard deviation in the units of ``noisy`` (noise-aware mode,
                required; clamped below at :data:`SIGMA_FLOOR`). Ignored in paper mode.

        Returns:
            clean (N, B, H, W) and the solve's statistics per window (shifted copies merged, worst copy).
        """
        self._check_inputs(noisy, init, sigma)
        noisy = noisy.to(self.gic.encoder.dtype)
        if self.config.noise_aware:
            init = torch.zeros_like(noisy) if init is None else init.to(noisy.dtype)
            scale = sigma.to(noisy.dtype).clamp_min(SIGMA_FLOOR)[:, :, None, None]  # type: ignore[union-attr]
            target = (noisy - init) / scale  # whitened residual: unit noise in every band
        else:
            target = noisy
        correction, stats = self._equilibrium(self._spin(target))
        correction = self._unspin(correction, target.shape[-2:])
        if self.config.shifts > 1:
            stats = stats.grouped(self.config.shifts**2)
        if self.config.noise_aware:
            return init + scale * correction, stats
        return correction, stats

    def _check_inputs(self, noisy: Tensor, init: Tensor | None, sigma: Tensor | None) -> None:
        bands = self.config.bands
        if noisy.dim() != 4 or noisy.shape[1] != bands:
            raise CubeShapeError(
                f"DECSC expects noisy windows (N, {bands}, H, W); got {tuple(noisy.shape)}; split the cube into "
                f"{bands}-band windows (tiling.plan_band_windows)"
            )
        if min(noisy.shape[-2:]) < self.config.shifts:
            raise CubeShapeError(
                f"DECSC needs windows of at least {self.config.shifts} x {self.config.shifts} pixels; "
                f"got {tuple(noisy.shape)}"
            )
        if not self.config.noise_aware:
            return
        if init is not None and init.shape != noisy.shape:
            raise CubeShapeError(f"init must match noisy {tuple(noisy.shape)}; got {tuple(init.shape)}")
        if sigma is None:
            raise ConfigError(
                "this noise-aware DECSC needs sigma, the per-band noise std (N, B); got None; estimate it first "
                "(hsidenoise.subspace) or use the paper preset"
            )
        if tuple(sigma.shape) != tuple(noisy.shape[:2]):
            raise CubeShapeError(f"sigma must be (N, B) = {tuple(noisy.shape[:2])}; got {tuple(sigma.shape)}")

    def _spin(self, image: Tensor) -> Tensor:
        """(N, B, H, W) -> (N * shifts^2, B, H + shifts - 1, W + shifts - 1): copies offset by (dy, dx)."""
        s = self.config.shifts
        if s == 1:
            return image
        copies = [F.pad(image, (dx, s - 1 - dx, dy, s - 1 - dy), mode="reflect") for dy in range(s) for dx in range(s)]
        return torch.stack(copies, dim=1).flatten(0, 1)

    def _unspin(self, copies: Tensor, size: tuple[int, int]) -> Tensor:
        """Inverse of :meth:`_spin`: align the copies back and average them."""
        s = self.config.shifts
        if s == 1:
            return copies
        h, w = size
        copies = copies.view(-1, s * s, *copies.shape[1:])
        aligned = [copies[:, dy * s + dx, :, dy : dy + h, dx : dx + w] for dy in range(s) for dx in range(s)]
        return torch.stack(aligned, dim=1).mean(dim=1)

    def _equilibrium(self, target: Tensor) -> tuple[Tensor, SolverStats]:
        """Solve (S*, H*) for the injection ``target`` (N, B, H, W); return K (x) S* + D * H* (eq. 21)."""
        size = tuple(target.shape[-2:])
        step_s, step_h = self.gic.step_size(), self.lsu.step_size()

        def layer(state: tuple[Tensor, ...], injection: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
            """Eq. (20): update S from Y - K S - D H, then H from Y - K S_new - D H."""
            codes_s, codes_h = state
            (y,) = injection
            unique = self.lsu.reconstruct(codes_h, size)
            codes_s = self.gic.update(codes_s, y - self.gic.reconstruct(codes_s, size) - unique, step_s)
            codes_h = self.lsu.update(codes_h, y - self.gic.reconstruct(codes_s, size) - unique, step_h)
            return codes_s, codes_h

        with torch.no_grad():  # the initial point, as the authors compute it: one update from S = 0, H = 0
            n = target.shape[0]
            codes_s = self.gic.update(
                target.new_zeros(n, self.config.gic_atoms, *self.gic.code_size(size)), target, step_s
            )
            lsu_codes = target.new_zeros(n, self.config.bands - 2, self.config.lsu_atoms, *self.lsu.code_size(size))
            codes_h = self.lsu.update(lsu_codes, target - self.gic.reconstruct(codes_s, size), step_h)
        (codes_s, codes_h), stats = self.deq(layer, (codes_s, codes_h), (target,))
        stats = replace(stats, extra_evaluations=stats.extra_evaluations + 1)
        return self.gic.synthesise(codes_s, size) + self.lsu.synthesise(codes_h, size), stats

    def fold_for_inference(self) -> DECSC:
        """Eval mode with every difference convolution folded into one cached 3x3x3 kernel; returns self."""
        self.eval()
        for module in self.modules():
            if isinstance(module, DifferenceConv3d):
                module.fold()
        return self


from hsidenoise.model.dct_csc import DCTCSC, DCTCSC_PRESETS, DCTCSCConfig  # noqa: E402
from hsidenoise.model.subspace_decsc import SUBSPACE_PRESETS, SubspaceDECSC, SubspaceDECSCConfig  # noqa: E402

PRESETS.update(SUBSPACE_PRESETS)  # type: ignore[arg-type]  # one registry for every family
PRESETS.update(DCTCSC_PRESETS)  # type: ignore[arg-type]

AnyConfig = DECSCConfig | SubspaceDECSCConfig | DCTCSCConfig
AnyModel = DECSC | SubspaceDECSC | DCTCSC
EIGEN_MODELS = (SubspaceDECSC, DCTCSC)
"""The models that denoise the front end's eigen-images (the pipeline's step 5), not band windows."""
EIGEN_CONFIGS = (SubspaceDECSCConfig, DCTCSCConfig)


def build_model(name_or_config: str | AnyConfig) -> AnyModel:
    """A freshly initialised DECSC from a preset name (``PRESETS``) or a config of either family."""
    if isinstance(name_or_config, SubspaceDECSCConfig):
        return SubspaceDECSC(name_or_config)
    if isinstance(name_or_config, DCTCSCConfig):
        return DCTCSC(name_or_config)
    if isinstance(name_or_config, DECSCConfig):
        return DECSC(name_or_config)
    if name_or_config not in PRESETS:
        raise ConfigError(f"unknown DECSC preset {name_or_config!r}; choose one of {sorted(PRESETS)} or a weights file")
    return build_model(PRESETS[name_or_config])


def config_from_dict(data: dict[str, Any]) -> AnyConfig:
    """Rebuild a config of either family from its ``to_dict`` form (the ``kind`` key tells which)."""
    if data.get("kind") == SubspaceDECSCConfig.kind:
        return SubspaceDECSCConfig.from_dict(data)
    if data.get("kind") == DCTCSCConfig.kind:
        return DCTCSCConfig.from_dict(data)
    return DECSCConfig.from_dict(data)


def preset_name(config: AnyConfig) -> str | None:
    """The name of the preset equal to ``config``, or None for a custom config."""
    return next((name for name, preset in PRESETS.items() if preset == config), None)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
