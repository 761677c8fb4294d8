"""Fast ancestral sampling of the PixelCNN-VAE decoders (plain and he2019) with activation caches.

A position's activations at every layer depend only on the pixels before it in raster order, so
they are final as soon as the previous pixel is sampled. Each step therefore computes ONE position
per layer, from the cached activations of the layer below in that position's (masked) receptive
window, as one (B, taps * channels) x (taps * channels, maps) product, instead of running the
whole network (784 full passes). Each masked conv keeps only the k//2 + 1 rows of its input that it
can see, in a ring buffer, channels last (`_Window`). 1x1 convs, BatchNorm and ELU act per position.
The z map's contribution is computed once per row.

BatchNorm (he2019) is in eval mode: its running statistics make it a per-channel affine map,
folded into the conv before it. Given the same uniform noise the samples equal those of
`PixelCNNVAE.generate_naive` (tests check both decoders); the products are summed in another
order, so logits agree to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.no_grad()
def cached_generate(model, z: torch.Tensor, noise: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Images (B, 1, H, W) for z (B, z_dim) with x_t = [noise_t < sigmoid(logit_t)]."""
    B, H = z.shape[0], model.image_size
    zmap = model.z_to_map(z).view(B, model.z_channels, H, H)
    if model.decoder == "he2019":
        return _generate_he2019(model.he2019, zmap, noise, dtype)
    return _generate_plain(model, zmap, noise, dtype)


class _Window:
    """One masked conv evaluated at one position: its input rows r-p..r (p = k // 2) in a ring
    buffer padded by p columns each side, channels last, and its weights as (taps * cin, cout),
    taps = the p + 1 upper kernel rows x k columns (rows below the centre are zero)."""

    def __init__(self, conv, B: int, W: int, dtype: torch.dtype, bn: nn.BatchNorm2d | None = None):
        p = self.p = conv.k // 2
        w = conv.masked_weight()[:, :, : p + 1]
        cout, cin = w.shape[:2]
        w = w.permute(2, 3, 1, 0).reshape(-1, cout)
        b = conv.bias if conv.bias is not None else torch.zeros(cout, device=w.device)
        if bn is not None:
            w, b = _fold(w, b, bn)
        self.weight, self.bias = w.to(dtype), b.to(dtype)
        self.buf = torch.zeros(B, p + 1, W + 2 * p, cin, device=w.device, dtype=dtype)

    def start_row(self, r: int) -> None:
        p = self.p
        self.slot = (r + p) % (p + 1)  # it held row r - p - 1, no longer visible
        self.buf[:, self.slot] = 0
        self.rows = torch.tensor([(r + i) % (p + 1) for i in range(p + 1)], device=self.buf.device)

    def put(self, c: int, v: torch.Tensor) -> None:
        """The conv's input at (r, c), (B, cin)."""
        self.buf[:, self.slot, c + self.p] = v

    def __call__(self, c: int) -> torch.Tensor:
        """The conv's output at (r, c), (B, cout)."""
        window = self.buf[:, :, c: c + 2 * self.p + 1].index_select(1, self.rows)  # (B, p+1, k, cin)
        return window.reshape(window.shape[0], -1) @ self.weight + self.bias


def _fold(w: torch.Tensor, b: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, b) of x @ w + b followed by eval-mode BatchNorm, as one affine map."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return w * scale, b * scale + bn.bias - bn.running_mean * scale


def _matrix(conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv's weight as (cin, cout)."""
    return conv.weight[:, :, 0, 0].t()


# --- plain: masked convs with ReLU ---------------------------------------------------------------

def _generate_plain(model, zmap: torch.Tensor, noise: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    B, _, H, W = zmap.shape
    layers = list(model.layers)
    windows = [_Window(layer, B, W, dtype) for layer in layers]
    w_out = model.out.weight.view(1, -1).t().to(dtype)  # (maps, 1)
    b_out = model.out.bias.to(dtype)
    x = torch.zeros(B, 1, H, W, device=zmap.device)
    for r in range(H):
        conds = []
        for layer, win in zip(layers, windows):
            win.start_row(r)
            conds.append(_row_condition(layer, zmap, r, win.p).to(dtype) if layer.cond is not None else None)
        for c in range(W):
            h = None
            for i, win in enumerate(windows):
                if i > 0:  # the layer below's output at (r, c) is this layer's input there
                    win.put(c, h)
                h = win(c)
                if conds[i] is not None:
                    h = h + conds[i][:, :, c]
                h = F.relu(h)
            logit = (h @ w_out + b_out).float().squeeze(1)
            pixel = (noise[:, 0, r, c] < torch.sigmoid(logit)).float()
            x[:, 0, r, c] = pixel
            windows[0].put(c, pixel.to(dtype).unsqueeze(1))
    return x


def _row_condition(layer, zmap: torch.Tensor, r: int, p: int) -> torch.Tensor:
    """The z map's contribution to row r of this layer's output: (B, cout, W)."""
    top, bottom = max(r - p, 0), min(r + p + 1, zmap.shape[2])
    window = F.pad(zmap[:, :, top:bottom], (0, 0, top - (r - p), (r + p + 1) - bottom))
    return F.conv2d(window, layer.cond.weight, padding=(0, p)).squeeze(2)


# --- he2019: residual bottlenecks with BatchNorm, ELU and direct connections ----------------------

class _Bottleneck:
    """One he2019 Bottleneck block at one position, its three BatchNorms folded."""

    def __init__(self, block, B: int, W: int, dtype: torch.dtype):
        self.dtype = dtype
        zero = torch.zeros(block.reduce.out_channels, device=block.reduce.weight.device)
        w, b = _fold(_matrix(block.reduce), zero, block.bn1)
        self.w_reduce, self.b_reduce = w.to(dtype), b.to(dtype)
        # the z term goes through bn1 too: only its scale applies (the shift is in b_reduce)
        scale1 = block.bn1.weight / torch.sqrt(block.bn1.running_var + block.bn1.eps)
        self.w_z = _matrix(block.z_proj) * scale1 if block.z_proj is not None else None
        self.conv = _Window(block.conv, B, W, dtype, block.bn2)
        w, b = _fold(_matrix(block.expand), torch.zeros_like(block.bn3.bias), block.bn3)
        self.w_expand, self.b_expand = w.to(dtype), b.to(dtype)

    def start_row(self, r: int, zmap: torch.Tensor) -> None:
        self.conv.start_row(r)
        if self.w_z is not None:  # (B, W, half)
            self.z_row = (zmap[:, :, r].transpose(1, 2) @ self.w_z).to(self.dtype)

    def __call__(self, c: int, h: torch.Tensor) -> torch.Tensor:
        a = h @ self.w_reduce + self.b_reduce
        if self.w_z is not None:
            a = a + self.z_row[:, c]
        self.conv.put(c, F.elu(a))  # mask B: the conv sees its own position too
        a = F.elu(self.conv(c))
        return F.elu(h + a @ self.w_expand + self.b_expand)


def _generate_he2019(net, zmap: torch.Tensor, noise: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    B, _, H, W = zmap.shape
    first = _Window(net.blocks[0].conv, B, W, dtype, net.blocks[0].bn)
    blocks = [_Bottleneck(b, B, W, dtype) for b in net.blocks[1:]]
    direct = [_Bottleneck(b, B, W, dtype) for b in net.direct]
    head_conv, head_bn, _, head_out = net.head
    w_head, b_head = _fold(_matrix(head_conv), torch.zeros_like(head_bn.bias), head_bn)
    w_head, b_head, w_out = w_head.to(dtype), b_head.to(dtype), _matrix(head_out).to(dtype)
    n = len(net.blocks)
    x = torch.zeros(B, 1, H, W, device=zmap.device)
    for r in range(H):
        first.start_row(r)
        for b in blocks + direct:
            b.start_row(r, zmap)
        for c in range(W):
            h = F.elu(first(c))
            jumps = [direct[0](c, h)] if direct else []  # jumps[j]: direct[j] of block j's output
            for i in range(1, n):
                if i >= 3:
                    h = h + jumps[i - 3]
                h = blocks[i - 1](c, h)
                if i < len(direct):
                    jumps.append(direct[i](c, h))
            if direct:
                h = h + jumps[-1]
            logit = (F.elu(h @ w_head + b_head) @ w_out).float().squeeze(1)
            pixel = (noise[:, 0, r, c] < torch.sigmoid(logit)).float()
            x[:, 0, r, c] = pixel
            first.put(c, pixel.to(dtype).unsqueeze(1))
    return x
