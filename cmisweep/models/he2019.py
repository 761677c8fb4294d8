"""The 13-layer PixelCNN decoder of He et al. (2019), which Sect. 6.1 of the paper uses
(`model.decoder: he2019`; the plain masked-conv stack is `model.decoder: plain`).

Layer 1 is a mask-A block: a masked k x k conv of the image, BatchNorm, ELU. Layers 2..n are
residual bottleneck blocks: a 1x1 conv to half the maps, BN, ELU, a mask-B k x k conv, BN, ELU, a
1x1 conv back, BN, then ELU(block input + that). Direct connections: block i's output goes
through an extra bottleneck block (kernel size of layer i + 1, no z) and is added to the input of
block i + 3; the last one is added to the head's input. Head: 1x1 conv, BN, ELU, 1x1 conv to one
Bernoulli logit per pixel. Convs before a BN carry no bias. Kernel sizes 7,7,7,7,7,5,5,5,5,3,3,3,3
and 64 maps for the paper's size (n = 13 layers: 12 bottlenecks on the main path, 11 direct ones).

How z joins (our choice): He et al. concatenate the z map to the decoder's input only; Sect. 6.1 of
the paper concatenates it to the input of every layer from the sixth on. For a bottleneck block
whose first op is a 1x1 conv, concatenating the z map to its input is a 1x1 conv of the z map added
to that first 1x1 conv's output (before its BN); the residual path carries the 64 maps only (the
sum needs equal widths). So blocks s_layer..n get `z_proj(zmap)` added there, and the direct
connections, which are not layers of the main path, get no z.

s := the input of layer s_layer (block output plus any direct connection arriving there), as for
the plain decoder: it depends on x alone, so KL(s) is absent. App. 1 of the paper words the place
of s slightly differently from Sect. 6.1; we follow Sect. 6.1.

BatchNorm uses batch statistics in training mode. Those mix positions, so only the eval mode
(running statistics, a per-channel affine map) is exactly autoregressive; sampling and validation
run in eval mode, as in He et al.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cmisweep.models.masked import MaskedConv2d


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1, bias=False)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    return conv


class FirstBlock(nn.Module):
    """Mask-A conv of the image, BN, ELU (layer 1 never sees z: s_layer >= 2)."""

    def __init__(self, maps: int, k: int, cropped: bool = True):
        super().__init__()
        self.conv = MaskedConv2d(1, maps, k, "A", cropped=cropped, bias=False)
        self.bn = nn.BatchNorm2d(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """h -> ELU(h + BN(1x1(ELU(BN(maskB(ELU(BN(1x1(h) + z_proj(zmap)))))))))."""

    def __init__(self, maps: int, k: int, z_channels: int = 0, cropped: bool = True):
        super().__init__()
        half = maps // 2
        self.reduce, self.bn1 = _conv1x1(maps, half), nn.BatchNorm2d(half)
        self.conv, self.bn2 = MaskedConv2d(half, half, k, "B", cropped=cropped, bias=False), nn.BatchNorm2d(half)
        self.expand, self.bn3 = _conv1x1(half, maps), nn.BatchNorm2d(maps)
        self.z_proj = _conv1x1(z_channels, half) if z_channels else None

    def condition(self, zmap: torch.Tensor) -> torch.Tensor:
        return self.z_proj(zmap)

    def forward(self, h: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        a = self.reduce(h)
        if cond is not None:
            a = a + cond
        a = F.elu(self.bn1(a))
        a = F.elu(self.bn2(self.conv(a)))
        return F.elu(h + self.bn3(self.expand(a)))


class He2019Decoder(nn.Module):
    def __init__(self, layers: int, maps: int, kernel_sizes: list[int], s_layer: int, z_channels: int,
                 cropped: bool = True):
        super().__init__()
        if maps % 2:
            raise ValueError(f"the he2019 decoder halves the maps in its bottlenecks: maps = {maps} must be even")
        self.s_layer, self.kernel_sizes = s_layer, kernel_sizes
        self.blocks = nn.ModuleList(
            [FirstBlock(maps, kernel_sizes[0], cropped)]
            + [Bottleneck(maps, k, z_channels if i + 1 >= s_layer else 0, cropped)
               for i, k in enumerate(kernel_sizes) if i > 0]
        )
        # direct[j]: block j's output (0-based) into the input of block j + 3 (or of the head)
        self.direct = nn.ModuleList(Bottleneck(maps, kernel_sizes[j + 1], 0, cropped) for j in range(layers - 2))
        self.head = nn.Sequential(_conv1x1(maps, maps), nn.BatchNorm2d(maps), nn.ELU(), _conv1x1(maps, 1))

    def conditions(self, zmap: torch.Tensor) -> list[torch.Tensor | None]:
        """Each layer's z term (None for the layers before s_layer)."""
        return [b.condition(zmap) if getattr(b, "z_proj", None) is not None else None for b in self.blocks]

    def forward(self, x: torch.Tensor, conds: list[torch.Tensor | None] | None,
                until_s: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(logits (B, 1, H, W), s); with until_s, (None, s) without running the layers after s."""
        outs: list[torch.Tensor] = []
        h, s = x, None
        for i, block in enumerate(self.blocks):
            if i >= 3:
                h = h + self.direct[i - 3](outs[i - 3])
            if i + 1 == self.s_layer:
                s = h
                if until_s:
                    return None, s
            h = block(h) if i == 0 else block(h, conds[i] if conds is not None else None)
            outs.append(h)
        if len(self.direct):
            h = h + self.direct[-1](outs[-3])
        return self.head(h), s
