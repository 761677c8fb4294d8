"""I-hat against an analytic answer, at the studies' scale (docs/design.md section 3.2).

A world of correlated Gaussians shaped as a study's encodings: z in R^z_dim (32 for the image
study, 64 for speech) and s of the model's shape ((8, 28, 28) maps, (20, 64) frames). k of z's
dimensions carry u ~ N(0, I_k):
    z_i = sigma (rho u_i + sqrt(1 - rho^2) eps_i)    (i < k; the others sigma eps_i)
where half of each eps_i's variance is q(z|x)'s own (fresh at every draw, as a trained encoder's
posterior; the studies' KL(z) of 0.2-1 nats a dimension leave q(z|x) about that share) and half is
fixed with x. (A point-mass posterior would let a critic learn each training pair by heart.)
    s[:, p] = Q [u; 0] + noise * n_p                 (every position p of s; Q a fixed rotation
                                                      of s's channels, n_p ~ N(0, I))
The positions' mean of s is sufficient for u, so with P positions
    I(z;s) = -k/2 log(1 - rho^2 / (1 + noise^2 / P))
    KL(q(z) || p(z)) = z_dim/2 (sigma^2 - 1 - log sigma^2)
and the paper form's target is their sum (mutual_info's docstring). A reading meets the bound when
it is within 0.1 nats of its target below 1 nat and within 15% above; a head and form that miss it
in any world carries no verdict (analysis.VERDICT_READINGS, measured by bench/ihat_truth.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from scipy.optimize import brentq

from cmisweep.models.protocol import CriticSpec, Gaussian

# a study's encodings by modality: (z_dim, shape of s, the model's own critic head)
SHAPES = {"image": (32, (8, 28, 28), "dot"), "speech": (64, (20, 64), "cosine")}
# the worlds: (I(z;s), KL(q(z)||p(z))) in nats; the paper form's target reaches 6 nats
LEVELS = ((0.5, 0.0), (2.0, 1.0), (4.0, 2.0))
K, NOISE = 8, 2.0  # z's dimensions that carry u; the per-position noise on s
POSTERIOR = 0.5  # the share of eps's variance that q(z|x) draws afresh


def within_bound(estimate: float, truth: float) -> bool:
    """|estimate - truth| <= 0.1 nats below 1 nat, <= 15% of truth above."""
    return abs(estimate - truth) <= (0.1 if truth < 1.0 else 0.15 * truth)


@dataclass(frozen=True)
class World:
    modality: str
    mi: float  # I(z;s), nats
    kl: float  # KL(q(z) || p(z)), nats

    @property
    def z_dim(self) -> int:
        return SHAPES[self.modality][0]

    @property
    def s_shape(self) -> tuple[int, ...]:
        return SHAPES[self.modality][1]

    @property
    def positions(self) -> int:
        shape = self.s_shape  # channels first for images, last for frames (as the critic reads them)
        return math.prod(shape[1:]) if len(shape) == 3 else shape[0]

    @property
    def rho(self) -> float:
        """rho such that -K/2 log(1 - rho^2 / (1 + NOISE^2 / P)) = mi."""
        rho2 = (1 - math.exp(-2 * self.mi / K)) * (1 + NOISE**2 / self.positions)
        if rho2 >= 1:
            raise ValueError(f"I(z;s) = {self.mi} nats is out of reach of {K} dimensions at {self.positions} positions")
        return math.sqrt(rho2)

    @property
    def sigma(self) -> float:
        """sigma >= 1 such that z_dim/2 (sigma^2 - 1 - log sigma^2) = kl."""
        if self.kl == 0:
            return 1.0
        f = lambda s: self.z_dim / 2 * (s * s - 1 - math.log(s * s)) - self.kl  # noqa: E731
        return brentq(f, 1.0, 10.0)

    def target(self, form: str) -> float:
        return self.mi + (self.kl if form == "paper" else 0.0)

    def posterior_var(self) -> torch.Tensor:
        """q(z|x)'s variance per dimension: POSTERIOR of the variance u leaves unexplained."""
        var = torch.full((self.z_dim,), POSTERIOR * self.sigma**2)
        var[:K] *= 1 - self.rho**2
        return var

    @property
    def s_sampled(self) -> bool:
        """Speech: s is drawn given x at every encoding (the DSAE's q(s|x, z)), so I-hat takes the
        pooled path a speech study takes; images: s is a function of x (the PixelCNN's features)."""
        return self.modality == "speech"

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """n 'inputs' x = [mean of q(z|x) | s flattened] for StandIn (where s is sampled: s's
        positions' common mean, and StandIn draws the per-position noise)."""
        g = torch.Generator().manual_seed(seed)
        u = torch.randn(n, K, generator=g)
        keep = math.sqrt(1 - POSTERIOR)  # the fixed part of eps
        z = self.sigma * keep * torch.randn(n, self.z_dim, generator=g)
        z[:, :K] = self.sigma * (self.rho * u + math.sqrt(1 - self.rho**2) * keep * torch.randn(n, K, generator=g))
        channels = self.s_shape[0] if len(self.s_shape) == 3 else self.s_shape[1]
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=torch.Generator().manual_seed(7)))
        mean = torch.cat([u, torch.zeros(n, channels - K)], 1) @ q.T  # (n, channels)
        if self.s_sampled:
            return torch.cat([z, mean], 1)
        return torch.cat([z, self.s_given(mean, g).flatten(1)], 1)

    def s_given(self, mean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """s: the positions' common mean plus per-position noise."""
        noise = NOISE * torch.randn(len(mean), *self.s_shape, generator=generator)
        return noise + (mean[:, :, None, None] if len(self.s_shape) == 3 else mean[:, None, :])


class StandIn:
    """An encoder whose encodings are the world's (z, s): q(z|x) = N(x's mean, the world's
    posterior variance), s read off x. What I-hat calls of a model: z_dim, critic_spec, encode,
    local_features."""

    def __init__(self, world: World):
        self.world = world
        self.z_dim, shape, head = SHAPES[world.modality]
        self.critic_spec = CriticSpec(shape, head)
        self.logvar = world.posterior_var().log()

    def encode(self, x):
        mean = x[:, : self.z_dim]
        return Gaussian(mean, self.logvar.to(mean).expand_as(mean))

    def local_features(self, x, z, sample=True):
        if self.world.s_sampled:
            return self.world.s_given(x[:, self.z_dim:]).to(x)
        return x[:, self.z_dim:].reshape(len(x), *self.critic_spec.s_shape)


@torch.no_grad()
def informed_plugin(world: World, n: int, seed: int = 0) -> float:
    """I(z;s) read off n encodings (drawn as I-hat draws them) by an estimator told what a critic
    must find: the Gaussian family and the statistic of s that carries z (its positions' mean).
    I = 1/2 log det S_z det S_m / det S of the sample covariances of (z, m = mean of s). Its error
    at n is what n encodings allow even an estimator told this much (a sample's bias ~
    dims(z) dims(m) / 2n): where it misses the bound, no head can be expected to meet it."""
    x, model = world.sample(n, seed), StandIn(world)
    torch.manual_seed(seed)
    z = model.encode(x).sample()
    z, s = z.double(), model.local_features(x, z).double()
    means = s.mean((2, 3)) if len(world.s_shape) == 3 else s.mean(1)
    joint = torch.cat([z, means], 1).T.cov()
    d = world.z_dim
    logdet = lambda m: torch.linalg.slogdet(m)[1].item()  # noqa: E731
    return 0.5 * (logdet(joint[:d, :d]) + logdet(joint[d:, d:]) - logdet(joint))


def measure(world: World, cfg, seed: int = 0) -> list[dict]:
    """Each head and form's reading in the world, as a study's evaluation reads it (cfg: its
    EvalConfig): rows of column (the trial's metric: analysis.IHAT_READINGS), target, estimate,
    std, within, and the InfoNCE reading of the same critics."""
    from cmisweep.metrics.mutual_info import ihat_metrics

    data = SimpleNamespace(val_x=world.sample(cfg.ihat.n_train, seed), test_x=world.sample(cfg.ihat.n_eval, seed + 1))
    m = ihat_metrics(StandIn(world), data, cfg, seed=seed)
    rows = []
    for prefix in ("ihat", "ihat_mlp"):
        for form in ("paper", "exact"):
            est, truth = m[f"{prefix}_{form}"], world.target(form)
            rows.append({"modality": world.modality, "mi": world.mi, "kl": world.kl,
                         "column": f"final/{prefix}_{form}",
                         "target": truth, "estimate": est, "std": m[f"{prefix}_{form}_std"],
                         "error": est - truth, "within": within_bound(est, truth),
                         "nce": m[f"{prefix}_nce"], "steps": m["ihat_steps"],
                         "converged": m.get("ihat_converged", np.nan)})
    return rows
