"""Subspace DECSC: the equilibrium model on the front end's whitened eigen-images (the ``subspace`` preset).

The front end (:mod:`hsidenoise.subspace`) whitens the cube by its per-band noise and projects it on the k
components above the Marchenko-Pastur edge: k eigen-images Z (N, k, H, W) whose noise is white with a standard
deviation of at most 1 (0.54 to 1.0 measured per component on non-i.i.d. noise), each with its eigenvalue lambda_i (the component's signal-to-noise ratio plus 1), and a DCT pilot
P = DCT(Z). This model corrects the pilot where it errs; what it solves is the CSC model of the paper with the
k components in place of the bands:

- the data Y (eq. 1) are two channels per component: the residual R_i = clip(Z_i - P_i) (unit noise plus the
  signal the pilot missed; mixture outliers the front end did not remove are clipped at ``residual_clip``) and
  the guide G_i = P_i / s_i, the pilot over its signal scale s_i = sqrt(max(lambda_i - 1, 1)); a coupled
  dictionary represents both at once, so codes that explain the (almost noise-free) pilot's structure carry
  the residual's matching part, and the noise, with no structure in the guide, is thresholded away;
- GIC (eq. 3): 2-D codes S (N, M, H/s, W/s) shared by all components, with atoms per component slot (the
  edges that all components share), Net1 a residual conv prior on S;
- LSU (eq. 4): unique codes H (N, k, J, H, W) per component, one 2-D dictionary for every component, Net2 the
  detail enhancement of eq. (24) with a 2-D difference convolution (central, horizontal and vertical
  differences; there is no band axis here);
- thresholds are relative to the step: theta = tau * softplus(rho) (eq. 10), so they stay in unit-noise units
  whatever the dictionary norm does; the LSU threshold of component i also depends on its log-eigenvalue
  (the component's SNR is an input, like Eigen-CNN's noise-level maps);
- the layer is the Gauss-Seidel ISTA update of S, then of H (eq. 20); its fixed point (S*, H*) (eq. 14) is
  found by Anderson acceleration (eqs. 15-16) and differentiated by the phantom gradient (eq. 19);
- the output is Z-hat = P + K_R (x) S* + D_R * H* (eq. 21 on the residual channel): corrected eigen-images.
  The synthesis dictionaries start at zero, so an untrained model returns the front end exactly.

Shapes: eigen-images, pilot (N, k, H, W) with 1 <= k <= ``max_components``; eigenvalues (N, k). A batch may
mix cubes of different rank by padding to a common k and passing ``mask`` (N, k): padded components never
influence the others and come back as the pilot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hsidenoise.model.deq import DEQ
from hsidenoise.errors import ConfigError, CubeShapeError
from hsidenoise.model.gic import ResidualConvPrior, soft_threshold
from hsidenoise.model.solver import SolverConfig, SolverStats, config_with_solver

KIND = "subspace"
"""The ``kind`` tag of this family's configs (band-window DECSC configs carry none)."""
_CHANNELS = 2
"""Data channels per component: residual and guide."""
_POWER_ITERATIONS = 30


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


@dataclass(frozen=True)
class SubspaceDECSCConfig:
    """Architecture and solver of a subspace DECSC.

    Attributes:
        max_components: component slots (the front end keeps at most this many; its ``max_rank``).
        gic_atoms: M, atoms of the shared 2-D dictionary.
        gic_kernel: GIC atoms are k x k.
        gic_stride: spatial stride of the GIC dictionaries.
        lsu_atoms: J, atoms of the per-component dictionary.
        lsu_kernel: LSU atoms are k x k.
        lsu_stride: spatial stride of the LSU dictionaries.
        prior_width: hidden channels of Net1's residual blocks.
        prior_depth: Net1's residual blocks.
        residual_clip: the residual Z - P is clipped to +-this (unit-noise units) before it enters.
        threshold_init: initial soft thresholds in unit-noise units (theta / tau).
        solver: Anderson iterations and phantom-gradient steps.
    """

    max_components: int = 32
    gic_atoms: int = 24
    gic_kernel: int = 7
    gic_stride: int = 2
    lsu_atoms: int = 8
    lsu_kernel: int = 5
    lsu_stride: int = 2
    prior_width: int = 32
    prior_depth: int = 1
    residual_clip: float = 4.0
    threshold_init: float = 1.0
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(max_iter=4, phantom_steps=2))
    kind: str = KIND

    def __post_init__(self) -> None:
        positive = ("max_components", "gic_atoms", "gic_kernel", "gic_stride", "lsu_atoms", "lsu_kernel", "lsu_stride")
        bad = [f"{name}={getattr(self, name)}" for name in positive + ("prior_width",) if getattr(self, name) < 1]
        if bad or self.prior_depth < 0:
            raise ConfigError(f"subspace DECSC needs positive sizes; got {', '.join(bad) or self.prior_depth}")
        if self.gic_kernel % 2 == 0 or self.lsu_kernel % 2 == 0:
            raise ConfigError(f"kernels must be odd; got gic_kernel={self.gic_kernel}, lsu_kernel={self.lsu_kernel}")
        if not (self.residual_clip > 0 and self.threshold_init > 0):
            raise ConfigError(
                f"residual_clip and threshold_init must be > 0; got {self.residual_clip}, {self.threshold_init}"
            )
        if self.kind != KIND:
            raise ConfigError(f"a SubspaceDECSCConfig has kind {KIND!r}; got {self.kind!r}")

    @property
    def noise_aware(self) -> bool:
        return True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubspaceDECSCConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_with_solver(cls, data, "subspace DECSC")


class _CodingLayer(nn.Module):
    """Shared parts of GIC and LSU: untied encoder W_E / decoder E / synthesis, tau = 1 / ||E||^2, thresholds.

    The encoder and decoder start tied (W_E = E^T, as in eq. 20), the synthesis dictionary at zero.
    """

    def __init__(self, dictionary: Tensor, synthesis_shape: tuple[int, ...], atoms: int, threshold: float) -> None:
        super().__init__()
        dictionary = dictionary / dictionary.flatten(1).norm(dim=1).view(-1, *[1] * (dictionary.dim() - 1))
        self.encoder = nn.Parameter(dictionary.clone())
        self.decoder = nn.Parameter(dictionary.clone())
        self.synthesis = nn.Parameter(torch.zeros(synthesis_shape))
        self.rho = nn.Parameter(torch.full((atoms,), _inverse_softplus(threshold)))  # theta = tau softplus(rho)
        self.register_buffer("power_vector", torch.empty(0))

    def _init_power(self, probe: Tensor) -> None:
        with torch.no_grad():
            vector = self.analyse(probe, self.decoder)
            self.power_vector = vector / vector.norm()
            for _ in range(_POWER_ITERATIONS):
                self._power_iteration()

    def analyse(self, image: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def synthesise_with(self, codes: Tensor, size: tuple[int, int], weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _power_iteration(self) -> None:
        size = self._probe_size()
        v = self.analyse(self.synthesise_with(self.power_vector, size, self.decoder), self.decoder)
        self.power_vector = v / v.norm()

    kernel: int
    stride: int
    padding: int

    def _probe_size(self) -> tuple[int, int]:
        side = 8 * self.stride + self.kernel
        return side, side

    def code_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the code map for an image of spatial ``size`` (strided, zero padding k // 2)."""
        return tuple((s + 2 * self.padding - self.kernel) // self.stride + 1 for s in size)  # type: ignore[return-value]

    def transposed(self, codes: Tensor, size: tuple[int, int], weight: Tensor) -> Tensor:
        """The strided transposed convolution codes -> image of spatial ``size`` (the adjoint of ``analyse``)."""
        output_padding = tuple(
            s - ((c - 1) * self.stride - 2 * self.padding + self.kernel) for s, c in zip(size, codes.shape[-2:])
        )
        return F.conv_transpose2d(codes, weight, stride=self.stride, padding=self.padding, output_padding=output_padding)

    def step_size(self) -> Tensor:
        """tau = 1 / ||E||^2 (power iteration on the decoder; one more iteration per training forward)."""
        if self.training:
            with torch.no_grad():
                self._power_iteration()
        return 1.0 / self.synthesise_with(self.power_vector, self._probe_size(), self.decoder).square().sum()


class SubspaceGIC(_CodingLayer):
    """GIC on eigen-images: C_i = K_i (x) S with codes S shared by all components (eq. 3).

    Slot i of the dictionaries serves component i (interleaved channels: residual, guide per component); a
    cube of rank k uses the first 2k channels.

    Shapes: data (N, k, 2, H, W); codes (N, M, h, w) with h = ceil(H / stride).
    """

    def __init__(self, config: SubspaceDECSCConfig) -> None:
        self.kernel, self.stride, self.padding = config.gic_kernel, config.gic_stride, config.gic_kernel // 2
        self.slots = config.max_components
        atoms = config.gic_atoms
        super().__init__(
            torch.randn(atoms, _CHANNELS * self.slots, self.kernel, self.kernel),
            (atoms, self.slots, self.kernel, self.kernel),
            atoms,
            config.threshold_init,
        )
        self.prior = ResidualConvPrior(atoms, config.prior_width, config.prior_depth)  # Net1
        self._init_power(torch.randn(1, _CHANNELS * self.slots, *self._probe_size()))

    def analyse(self, image: Tensor, weight: Tensor) -> Tensor:
        """W_K (x) image: (N, C, H, W) -> (N, M, h, w) with the first C input channels of ``weight``."""
        return F.conv2d(image, weight[:, : image.shape[1]], stride=self.stride, padding=self.padding)

    def synthesise_with(self, codes: Tensor, size: tuple[int, int], weight: Tensor, channels: int | None = None) -> Tensor:
        """K (x) S: (N, M, h, w) -> (N, channels, H, W)."""
        return self.transposed(codes, size, weight if channels is None else weight[:, :channels])

    def reconstruct(self, codes: Tensor, components: int, size: tuple[int, int]) -> Tensor:
        """The data-term image K (x) S: (N, M, h, w) -> (N, k, 2, H, W)."""
        image = self.synthesise_with(codes, size, self.decoder, _CHANNELS * components)
        return image.view(image.shape[0], components, _CHANNELS, *size)

    def update(self, codes: Tensor, residual: Tensor, step: Tensor) -> Tensor:
        """S' = Net1(Soft_theta(S + tau W_K (x) (Y - K S - D H))) (eq. 20); residual (N, k, 2, H, W)."""
        flat = residual.flatten(1, 2)
        theta = (step * F.softplus(self.rho)).view(1, -1, 1, 1)
        return self.prior(soft_threshold(codes + step * self.analyse(flat, self.encoder), theta))

    def output(self, codes: Tensor, components: int, size: tuple[int, int]) -> Tensor:
        """K_R (x) S* (eq. 21), residual channel only: (N, M, h, w) -> (N, k, H, W)."""
        return self.synthesise_with(codes, size, self.synthesis, components)


class DifferenceConv2d(nn.Module):
    """DConv of eq. (24) without the band axis: a 3x3 convolution plus central, horizontal and vertical
    difference operators (pixel differences weighted by learned kernels), as in PiDiNet-style difference
    convolutions. No bias, so zero codes stay zero.

    Shapes: (n, J, H, W) -> (n, J, H, W).
    """

    def __init__(self, channels: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.vanilla = nn.Parameter(init_scale * torch.randn(channels, channels, 3, 3) / (3 * math.sqrt(channels)))
        self.central = nn.Parameter(init_scale * torch.randn(channels, channels, 3, 3) / (3 * math.sqrt(channels)))
        self.horizontal = nn.Parameter(init_scale * torch.randn(channels, channels, 1, 3) / (3 * math.sqrt(channels)))
        self.vertical = nn.Parameter(init_scale * torch.randn(channels, channels, 3, 1) / (3 * math.sqrt(channels)))

    def kernel(self) -> Tensor:
        """One 3x3 kernel equal to the sum of the four operators (they are all linear)."""
        central = self.central.clone()
        central[:, :, 1, 1] -= self.central.sum(dim=(2, 3))  # sum_p w_p (x_p - x_centre)
        horizontal = torch.zeros_like(self.vanilla)
        horizontal[:, :, 1, :] = self.horizontal[:, :, 0, :]
        horizontal[:, :, 1, 1] -= self.horizontal.sum(dim=(2, 3))
        vertical = torch.zeros_like(self.vanilla)
        vertical[:, :, :, 1] = self.vertical[:, :, :, 0]
        vertical[:, :, 1, 1] -= self.vertical.sum(dim=(2, 3))
        return self.vanilla + central + horizontal + vertical

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.kernel(), padding=1)


class SubspaceDetailEnhancement(nn.Module):
    """Net2 (eq. 24): H1 = H + DConv(H), then H1 * sigmoid(conv(relu(conv(H1)))) (the authors' gate).

    Shapes: (n, J, H, W) -> same.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 2)
        self.difference = DifferenceConv2d(channels)
        self.reduce = nn.Conv2d(channels, hidden, 3, padding=1)
        self.expand = nn.Conv2d(hidden, channels, 3, padding=1)
        with torch.no_grad():  # the gate starts near 1 (sigmoid(4)), the module near identity
            self.expand.weight.mul_(0.1)
            self.expand.bias.fill_(4.0)

    def forward(self, codes: Tensor) -> Tensor:
        codes = codes + self.difference(codes)
        return codes * torch.sigmoid(self.expand(torch.relu(self.reduce(codes))))


class SubspaceLSU(_CodingLayer):
    """LSU on eigen-images: U_i = D * H_i with unique codes per component (eq. 4), one dictionary for all.

    Shapes: data (N, k, 2, H, W); codes (N, k, J, h, w) with h = ceil(H / stride).
    """

    def __init__(self, config: SubspaceDECSCConfig) -> None:
        self.kernel, self.stride, self.padding = config.lsu_kernel, config.lsu_stride, config.lsu_kernel // 2
        atoms = config.lsu_atoms
        super().__init__(
            torch.randn(atoms, _CHANNELS, self.kernel, self.kernel),
            (atoms, 1, self.kernel, self.kernel),
            atoms,
            config.threshold_init,
        )
        self.snr_gain = nn.Parameter(torch.zeros(atoms))  # threshold shift per unit of log10(lambda) / 2
        self.prior = SubspaceDetailEnhancement(atoms)  # Net2
        self._init_power(torch.randn(1, _CHANNELS, *self._probe_size()))

    def analyse(self, image: Tensor, weight: Tensor) -> Tensor:
        """W_D * image: (n, 2, H, W) -> (n, J, h, w)."""
        return F.conv2d(image, weight, stride=self.stride, padding=self.padding)

    def synthesise_with(self, codes: Tensor, size: tuple[int, int], weight: Tensor) -> Tensor:
        """D * H: (n, J, h, w) -> (n, C, H, W), C = weight's output channels."""
        return self.transposed(codes, size, weight)

    def reconstruct(self, codes: Tensor, size: tuple[int, int]) -> Tensor:
        """D * H: (N, k, J, h, w) -> (N, k, 2, H, W)."""
        n, k = codes.shape[:2]
        return self.synthesise_with(codes.flatten(0, 1), size, self.decoder).view(n, k, _CHANNELS, *size)

    def update(self, codes: Tensor, residual: Tensor, step: Tensor, level: Tensor) -> Tensor:
        """H' = Net2(Soft_theta(H + tau W_D * (Y - K S' - D H))) (eq. 20); level (N, k) = log10(lambda) / 2."""
        n, k = codes.shape[:2]
        rho = self.rho.view(1, 1, -1) + self.snr_gain.view(1, 1, -1) * level[:, :, None]  # (N, k, J)
        theta = (step * F.softplus(rho))[..., None, None].flatten(0, 1)
        update = codes.flatten(0, 1) + step * self.analyse(residual.flatten(0, 1), self.encoder)
        return self.prior(soft_threshold(update, theta)).view(codes.shape)

    def output(self, codes: Tensor, size: tuple[int, int]) -> Tensor:
        """D_R * H* (eq. 21): (N, k, J, h, w) -> (N, k, H, W)."""
        n, k = codes.shape[:2]
        return self.synthesise_with(codes.flatten(0, 1), size, self.synthesis).view(n, k, *size)


class SubspaceDECSC(nn.Module):
    """DECSC on the whitened eigen-images: returns the corrected eigen-images (see the module docstring).

    Example:
        >>> model = SubspaceDECSC(SubspaceDECSCConfig()).eval()
        >>> eigen = torch.randn(1, 5, 32, 32)
        >>> with torch.inference_mode():
        ...     corrected, stats = model(eigen, eigen, torch.tensor([[900.0, 90, 9, 3, 1.5]]))
        >>> corrected.shape
        torch.Size([1, 5, 32, 32])
    """

    def __init__(self, config: SubspaceDECSCConfig) -> None:
        super().__init__()
        self.config = config
        self.gic = SubspaceGIC(config)
        self.lsu = SubspaceLSU(config)
        self.deq = DEQ(config.solver)

    def forward(
        self,
        eigen: Tensor,
        pilot: Tensor,
        eigenvalues: Tensor,
        mask: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, SolverStats]:
        """Correct the pilot of the noisy eigen-images.

        Args:
            eigen: (N, k, H, W) noisy eigen-images, unit white noise.
            pilot: (N, k, H, W) their front-end estimate (DCT or BM3D), same units.
            eigenvalues: (N, k) whitened eigenvalues of the components (>= about 1).
            mask: (N, k) 1 for real components, 0 for padding (None: all real).
            noise: (N, k) each eigen-image's noise level; unused (this model assumes unit noise; the pilot it
                corrects was made with the measured level), accepted so that every eigen-image model takes it.

        Returns:
            corrected (N, k, H, W) and the solve's statistics per sample.
        """
        self._check(eigen, pilot, eigenvalues, mask)
        dtype = self.gic.encoder.dtype
        eigen, pilot, eigenvalues = eigen.to(dtype), pilot.to(dtype), eigenvalues.to(dtype)
        keep = torch.ones_like(eigenvalues) if mask is None else mask.to(dtype)
        clip = self.config.residual_clip
        scale = (eigenvalues - 1).clamp_min(1).sqrt()[:, :, None, None]
        residual = (eigen - pilot).clamp(-clip, clip)
        data = torch.stack([residual, pilot / scale], dim=2) * keep[:, :, None, None, None]  # Y: (N, k, 2, H, W)
        level = torch.log10(eigenvalues.clamp_min(1)) / 2
        correction, stats = self._equilibrium(data, level, keep)
        return pilot + correction * keep[:, :, None, None], stats

    def _check(self, eigen: Tensor, pilot: Tensor, eigenvalues: Tensor, mask: Tensor | None) -> None:
        if eigen.dim() != 4 or not 1 <= eigen.shape[1] <= self.config.max_components:
            raise CubeShapeError(
                f"subspace DECSC expects eigen-images (N, k, H, W) with 1 <= k <= {self.config.max_components}; "
                f"got {tuple(eigen.shape)}"
            )
        if pilot.shape != eigen.shape:
            raise CubeShapeError(f"pilot must match the eigen-images {tuple(eigen.shape)}; got {tuple(pilot.shape)}")
        for name, value in (("eigenvalues", eigenvalues), ("mask", mask)):
            if value is not None and tuple(value.shape) != tuple(eigen.shape[:2]):
                raise CubeShapeError(f"{name} must be (N, k) = {tuple(eigen.shape[:2])}; got {tuple(value.shape)}")

    def _equilibrium(self, data: Tensor, level: Tensor, keep: Tensor) -> tuple[Tensor, SolverStats]:
        """Solve (S*, H*) of eq. (20) for the data Y (N, k, 2, H, W); return K_R S* + D_R H* (N, k, H, W)."""
        n, k = data.shape[:2]
        size = tuple(data.shape[-2:])
        step_s, step_h = self.gic.step_size(), self.lsu.step_size()
        gate = keep[:, :, None, None, None]

        def layer(state: tuple[Tensor, ...], injection: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
            """Eq. (20): S from Y - K S - D H, then H from Y - K S_new - D H (padded components masked out)."""
            codes_s, codes_h = state
            y, lvl, g = injection
            unique = self.lsu.reconstruct(codes_h, size)
            codes_s = self.gic.update(codes_s, (y - self.gic.reconstruct(codes_s, k, size) - unique) * g, step_s)
            residual = (y - self.gic.reconstruct(codes_s, k, size) - unique) * g
            return codes_s, self.lsu.update(codes_h, residual, step_h, lvl)

        with torch.no_grad():  # the initial point: one update from S = 0, H = 0
            codes_s = self.gic.update(data.new_zeros(n, self.config.gic_atoms, *self.gic.code_size(size)), data, step_s)
            codes_h = data.new_zeros(n, k, self.config.lsu_atoms, *self.lsu.code_size(size))
            codes_h = self.lsu.update(codes_h, (data - self.gic.reconstruct(codes_s, k, size)) * gate, step_h, level)
        (codes_s, codes_h), stats = self.deq(layer, (codes_s, codes_h), (data, level, gate))
        stats = replace(stats, extra_evaluations=stats.extra_evaluations + 1)
        return self.gic.output(codes_s, k, size) + self.lsu.output(codes_h, size), stats

    def fold_for_inference(self) -> SubspaceDECSC:
        """Eval mode (the difference convolution is folded on every call; nothing to cache)."""
        return self.eval()


SUBSPACE_PRESETS: dict[str, SubspaceDECSCConfig] = {
    "subspace": SubspaceDECSCConfig(),
}
