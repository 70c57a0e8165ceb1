"""Swin Transformer blocks (window attention, shifted windows), the GIC layer's learned prior Net1.

Section III-C-2 and eqs. (22)-(23) of the DECSC paper; the blocks follow timm's ``SwinTransformerBlock``
(pre-norm, relative position bias, alternating shift of half a window) without drop-path, so that the layer
is deterministic inside the equilibrium solve. Feature maps of any size are padded up to a multiple of the
window; padded tokens are masked out of attention, so results do not depend on the padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_MASKED = -100.0  # timm's additive mask value between tokens that must not attend to each other


def _window_partition(x: Tensor, window: int) -> Tensor:
    """(N, H, W, C) -> (N * H/window * W/window, window * window, C)."""
    n, h, w, c = x.shape
    x = x.view(n, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def _window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """(N * H/window * W/window, window * window, C) -> (N, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a relative position bias (eqs. 22-23).

    Args:
        dim: token width C.
        heads: number of heads h (C must be divisible by h).
        window: window side.
    """

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer(
            "relative_position_index", relative[..., 0] * (2 * window - 1) + relative[..., 1], persistent=False
        )
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (N * windows, T, C) tokens of each window; mask: (windows, T, T) additive, or None."""
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(tokens, tokens, self.heads).permute(2, 0, 1)  # (heads, T, T)
        if mask is None:
            attn_mask = bias.unsqueeze(0)
        else:
            windows = mask.shape[0]
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).repeat(batch // windows, 1, 1, 1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask.to(q.dtype)
        )  # softmax(q k^T / sqrt(d) + bias) v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class SwinBlock(nn.Module):
    """One Swin Transformer block: x + W-MSA(LN(x)), then x + MLP(LN(x)); windows shifted when ``shifted``.

    Args:
        dim: token width C.
        heads: attention heads.
        window: window side.
        shifted: shift the windows by half a window (every second block in a stack).
        mlp_ratio: hidden width of the MLP relative to C.
    """

    def __init__(self, dim: int, heads: int, window: int, shifted: bool, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.shift = window // 2 if shifted else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self._masks: dict[tuple[int, int, int, torch.device], Tensor | None] = {}

    def _mask(self, h: int, w: int, hp: int, wp: int, shift: int, device: torch.device) -> Tensor | None:
        """Additive (windows, T, T) mask: tokens attend only within their shift region and among real tokens."""
        key = (h, w, shift, device)
        if key not in self._masks:
            padded = torch.zeros(hp, wp, dtype=torch.int64, device=device)
            padded[h:, :] = 1
            padded[:, w:] = 1
            if shift == 0 and hp == h and wp == w:
                self._masks[key] = None
                return None
            labels = torch.roll(padded, (-shift, -shift), dims=(0, 1))  # into the shifted frame
            if shift:
                region = torch.zeros(hp, wp, dtype=torch.int64, device=device)
                cuts = (slice(0, -self.window), slice(-self.window, -shift), slice(-shift, None))
                for i, rows in enumerate(cuts):
                    for j, cols in enumerate(cuts):
                        region[rows, cols] = 3 * i + j
                labels = labels + 2 * region
            windows = _window_partition(labels[None, :, :, None], self.window).squeeze(-1)  # (windows, T)
            differs = windows[:, :, None] != windows[:, None, :]
            self._masks[key] = torch.zeros(differs.shape, device=device).masked_fill(differs, _MASKED)
        return self._masks[key]

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, H, W, C) -> (N, H, W, C)."""
        n, h, w, c = x.shape
        win = self.window
        hp, wp = -(-h // win) * win, -(-w // win) * win
        shift = self.shift if min(hp, wp) > win else 0
        y = F.pad(self.norm1(x), (0, 0, 0, wp - w, 0, hp - h))
        if shift:
            y = torch.roll(y, (-shift, -shift), dims=(1, 2))
        mask = self._mask(h, w, hp, wp, shift, x.device)
        y = _window_reverse(self.attn(_window_partition(y, win), mask), win, hp, wp)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
        x = x + y[:, :h, :w]
        return x + self.mlp(self.norm2(x))


class SwinPrior(nn.Module):
    """Net1 as a stack of Swin blocks (alternating plain and shifted windows) on a code map.

    Args:
        channels: code channels M.
        width: token width; the paper uses ``width == channels`` (no projection), otherwise 1x1
            projections map M -> width -> M.
        depth: number of blocks.
        heads: attention heads per block.
        window: window side.
        mlp_ratio: MLP hidden width relative to ``width``.
    """

    def __init__(self, channels: int, width: int, depth: int, heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.project_in = nn.Identity() if width == channels else nn.Linear(channels, width)
        self.blocks = nn.Sequential(*(SwinBlock(width, heads, window, i % 2 == 1, mlp_ratio) for i in range(depth)))
        self.project_out = nn.Identity() if width == channels else nn.Linear(width, channels)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, codes: Tensor) -> Tensor:
        """codes: (N, M, h, w) -> (N, M, h, w)."""
        tokens = codes.permute(0, 2, 3, 1)
        if isinstance(self.project_in, nn.Identity):
            return self.blocks(tokens).permute(0, 3, 1, 2)
        return (tokens + self.project_out(self.blocks(self.project_in(tokens)))).permute(0, 3, 1, 2)
