"""Sample grids like the paper's Fig. 4: each row a real image, then samples from its z."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def grid_array(real: torch.Tensor, samples: torch.Tensor, pad: int = 2) -> np.ndarray:
    """real (R, 1, H, W), samples (R * n, 1, H, W) -> one (R*(H+pad), (n+1)*(W+pad)) image in [0, 1],
    with a wider gap after the real column."""
    r, h, w = real.shape[0], real.shape[-2], real.shape[-1]
    n = samples.shape[0] // r
    gap = 3 * pad
    out = np.full((r * (h + pad) + pad, (n + 1) * (w + pad) + pad + gap), 0.5, dtype=np.float32)
    real = real.reshape(r, h, w).float().cpu().numpy()
    samples = samples.reshape(r, n, h, w).float().cpu().numpy()
    for i in range(r):
        top = pad + i * (h + pad)
        out[top: top + h, pad: pad + w] = real[i]
        for j in range(n):
            left = pad + gap + (j + 1) * (w + pad)
            out[top: top + h, left: left + w] = samples[i, j]
    return out


def save_grid(real: torch.Tensor, samples: torch.Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid_array(real, samples), cmap="gray", vmin=0.0, vmax=1.0)
    return path
