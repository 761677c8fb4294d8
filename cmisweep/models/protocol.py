"""The small protocol every sequential VAE here implements; the trainer, the regularizer and the
metrics see only this, never which model they have."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass
class Gaussian:
    """Diagonal Gaussian q(z|x) = N(mean, exp(logvar))."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self) -> torch.Tensor:
        return self.mean + torch.randn_like(self.mean) * torch.exp(0.5 * self.logvar)

    def kl_standard_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over the last dimension."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(-1)


def gaussian_kl(q: Gaussian, p: Gaussian) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, elementwise (no sum)."""
    return 0.5 * (p.logvar - q.logvar + (q.logvar.exp() + (q.mean - p.mean).pow(2)) / p.logvar.exp() - 1.0)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, exp(logvar)), elementwise."""
    return 0.5 * (math.log(2 * math.pi) + logvar + (x - mean).pow(2) / logvar.exp())


@dataclass
class ElboTerms:
    """Per-example terms of the ELBO (sums over pixels / time and features, shape (B,)), plus the
    samples the regularizer's critics look at."""

    recon: torch.Tensor  # -log p(x | z, s)
    kl_z: torch.Tensor  # KL(q(z|x) || p(z))
    kl_s: torch.Tensor  # KL(q(s|x,z) || p(s)); zeros where s is deterministic
    z: torch.Tensor  # z ~ q(z|x), (B, z_dim)
    s: torch.Tensor  # local features s, (B, ...) as the model defines them
    z_mean: torch.Tensor  # E_q(z|x)[z], (B, z_dim): the active-unit count reads it (metrics/active_units.py)


@dataclass(frozen=True)
class CriticSpec:
    """What the D_c critic needs to know about s: its shape per example and the paper's head."""

    s_shape: tuple[int, ...]
    head: str  # "dot" | "cosine"


@runtime_checkable
class SequentialVAE(Protocol):
    z_dim: int
    critic_spec: CriticSpec

    def encode(self, x: torch.Tensor) -> Gaussian:
        """q(z | x)."""

    def elbo_terms(self, x: torch.Tensor) -> ElboTerms:
        """Sample z ~ q(z|x) (and s), return the ELBO's terms and the samples."""

    def local_features(self, x: torch.Tensor, z: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """s for given x and z: a sample where s is random (its posterior means if not sample),
        the deterministic map otherwise."""

    def generate(self, z: torch.Tensor, n: int = 1) -> torch.Tensor:
        """n samples of x for each z, (len(z) * n, ...), the n samples of one z adjacent."""
