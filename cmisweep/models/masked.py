"""Masked 2-D convolution of PixelCNN (van den Oord et al. 2016) for one-channel images.

Mask A (first layer) sees the pixels above and to the left of the centre; mask B also the centre.
The kernel rows below the centre are always zero, so by default only the k//2 + 1 upper rows are
stored and the input is padded on top only: the same outputs at about half the cost
(`cropped=False` keeps the plain full-kernel form as a reference).

A conditioning input (the z map of the PixelCNN-VAE) is not autoregressive: it is convolved with
an unmasked kernel and added, which equals one convolution over the concatenated channels with the
mask applied to the image channels only.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MaskedConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, mask: str, cond_channels: int = 0, cropped: bool = True,
                 bias: bool = True):
        super().__init__()
        if k % 2 != 1:
            raise ValueError(f"kernel size must be odd, got {k}")
        if mask not in ("A", "B"):
            raise ValueError(f"mask must be 'A' or 'B', got {mask!r}")
        self.k, self.mask_type, self.cropped = k, mask, cropped
        rows = k // 2 + 1 if cropped else k
        m = torch.ones(rows, k)
        c = k // 2
        m[c, c + (mask == "B"):] = 0  # the centre row: right of the centre (and the centre for A)
        m[c + 1:] = 0  # rows below the centre (absent when cropped)
        self.register_buffer("mask", m, persistent=False)
        self.weight = nn.Parameter(torch.empty(cout, cin, rows, k))
        # no bias where a BatchNorm follows (the he2019 decoder): it would cancel it
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        # He initialisation over the taps the mask leaves (about half the kernel): with the default
        # init the signal of a 13-layer masked stack shrinks ~1e-7-fold before training starts
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / (cin * float(m.sum()))))
        self.cond = nn.Conv2d(cond_channels, cout, k, padding=c, bias=False) if cond_channels else None

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, h: torch.Tensor, cond_out: torch.Tensor | None = None) -> torch.Tensor:
        """h: (B, cin, H, W); cond_out: this layer's precomputed conditioning term `condition(c)`."""
        c = self.k // 2
        if self.cropped:
            out = F.conv2d(F.pad(h, (c, c, c, 0)), self.masked_weight(), self.bias)
        else:
            out = F.conv2d(h, self.masked_weight(), self.bias, padding=c)
        if cond_out is not None:
            out = out + cond_out
        return out

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        """The conditioning map's contribution, computed once per z (it does not change while sampling)."""
        return self.cond(cond)

    def load_full_weight(self, other: "MaskedConv2d") -> None:
        """Copy weights from a layer of the other form (cropped <-> full), for equivalence checks."""
        rows = self.weight.shape[2]
        with torch.no_grad():
            w = other.masked_weight()
            if w.shape[2] < rows:
                w = F.pad(w, (0, 0, 0, rows - w.shape[2]))
            self.weight.copy_(w[:, :, :rows])
            if self.bias is not None:
                self.bias.copy_(other.bias)
            if self.cond is not None:
                self.cond.weight.copy_(other.cond.weight)
