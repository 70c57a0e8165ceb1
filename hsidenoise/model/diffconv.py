"""The LSU branch's 3-D convolutions: run as 2-D convolutions over band offsets, and the difference convolution.

Band-major layout. LSU tensors are stored (N, B, C, H, W): band before channel, so that a 3-D convolution with
a (kb, kh, kw) kernel is one 2-D convolution of the (N*B, C, H, W) view with the kb band offsets stacked as
output channels, followed by a shifted sum along the band axis. On CPU this is several times faster than
``conv3d`` (whose backward pass dominates a training step) and is exactly the same linear map.
``(N, C, B, H, W)``, the conv3d layout, is a permute away.

Difference convolution (DConv, Fig. 3 and eq. 24 of the DECSC paper, after DEA-Net's DEConv): the sum of a
vanilla 3x3x3 convolution and four edge operators written as convolutions of differences: central
(x(p) - x(centre)), inter-band (x(b-1) - x(b+1)), horizontal (x(col-1) - x(col+1)) and vertical
(x(row-1) - x(row+1)). All five are linear, so they fold into one 3x3x3 kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Measured on CPU (torch 2.13, one output channel): the polyphase form of a transposed convolution is 2.5-3.5x
# faster than the native one without gradient from stride 3 on, and slower at stride 2.
_POLYPHASE_MIN_STRIDE = 3


def band_conv3d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int = 1,
    padding: int = 0,
    band_padding: int = 0,
) -> Tensor:
    """``conv3d`` with stride (1, s, s) and zero padding, on band-major tensors, as one 2-D convolution.

    Args:
        x: (N, B, C_in, H, W).
        weight: (C_out, C_in, kb, kh, kw), the conv3d layout.
        bias: (C_out,) or None.
        stride: spatial stride s.
        padding: spatial zero padding.
        band_padding: zero padding along bands (0: valid, kb // 2: same).

    Returns:
        (N, B + 2 * band_padding - kb + 1, C_out, h, w).
    """
    n, bands, c_in = x.shape[:3]
    c_out, _, kb = weight.shape[:3]
    # (kb * C_out, C_in, kh, kw): offset d of the band kernel becomes output block d.
    stacked = weight.permute(2, 0, 1, 3, 4).reshape(kb * c_out, c_in, *weight.shape[3:])
    y = F.conv2d(x.reshape(n * bands, c_in, *x.shape[3:]), stacked, stride=stride, padding=padding)
    y = y.view(n, bands, kb, c_out, *y.shape[2:])
    out_bands = bands + 2 * band_padding - kb + 1
    out = y.new_zeros(n, out_bands, c_out, *y.shape[4:])
    for d in range(kb):
        # output band o reads input band o + d - band_padding (zero outside the window)
        shift = d - band_padding
        lo, hi = max(0, -shift), min(out_bands, bands - shift)
        out[:, lo:hi] += y[:, lo + shift : hi + shift, d]
    if bias is not None:
        out = out + bias.view(1, 1, -1, 1, 1)
    return out


def band_conv_transpose3d(
    codes: Tensor, weight: Tensor, size: tuple[int, int], *, stride: int = 1, padding: int = 0
) -> Tensor:
    """The adjoint of :func:`band_conv3d` with valid bands and one output channel: ``conv_transpose3d`` (J -> 1).

    Each output band gathers the kb code bands that reach it, stacked as kb * J channels, and one transposed
    2-D convolution with a single output channel maps them to the image (in polyphase form from stride 3 on).

    Args:
        codes: (N, B', J, h, w) band-major codes.
        weight: (J, 1, kb, kh, kw), the same tensor as the forward convolution's weight.
        size: the spatial size (H, W) of the output.
        stride: spatial stride s.
        padding: spatial padding of the forward convolution.

    Returns:
        (N, B' + kb - 1, H, W).
    """
    n, bands, atoms, h, w = codes.shape
    kb = weight.shape[2]
    out_bands = bands + kb - 1
    padded = F.pad(codes, (0, 0, 0, 0, 0, 0, kb - 1, kb - 1))
    # output band o reads code band o - d through the band-offset-d atoms: channel block d of the stack
    stacked = torch.cat([padded[:, kb - 1 - d : kb - 1 - d + out_bands] for d in range(kb)], dim=2)
    stacked_weight = weight[:, 0].transpose(0, 1).reshape(kb * atoms, 1, *weight.shape[3:])
    stacked = stacked.view(n * out_bands, kb * atoms, h, w)
    if stride >= _POLYPHASE_MIN_STRIDE:
        y = conv_transpose2d_polyphase(stacked, stacked_weight, size, stride, padding)
    else:
        output_padding = tuple(
            s - ((c - 1) * stride - 2 * padding + k) for s, c, k in zip(size, (h, w), weight.shape[3:])
        )
        y = F.conv_transpose2d(stacked, stacked_weight, stride=stride, padding=padding, output_padding=output_padding)
    return y.view(n, out_bands, *size)


def conv_transpose2d_polyphase(
    codes: Tensor, weight: Tensor, size: tuple[int, int], stride: int, padding: int
) -> Tensor:
    """``conv_transpose2d`` as a stride-1 convolution at code resolution followed by a pixel shuffle.

    The same linear map as ``F.conv_transpose2d(codes, weight, stride=stride, padding=padding)`` cropped or
    extended to ``size``; on CPU it is several times faster when there are few output channels (the LSU
    decoders), where the native transposed convolution falls back to a slow path.

    Args:
        codes: (N, C_in, h, w).
        weight: (C_in, C_out, k, k), the conv_transpose2d layout.
        size: output spatial size (H, W), at most what the transposed convolution covers plus stride - 1.
        stride: s.
        padding: the forward convolution's padding p.

    Returns:
        (N, C_out, H, W).
    """
    c_in, c_out, kh, kw = weight.shape
    taps = -(-max(kh, kw) // stride)  # T: kernel taps per phase
    # out[s q + a - p] = sum_d codes[q - d] * weight[s d + a]: phase a is a full convolution with weight[a::s]
    phases = F.pad(weight, (0, stride * taps - kw, 0, stride * taps - kh)).view(c_in, c_out, taps, stride, taps, stride)
    phases = phases.flip(2, 4).permute(1, 3, 5, 0, 2, 4).reshape(c_out * stride * stride, c_in, taps, taps)
    y = F.pixel_shuffle(F.conv2d(F.pad(codes, (taps - 1, taps, taps - 1, taps)), phases), stride)
    return y[..., padding : padding + size[0], padding : padding + size[1]]


class DifferenceConv3d(nn.Module):
    """DConv: vanilla + central + inter-band + horizontal + vertical difference 3x3x3 convolutions (J -> J).

    Parameters per output/input pair: 27 (vanilla) + 27 (central) + 9 (inter-band, over rows x cols)
    + 9 (horizontal, over bands x rows) + 9 (vertical, over bands x cols), plus one bias per output.
    ``forward`` runs the folded kernel (:meth:`kernel`); :meth:`forward_unfolded` is the literal sum of the
    five difference convolutions, kept as the definition and for tests. :meth:`fold` caches the folded
    kernel for inference; training mode and loading weights drop the cache.

    Args:
        channels: J, input and output channels.
        init_scale: multiplies the default initialisation, so that H + DConv(H) starts close to identity.
    """

    def __init__(self, channels: int, init_scale: float = 0.1) -> None:
        super().__init__()
        self.vanilla = nn.Parameter(torch.empty(channels, channels, 3, 3, 3))
        self.central = nn.Parameter(torch.empty(channels, channels, 3, 3, 3))
        self.interband = nn.Parameter(torch.empty(channels, channels, 3, 3))  # over (row, col)
        self.horizontal = nn.Parameter(torch.empty(channels, channels, 3, 3))  # over (band, row)
        self.vertical = nn.Parameter(torch.empty(channels, channels, 3, 3))  # over (band, col)
        self.bias = nn.Parameter(torch.zeros(channels))
        bound = init_scale / (27 * channels) ** 0.5
        for p in (self.vanilla, self.central, self.interband, self.horizontal, self.vertical):
            nn.init.uniform_(p, -bound, bound)
        self.register_buffer("folded", None, persistent=False)

    def kernel(self) -> Tensor:
        """The five operators folded into one (J, J, 3, 3, 3) conv3d kernel (band, row, col)."""
        k = self.vanilla + self.central
        centre = self.central.sum(dim=(2, 3, 4))
        k = k.clone()
        k[:, :, 1, 1, 1] -= centre  # central difference: sum_p w_p (x_p - x_centre)
        k[:, :, 0] += self.interband  # + a * x(b-1) - a * x(b+1)
        k[:, :, 2] -= self.interband
        k[:, :, :, :, 0] += self.horizontal  # + h * x(col-1) - h * x(col+1)
        k[:, :, :, :, 2] -= self.horizontal
        k[:, :, :, 0, :] += self.vertical  # + v * x(row-1) - v * x(row+1)
        k[:, :, :, 2, :] -= self.vertical
        return k

    def fold(self) -> None:
        """Cache the folded kernel for inference (dropped again by ``train()`` or loading weights)."""
        with torch.no_grad():
            self.folded = self.kernel().detach().clone()

    def train(self, mode: bool = True) -> DifferenceConv3d:
        if mode:
            self.folded = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.folded = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, B, J, h, w) band-major -> same shape (bands zero-padded by one)."""
        weight = self.folded if (self.folded is not None and not self.training) else self.kernel()
        return band_conv3d(x, weight, self.bias, padding=1, band_padding=1)

    def forward_unfolded(self, x: Tensor) -> Tensor:
        """The definition: five convolutions, the four edge ones on explicit differences. x: (N, B, J, h, w)."""
        v = x.permute(0, 2, 1, 3, 4)  # conv3d layout (N, J, B, h, w)
        p = F.pad(v, (1, 1, 1, 1, 1, 1))
        out = F.conv3d(v, self.vanilla, self.bias, padding=1)
        out = (
            out
            + F.conv3d(v, self.central, padding=1)
            - F.conv3d(v, self.central.sum(dim=(2, 3, 4))[..., None, None, None])
        )
        band_diff = p[:, :, :-2, 1:-1, :] - p[:, :, 2:, 1:-1, :]  # x(b-1) - x(b+1), cols still padded
        out = out + F.conv3d(band_diff, self.interband[:, :, None], padding=(0, 1, 0))
        col_diff = p[:, :, :, :, :-2] - p[:, :, :, :, 2:]  # x(col-1) - x(col+1)
        out = out + F.conv3d(col_diff, self.horizontal[..., None])
        row_diff = p[:, :, :, :-2, :] - p[:, :, :, 2:, :]  # x(row-1) - x(row+1)
        out = out + F.conv3d(row_diff, self.vertical[:, :, :, None, :])
        return out.permute(0, 2, 1, 3, 4)
