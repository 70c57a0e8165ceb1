"""The LSU layer: 3-D convolutional sparse coding of local spatial-spectral detail (eqs. 4, 9, 20, 24).

U = D * H with J atoms of 3 x k x k (bands x rows x cols), one input channel, valid along bands (so H has
B - 2 bands) and a spatial stride s. The learned prior Net2 is the detail-enhancement module (eq. 24): a
difference convolution with a residual, then a spatial-spectral attention gate.

Codes are band-major, (N, B - 2, J, h, w), so that every 3-D convolution runs as a 2-D one
(:mod:`hsidenoise.model.diffconv`); the conv3d layout (N, J, B - 2, h, w) is ``codes.permute(0, 2, 1, 3, 4)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hsidenoise.model.diffconv import DifferenceConv3d, band_conv3d, band_conv_transpose3d
from hsidenoise.model.gic import SparseCodingLayer

_BAND_KERNEL = 3


class AttentionGate(nn.Module):
    """Spatial-spectral attention: sigmoid(conv(relu(conv(H)))) with two 3x3x3 convolutions J -> J/2 -> J.

    Args:
        channels: J.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(1, channels // 2)
        self.reduce = nn.Conv3d(channels, hidden, 3)  # weights in conv3d layout; run band-major below
        self.expand = nn.Conv3d(hidden, channels, 3)

    def forward(self, codes: Tensor) -> Tensor:
        """codes: (N, B', J, h, w) -> gate in (0, 1) of the same shape."""
        hidden = torch.relu(band_conv3d(codes, self.reduce.weight, self.reduce.bias, padding=1, band_padding=1))
        return torch.sigmoid(band_conv3d(hidden, self.expand.weight, self.expand.bias, padding=1, band_padding=1))


class DetailEnhancement(nn.Module):
    """Net2 (eq. 24): H1 = H + DConv(H), then H1 gated by the attention, H1 * Gate(H1).

    The paper writes the second line as S + S (.) Conv1(Conv1(S)); the authors' code multiplies the
    features by a sigmoid gate, which keeps the layer non-expansive, and we follow the code.

    Args:
        channels: J.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.difference = DifferenceConv3d(channels)
        self.gate = AttentionGate(channels)

    def forward(self, codes: Tensor) -> Tensor:
        """codes: (N, B', J, h, w) -> same shape."""
        codes = codes + self.difference(codes)
        return codes * self.gate(codes)


class LSULayer(SparseCodingLayer):
    """Local spatial-spectral unique structures: U = D * H with 3-D atoms (eq. 4), prior Net2.

    Args:
        bands: B, the band window.
        atoms: J.
        kernel_size: k, atoms are 3 x k x k.
        stride: s, the dictionary's spatial stride (1 along bands).
        threshold_init, synthesis_init: see :class:`hsidenoise.model.gic.SparseCodingLayer`.

    Shapes:
        image (N, B, H, W); codes H (N, B - 2, J, h, w), band-major.
    """

    def __init__(
        self, bands: int, atoms: int, kernel_size: int, stride: int, threshold_init: float, synthesis_init: float = 1.0
    ) -> None:
        self.bands, self.atoms, self.kernel_size, self.stride = bands, atoms, kernel_size, stride
        self.padding = kernel_size // 2
        super().__init__(
            (atoms, 1, _BAND_KERNEL, kernel_size, kernel_size),
            (1, 1, atoms, 1, 1),
            DetailEnhancement(atoms),
            threshold_init,
            8 * stride + kernel_size,
            synthesis_init,
        )

    def _probe_image_shape(self) -> tuple[int, ...]:
        return (1, self.bands, self.probe_size, self.probe_size)

    def code_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the code map H for an image of spatial ``size``."""
        return tuple((s + 2 * self.padding - self.kernel_size) // self.stride + 1 for s in size)  # type: ignore[return-value]

    def encode(self, image: Tensor, weight: Tensor) -> Tensor:
        """W_D * image: (N, B, H, W) -> (N, B - 2, J, h, w)."""
        return band_conv3d(image.unsqueeze(2), weight, stride=self.stride, padding=self.padding)

    def decode(self, codes: Tensor, size: tuple[int, int], weight: Tensor) -> Tensor:
        """D * H: (N, B - 2, J, h, w) -> (N, B, H, W) (a transposed 3-D convolution, J -> 1)."""
        return band_conv_transpose3d(codes, weight, size, stride=self.stride, padding=self.padding)
