"""The GIC layer: 2-D convolutional sparse coding with codes shared across bands (eqs. 3, 9-13, 20).

Also the pieces both DECSC layers share: soft thresholding (eq. 10) and :class:`SparseCodingLayer`, one
learned ISTA step alpha' = Net(Soft_theta(alpha + tau * W_E(z - E alpha))) (eqs. 12-13) with three untied
dictionaries as in the authors' code: the encoder W_E, the decoder E (used in the data term), and the
synthesis dictionary used for the output (eq. 21). The step tau = 1 / ||E||^2 comes from a power-iteration
estimate of the decoder's norm, refreshed by one iteration per training forward (like spectral
normalisation); without it Adam diverges (our CPU probes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_INITIAL_POWER_ITERATIONS = 30


def soft_threshold(x: Tensor, threshold: Tensor) -> Tensor:
    """Soft_theta(x) = sign(x) max(|x| - theta, 0) (eq. 10), with theta taken as |threshold|."""
    theta = threshold.abs()
    return x - torch.maximum(torch.minimum(x, theta), -theta)


class SparseCodingLayer(nn.Module):
    """One weight-tied convolutional sparse coding update (eq. 13) with untied encoder/decoder/synthesis.

    Subclasses define the convolution (:meth:`encode`, :meth:`decode`) and the code layout.

    Args:
        dictionary_shape: shape of each dictionary's weight tensor, atoms first.
        threshold_shape: shape of the learned per-atom thresholds (broadcast over the codes).
        prior: the learned proximal operator Net applied after the soft threshold.
        threshold_init: initial lambda in input units (the noise std the layer expects, for unit-norm
            atoms); the thresholds start at lambda * tau.
        probe_size: spatial side of the image on which the decoder's norm is estimated.
        synthesis_init: the synthesis dictionary starts as this multiple of the decoder (a small value
            starts the layer's output near zero, e.g. near-zero corrections of a noise-aware model).
    """

    def __init__(
        self,
        dictionary_shape: tuple[int, ...],
        threshold_shape: tuple[int, ...],
        prior: nn.Module,
        threshold_init: float,
        probe_size: int,
        synthesis_init: float = 1.0,
    ) -> None:
        super().__init__()
        atoms = torch.randn(dictionary_shape)
        atoms = atoms / atoms.flatten(1).norm(dim=1).view(-1, *[1] * (atoms.dim() - 1))
        self.encoder = nn.Parameter(atoms.clone())  # W_E (W_K or W_D in eq. 20), tied to E at initialisation
        self.decoder = nn.Parameter(atoms.clone())  # E (K or D) in the data term of eq. (20)
        self.synthesis = nn.Parameter(synthesis_init * atoms)  # E in the reconstruction of eq. (21)
        self.threshold = nn.Parameter(torch.ones(threshold_shape))
        self.prior = prior
        self.probe_size = probe_size
        self.register_buffer("power_vector", torch.empty(0))
        with torch.no_grad():
            probe = self.encode(torch.randn(self._probe_image_shape()), self.decoder)
            self.power_vector = probe / probe.norm()
            for _ in range(_INITIAL_POWER_ITERATIONS):
                self._power_iteration()
            self.threshold.mul_(threshold_init * self.step_size())

    def _probe_image_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def encode(self, image: Tensor, weight: Tensor) -> Tensor:
        """The analysis convolution with ``weight`` (the adjoint of :meth:`decode`): image -> codes."""
        raise NotImplementedError

    def decode(self, codes: Tensor, size: tuple[int, int], weight: Tensor) -> Tensor:
        """The synthesis convolution with ``weight``: codes -> image of spatial ``size``."""
        raise NotImplementedError

    def _power_iteration(self) -> None:
        size = self._probe_image_shape()[-2:]
        v = self.encode(self.decode(self.power_vector, size, self.decoder), self.decoder)  # E^T E v
        self.power_vector = v / v.norm()

    def step_size(self) -> Tensor:
        """tau = 1 / ||E||^2, differentiable in the decoder; one more power iteration first when training."""
        if self.training:
            with torch.no_grad():
                self._power_iteration()
        size = self._probe_image_shape()[-2:]
        return 1.0 / self.decode(self.power_vector, size, self.decoder).square().sum()

    def update(self, codes: Tensor, residual: Tensor, step: Tensor) -> Tensor:
        """alpha' = Net(Soft_theta(alpha + tau W_E residual)) (eq. 20), residual = z - (current reconstruction)."""
        return self.prior(soft_threshold(codes + step * self.encode(residual, self.encoder), self.threshold))

    def reconstruct(self, codes: Tensor, size: tuple[int, int]) -> Tensor:
        """E alpha, the decoder's image of the codes (the data term of eq. 20)."""
        return self.decode(codes, size, self.decoder)

    def synthesise(self, codes: Tensor, size: tuple[int, int]) -> Tensor:
        """The layer's part of the output X-hat (eq. 21), through the synthesis dictionary."""
        return self.decode(codes, size, self.synthesis)


class ResidualConvPrior(nn.Module):
    """A light Net1: ``depth`` residual blocks x + conv(relu(conv(x))) of 3x3 convolutions on the code map.

    Args:
        channels: code channels M.
        width: hidden channels of each block.
        depth: number of blocks.
        init_scale: scales the second convolution's initial weights so the prior starts near identity.
    """

    def __init__(self, channels: int, width: int, depth: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, channels, 3, padding=1))
            for _ in range(depth)
        )
        with torch.no_grad():
            for block in self.blocks:
                block[2].weight.mul_(init_scale)
                block[2].bias.zero_()

    def forward(self, codes: Tensor) -> Tensor:
        """codes: (N, M, h, w) -> (N, M, h, w)."""
        for block in self.blocks:
            codes = codes + block(codes)
        return codes


class GICLayer(SparseCodingLayer):
    """Global inter-band common structures: C_b = K_b * S with codes S shared by all bands (eq. 3).

    The dictionary K = concat(K_1, ..., K_B) is one 2-D convolution with M input and B output channels
    (per-band atoms k_{b,m}); the encoder W_K is a B -> M convolution. Strided dictionaries ("stride") keep
    the code map small; zero padding of kernel // 2.

    Args:
        bands: B, the band window (the per-band dictionaries fix it).
        atoms: M.
        kernel_size: k, atoms are k x k.
        stride: s, the dictionary's spatial stride.
        prior: Net1 (:class:`hsidenoise.model.swin.SwinPrior` or :class:`ResidualConvPrior`).
        threshold_init, synthesis_init: see :class:`SparseCodingLayer`.

    Shapes:
        image (N, B, H, W); codes S (N, M, ceil-ish(H / s), ceil-ish(W / s)).
    """

    def __init__(
        self,
        bands: int,
        atoms: int,
        kernel_size: int,
        stride: int,
        prior: nn.Module,
        threshold_init: float,
        synthesis_init: float = 1.0,
    ) -> None:
        self.bands, self.atoms, self.kernel_size, self.stride = bands, atoms, kernel_size, stride
        self.padding = kernel_size // 2
        super().__init__(
            (atoms, bands, kernel_size, kernel_size),
            (1, atoms, 1, 1),
            prior,
            threshold_init,
            8 * stride + kernel_size,
            synthesis_init,
        )

    def _probe_image_shape(self) -> tuple[int, ...]:
        return (1, self.bands, self.probe_size, self.probe_size)

    def code_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the code map S for an image of spatial ``size``."""
        return tuple((s + 2 * self.padding - self.kernel_size) // self.stride + 1 for s in size)  # type: ignore[return-value]

    def encode(self, image: Tensor, weight: Tensor) -> Tensor:
        """W_K (x) image: (N, B, H, W) -> (N, M, h, w)."""
        return F.conv2d(image, weight, stride=self.stride, padding=self.padding)

    def decode(self, codes: Tensor, size: tuple[int, int], weight: Tensor) -> Tensor:
        """K (x) S: (N, M, h, w) -> (N, B, H, W), each band through its own atoms (eq. 3)."""
        output_padding = tuple(
            s - ((c - 1) * self.stride - 2 * self.padding + self.kernel_size) for s, c in zip(size, codes.shape[-2:])
        )
        return F.conv_transpose2d(
            codes, weight, stride=self.stride, padding=self.padding, output_padding=output_padding
        )
