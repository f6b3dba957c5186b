"""A small U-Net for images (Ho et al. 2020's DDPM architecture, scaled down): residual blocks with GroupNorm
and an added time embedding (plus a class embedding when conditional, as in Dhariwal & Nichol 2021), stride-2
down/up sampling, optional self-attention at the lowest resolution.

Any H×W works (8×8 digits, 28×28 MNIST, 32×32 CIFAR-10): each upsampling returns to its skip's exact size,
so odd sizes such as 7×7 need no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.checks import ArgumentError
from .label_embedding import add_label, label_embedding
from .time_embedding import time_features as make_time_features


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv, + time embedding, GroupNorm–SiLU–dropout–conv, plus a (1×1) skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H·W positions, with a residual connection."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm, self.qkv, self.out = nn.GroupNorm(groups, c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, -1)  # (b, hw, c) each
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """ε̂(x, τ) for images of `shape` (C, H, W); `channels`·mults[i] channels at level i, `res_blocks` per level.

    With `num_classes` a learned class embedding (plus the null label ∅) is added to the time embedding: ε̂(x, τ, y).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        channels: int = 32,
        mults: tuple[int, ...] = (1, 2),
        attention: bool = True,
        res_blocks: int = 1,
        groups: int = 8,
        dropout: float = 0.0,
        time_features: str = "sinusoidal",
        num_classes: int | None = None,
    ):
        super().__init__()
        if len(shape) != 3:
            raise ArgumentError("shape", tuple(shape), "(C, H, W) for a UNet")
        if channels % groups or channels < 1:
            raise ArgumentError("channels", channels, f"a positive multiple of groups={groups}")
        if not mults or res_blocks < 1:
            bad = "mults" if not mults else "res_blocks"
            raise ArgumentError(bad, mults if bad == "mults" else res_blocks, "non-empty" if bad == "mults" else ">= 1")
        self.shape = tuple(shape)
        emb = 4 * channels
        self.time = nn.Sequential(
            make_time_features(time_features, channels), nn.Linear(channels, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        self.conv_in = nn.Conv2d(shape[0], channels, 3, padding=1)

        def res(a: int, b: int) -> ResBlock:
            return ResBlock(a, b, emb, groups, dropout)

        widths = [channels * m for m in mults]
        skips, c = [channels], channels
        self.down = nn.ModuleList()
        for i, w in enumerate(widths):
            for _ in range(res_blocks):
                self.down.append(res(c, w))
                c = w
                skips.append(c)
            if i < len(widths) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([res(c, c), Attention(c, groups) if attention else nn.Identity(), res(c, c)])
        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(res_blocks + 1):
                self.up.append(res(c + skips.pop(), w))
                c = w
            if i > 0:
                self.up.append(nn.Conv2d(c, c, 3, padding=1))  # after nearest upsampling to the skip's size
        self.norm_out, self.conv_out = nn.GroupNorm(groups, c), nn.Conv2d(c, shape[0], 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.num_classes, self.label_emb = num_classes, label_embedding(num_classes, emb)

    def forward(self, x: Tensor, tau: Tensor, y: Tensor | None = None) -> Tensor:
        """ε̂ for x at times τ; a conditional network reads labels y (batch,), y = None meaning ∅."""
        emb = add_label(self, self.time(tau), y, x.shape[0])
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], 1), emb)
            else:
                h = layer(F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
