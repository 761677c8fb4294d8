"""Fast ancestral sampling of the PixelCNN-VAE decoder with per-layer activation caches.

A position's activations at every layer depend only on the pixels before it in raster order, so
they are final as soon as the previous pixel is sampled. Each step therefore computes ONE position
per layer, from the cached activations of the layer below in that position's (masked) receptive
window, as one (B, taps * channels) x (taps * channels, maps) product, instead of running the
whole network (784 full passes). Each layer keeps only the k//2 + 1 rows its next layer can see,
in a ring buffer, channels last. The z map's contribution is a convolution per row.

Given the same uniform noise the samples equal those of `PixelCNNVAE.generate_naive` (a test
checks it); the products are summed in another order, so logits agree to float rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def cached_generate(model, z: torch.Tensor, noise: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Images (B, 1, H, W) for z (B, z_dim) with x_t = [noise_t < sigmoid(logit_t)]."""
    B, H = z.shape[0], model.image_size
    W, dev = H, z.device
    layers = list(model.layers)
    pads = [layer.k // 2 for layer in layers]
    # weights as (taps * cin, cout), taps = the k//2 + 1 upper rows x k columns, channels last
    weights = []
    for layer, p in zip(layers, pads):
        w = layer.masked_weight()[:, :, : p + 1]  # rows below the centre are zero
        weights.append(w.permute(2, 3, 1, 0).reshape(-1, w.shape[0]).to(dtype))
    biases = [layer.bias.to(dtype) for layer in layers]
    w_out = model.out.weight.view(1, -1).t().to(dtype)  # (maps, 1)
    b_out = model.out.bias.to(dtype)
    zmap = model.z_to_map(z).view(B, model.z_channels, H, W)
    # input buffer of layer l: rows r-p..r of its input, ring-indexed, padded by p columns each side
    bufs = [torch.zeros(B, p + 1, W + 2 * p, layer.weight.shape[1], device=dev, dtype=dtype)
            for layer, p in zip(layers, pads)]
    x = torch.zeros(B, 1, H, W, device=dev)
    for r in range(H):
        conds = []
        for layer, p, buf in zip(layers, pads, bufs):
            buf[:, (r + p) % (p + 1)] = 0  # the slot of row r held row r - p - 1, no longer visible
            conds.append(_row_condition(layer, zmap, r, p).to(dtype) if layer.cond is not None else None)
        rows = [torch.tensor([(r + i) % (p + 1) for i in range(p + 1)], device=dev) for p in pads]
        for c in range(W):
            h = None
            for i, (p, buf) in enumerate(zip(pads, bufs)):
                if i > 0:  # write the layer below's output at (r, c) into this layer's input
                    buf[:, (r + p) % (p + 1), c + p] = h
                window = buf[:, :, c: c + 2 * p + 1].index_select(1, rows[i])  # (B, p+1, k, cin)
                h = window.reshape(B, -1) @ weights[i] + biases[i]
                if conds[i] is not None:
                    h = h + conds[i][:, :, c]
                h = F.relu(h)
            logit = (h @ w_out + b_out).float().squeeze(1)
            pixel = (noise[:, 0, r, c] < torch.sigmoid(logit)).float()
            x[:, 0, r, c] = pixel
            p0 = pads[0]
            bufs[0][:, (r + p0) % (p0 + 1), c + p0, 0] = pixel.to(dtype)
    return x


def _row_condition(layer, zmap: torch.Tensor, r: int, p: int) -> torch.Tensor:
    """The z map's contribution to row r of this layer's output: (B, cout, W)."""
    top, bottom = max(r - p, 0), min(r + p + 1, zmap.shape[2])
    window = F.pad(zmap[:, :, top:bottom], (0, 0, top - (r - p), (r + p + 1) - bottom))
    return F.conv2d(window, layer.cond.weight, padding=(0, p)).squeeze(2)
