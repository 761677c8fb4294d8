"""The one objective of this project, in the paper's notation (docs/design.md section 1).

Maximize

    J = -Recon - KL(s) - w_z KL(z) - w_m M - w_c C          (Eq. 14 of the paper)
    w_z = 1 - alpha,  w_m = alpha - gamma,  w_c = gamma

    M = KL(q(z) || p(z))          estimated with a critic D_m(z)
    C = KL(q(z,s) || p(z) q(s))   estimated with a critic D_c(z, s)

which equals ELBO + alpha I(x;z) - gamma I(z;s) because
I(x;z) = E_x KL(q(z|x)||p(z)) - KL(q(z)||p(z)) and KL(q(z,s)||p(z)q(s)) = I(z;s) + KL(q(z)||p(z)).
Here alpha and gamma are J's own; the gamma a user searches (the paper's knob, `search.gamma`) is
J's alpha for beta and advmi, whose w_c is 0. So the code names J's weights w_z, w_m, w_c and keeps
"gamma" for the searched knob alone.

A critic D trained with the logistic loss of Eq. 12 to tell samples of a distribution q (label 1)
from samples of r (label 0) has logit log D/(1-D) -> log q/r, so KL(q||r) ~ E_q[logit].

With the exact negatives for D_c (z shuffled across the batch, i.e. q(z)q(s)), C estimates I(z;s)
itself and KL(q(z)||p(z)) is no longer folded into it: w_m becomes alpha.

Where s depends on z only through x (z and s independent given x under q), I(z;s) <= I(x;z), so
either form of C is at most E_x KL(q(z|x)||p(z)), the KL(z) of the ELBO. `c_bound: kl_z` uses
min(C-hat, KL(z)) in J on each batch: a read above that bound on average is wrong, and J then takes
the bound (value and gradient) instead (docs/design.md section 1).

A regularizer is data (J's alpha and w_c, and which critics run), not a class per paper; `preset`
builds the paper's methods from the knob:

    vanilla  alpha = w_c = 0                           Eq. 2/3  (the ELBO)
    beta     alpha = knob, w_c = 0, M dropped          Eq. 15/16 (beta-VAE with beta = w_z = 1 - knob)
    advmi    alpha = knob, w_c = 0, M estimated (D_m)  App. 4
    cmi      alpha = w_c = knob, M vanishes, C (D_c)   Eq. 13/14
    cmi with alpha != knob                             the extension (M dropped only as a lower bound)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Preset = Literal["vanilla", "beta", "advmi", "cmi"]
PRESETS: tuple[str, ...] = get_args(Preset)
# the presets that train no critic (M dropped, w_c = 0): the critics' settings are nothing to them
CRITICLESS_PRESETS = frozenset({"vanilla", "beta"})
# the presets without C (w_c = 0): how C is read (c_form, c_bound) is nothing to them
PRESETS_WITHOUT_C = CRITICLESS_PRESETS | {"advmi"}
MTerm = Literal["auto", "estimate", "drop"]
CForm = Literal["paper", "exact"]
CBound = Literal["none", "kl_z"]  # C-hat as read, or capped at the batch's KL(z) (its upper bound)
# How the critics are trained beside the VAE (docs/design.md section 1; the defaults are the
# paper's procedure as this project reads it, the others exist for the KL(z) ablation):
CriticPrecision = Literal["same", "fp32", "bf16"]  # same: the VAE's training precision
CriticZ = Literal["reuse", "resample"]  # critic steps on the VAE step's (z, s), or a fresh draw each
CriticBN = Literal["frozen", "train", "eval"]  # the critics' BatchNorm while the VAE step reads them


@dataclass(frozen=True)
class Regularizer:
    alpha: float = 0.0  # J's alpha, the weight of I(x;z): w_z = 1 - alpha
    w_c: float = 0.0  # J's gamma, the weight of C (and of I(z;s)): the knob for cmi only, 0 for beta/advmi
    m_term: Literal["estimate", "drop"] = "drop"
    c_form: CForm = "paper"
    critic_steps: int = 2
    allow_weights_above_one: bool = False
    preset: str = "custom"
    c_bound: CBound = "none"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(problems[0])

    def problems(self) -> list[str]:
        out = []
        for name in ("alpha", "w_c"):
            v = getattr(self, name)
            if v < 0:
                out.append(f"{name} = {v} must be >= 0")
            if v > 1 and not self.allow_weights_above_one:
                out.append(
                    f"{name} = {v} > 1: a weight above 1 flips the sign of the KL(z) term (w_z = 1 - alpha) "
                    "or of the I(z;s) penalty; set allow_weights_above_one: true to accept it"
                )
        if self.m_term == "drop" and self.w_m > 0 and self.w_c > 0:
            out.append(
                f"m_term 'drop' with alpha = {self.alpha}, w_c = {self.w_c} ({self.c_form} C) drops "
                f"-{self.w_m:g} M, which is not a bound on the objective; use m_term: estimate "
                "(dropping M is a lower bound only when its weight w_m = alpha - w_c <= 0, Eq. 9)"
            )
        if self.critic_steps < 1:
            out.append(f"critic_steps = {self.critic_steps} must be >= 1")
        return out

    @property
    def w_z(self) -> float:
        """Weight of KL(z) in -J: 1 - alpha (beta of the beta-VAE)."""
        return 1.0 - self.alpha

    @property
    def w_m(self) -> float:
        """Weight of M in -J: alpha - w_c with the paper's C, alpha with the exact I(z;s)."""
        return self.alpha - self.w_c if self.c_form == "paper" else self.alpha

    @property
    def uses_m(self) -> bool:
        return self.m_term == "estimate" and self.w_m != 0

    @property
    def uses_c(self) -> bool:
        return self.w_c != 0


def preset(
    name: str,
    knob: float = 0.0,
    alpha: float | None = None,
    *,
    m_term: MTerm = "auto",
    c_form: CForm = "paper",
    critic_steps: int = 2,
    allow_weights_above_one: bool = False,
    c_bound: CBound = "none",
) -> Regularizer:
    """Build a regularizer from the paper's knob, the gamma of its Fig. 3 and tables (docs/design.md
    section 1): J's alpha for beta/advmi (w_c = 0), alpha = w_c = knob for cmi; cmi takes an
    independent `alpha` too."""
    common = dict(critic_steps=critic_steps, allow_weights_above_one=allow_weights_above_one, preset=name,
                  c_bound=c_bound)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    if alpha is not None and name != "cmi":
        raise ValueError(f"alpha is set independently only with preset cmi; preset {name} takes the knob alone")
    if name == "vanilla":
        if knob != 0:
            raise ValueError(f"preset vanilla has alpha = w_c = 0, got knob = {knob}")
        return Regularizer(0.0, 0.0, "drop", c_form, **common)
    if name in ("beta", "advmi"):
        if m_term != "auto" and m_term != ("drop" if name == "beta" else "estimate"):
            raise ValueError(f"preset {name} fixes m_term; leave it at auto")
        return Regularizer(knob, 0.0, "drop" if name == "beta" else "estimate", c_form, **common)
    a = knob if alpha is None else alpha
    if m_term == "auto":
        w = a - knob if c_form == "paper" else a
        m_term = "drop" if w <= 0 else "estimate"
    return Regularizer(a, knob, m_term, c_form, **common)


# --- the critics' side: Eq. 12 and the density-ratio read-out (trained in cmisweep.critic_training) ---


def critic_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Logistic loss of Eq. 12: -E_q[log D] - E_r[log(1 - D)] with D = sigmoid(logit)."""
    pos_logits, neg_logits = pos_logits.float(), neg_logits.float()
    return F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits)) + (
        F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
    )


def kl_estimate(pos_logits: torch.Tensor) -> torch.Tensor:
    """KL(q||r) ~ E_q[log D/(1-D)] = E_q[logit] for the optimal critic."""
    return pos_logits.float().mean()


def negative_z(z: torch.Tensor, form: CForm, generator: torch.Generator | None = None) -> torch.Tensor:
    """Negatives for D_c, paired with the batch's own s: z ~ p(z) = N(0, I) (the paper: p(z)q(s)),
    or z shuffled across the batch (exact: q(z)q(s), the FactorVAE trick). generator: a CPU
    generator of its own (I-hat's critic ensemble gives each member one), else torch's global."""
    if form == "paper":
        if generator is None:
            return torch.randn_like(z)
        return torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    if generator is None:
        return z[torch.randperm(z.shape[0], device=z.device)]
    return z[torch.randperm(z.shape[0], generator=generator).to(z.device)]


@dataclass
class ObjectiveParts:
    """Batch means of the terms of -J (the loss) and of J itself."""

    loss: torch.Tensor
    recon: torch.Tensor
    kl_z: torch.Tensor
    kl_s: torch.Tensor
    m_hat: torch.Tensor | None
    c_hat: torch.Tensor | None  # the critic's read, before any bound
    c_bounded: torch.Tensor | None = None  # 1.0 where c_bound replaced the read by KL(z), else 0.0


def objective(
    reg: Regularizer,
    recon: torch.Tensor,
    kl_z: torch.Tensor,
    kl_s: torch.Tensor,
    m_logits: torch.Tensor | None = None,
    c_logits: torch.Tensor | None = None,
) -> ObjectiveParts:
    """-J = Recon + KL(s) + w_z KL(z) + w_m M + w_c C (Eq. 14), averaged over the batch.

    recon, kl_z, kl_s: per-example sums (B,); m_logits = D_m logits at z ~ q(z|x);
    c_logits = D_c logits at (z, s) ~ q(z, s).
    """
    recon, kl_z, kl_s = recon.float().mean(), kl_z.float().mean(), kl_s.float().mean()
    loss = recon + kl_s + reg.w_z * kl_z
    m_hat = c_hat = c_bounded = None
    if reg.uses_m:
        if m_logits is None:
            raise ValueError("this regularizer estimates M: pass the D_m logits")
        m_hat = kl_estimate(m_logits)
        loss = loss + reg.w_m * m_hat
    if reg.uses_c:
        if c_logits is None:
            raise ValueError("this regularizer estimates C: pass the D_c logits")
        c_hat = kl_estimate(c_logits)
        c_term = c_hat
        if reg.c_bound == "kl_z":  # C <= KL(z) where z and s are independent given x (module docstring)
            c_term = torch.minimum(c_hat, kl_z)
            c_bounded = (c_hat > kl_z).float()
        loss = loss + reg.w_c * c_term
    return ObjectiveParts(loss, recon, kl_z, kl_s, m_hat, c_hat, c_bounded)


def critic_logits(critics, z: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Logits of D_m at z ~ q(z) and of D_c at (z, s) ~ q(z, s): the positives of each critic,
    and the inputs of M and C in the objective."""
    m = critics["m"](z) if "m" in critics else None
    c = critics["c"](s, z) if "c" in critics else None
    return m, c

