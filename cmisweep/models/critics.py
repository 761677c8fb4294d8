"""Critics D_m(z) and D_c(z, s) (paper App. 5; docs/design.md section 2). Each returns logits
log D/(1-D), the density-ratio estimate the regularizer reads.

D_c embeds s with a small conv net chosen by the shape of s (images: Conv2d, sequences (T, D):
Conv1d over time, vectors: an MLP), mean-pools, and scores the embedding against z:
  dot     <e(s), z>                         (the paper's PixelCNN-VAE critic)
  cosine  scale * cos(e(s), z)              (the paper's DSAE critic, learnable scale)
  mlp     MLP([e(s), z])                    (an expressive head: the two above are linear in z
                                             and cannot represent a Gaussian log-ratio, whose
                                             quadratic z term needs this)
The embedding depends on s alone, so positives and negatives (which share s) reuse it.
"""
from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

Head = Literal["dot", "cosine", "mlp"]
HEADS: tuple[str, ...] = get_args(Head)
HeadChoice = Literal["model", Head]  # "model": the model's own head (its CriticSpec)


def resolve_head(choice: str, spec) -> str:
    """The head a config's choice names: "model" -> the model's own (its CriticSpec: the paper's
    dot for the PixelCNN-VAE, cosine for the DSAE), else the head named."""
    return spec.head if choice == "model" else choice


class MarginalCritic(nn.Module):
    """D_m for AdvMI: Linear(z_dim, 400)-ReLU-Linear(400, 1)."""

    def __init__(self, z_dim: int, hidden: int = 400):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


def _conv_embedding(conv: type[nn.Module], bn: type[nn.Module], cin: int, width: int, out: int,
                    length: int) -> nn.Sequential:
    """Conv(width,4,2,1)-BN-ReLU-Conv(width,4,2,1)-BN-ReLU-Conv(out,4,2,1) (App. 5). A layer whose
    input is shorter than 4 (short sequences, e.g. JapaneseVowels' 7 frames) keeps its length
    with Conv(3,1,1) instead of halving it to nothing."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(((cin, width), (width, width), (width, out))):
        if length >= 4:
            layers.append(conv(a, b, 4, 2, 1))
            length //= 2
        else:
            layers.append(conv(a, b, 3, 1, 1))
        if i < 2:
            layers += [bn(b), nn.ReLU()]
    return nn.Sequential(*layers)


class JointCritic(nn.Module):
    """D_c(z, s)."""

    def __init__(self, z_dim: int, s_shape: tuple[int, ...], head: str = "dot", width: int = 256):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"critic head must be one of {HEADS}, got {head!r}")
        self.head, self.s_rank = head, len(s_shape)
        emb = z_dim if head != "mlp" else width
        if len(s_shape) == 3:  # (C, H, W)
            self.embed_net = _conv_embedding(nn.Conv2d, nn.BatchNorm2d, s_shape[0], width, emb, min(s_shape[1:]))
        elif len(s_shape) == 2:  # (T, D): Conv1d over time with D channels
            self.embed_net = _conv_embedding(nn.Conv1d, nn.BatchNorm1d, s_shape[1], width, emb, s_shape[0])
        elif len(s_shape) == 1:
            self.embed_net = nn.Sequential(
                nn.Linear(s_shape[0], width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, emb)
            )
        else:
            raise ValueError(f"unsupported shape of s: {s_shape}")
        if head == "cosine":
            self.log_scale = nn.Parameter(torch.tensor(1.6))  # scale e^1.6 ~ 5 at start
        if head == "mlp":
            self.score_net = nn.Sequential(
                nn.Linear(emb + z_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
            )

    def embed(self, s: torch.Tensor) -> torch.Tensor:
        if self.s_rank == 2:
            s = s.transpose(1, 2)  # (B, T, D) -> (B, D, T)
        e = self.embed_net(s)
        return e.flatten(2).mean(-1) if e.dim() > 2 else e

    def score(self, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.head == "dot":
            return (e * z).sum(-1)
        if self.head == "cosine":
            return self.log_scale.exp() * F.cosine_similarity(e, z, dim=-1)
        return self.score_net(torch.cat([e, z], dim=-1)).squeeze(-1)

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.score(self.embed(s), z)


def build_critics(z_dim: int, spec, uses_m: bool, uses_c: bool, head: str = "model", width: int = 256) -> nn.ModuleDict:
    """The critics a regularizer needs: 'm' -> D_m(z), 'c' -> D_c(z, s) with the head
    resolve_head picks."""
    critics = nn.ModuleDict()
    if uses_m:
        critics["m"] = MarginalCritic(z_dim)
    if uses_c:
        critics["c"] = JointCritic(z_dim, spec.s_shape, resolve_head(head, spec), width)
    return critics
