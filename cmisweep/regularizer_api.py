"""The regularizer interface: what the trainer asks of any regularizer, built-in or plugged in
(docs/design.md section 9).

Each training step the trainer
  1. encodes the batch (model.elbo_terms), hands a Step to `loss` and takes one Adam step of the
     VAE on the loss it returns (the whole of -J, ELBO included; `elbo_loss` is the plain part);
  2. then takes `aux_steps` Adam steps (lr `aux_lr`, default 10x the VAE's) of the regularizer's
     auxiliary networks (`networks()`, the critics for the paper's methods) on `aux_loss`, with the
     batch's detached (z, s) or a fresh draw (regularizer.critic_z).
The networks, their optimizer, the torch RNG and the plug-in's own `state_dict()` go into every
checkpoint. In the VAE step the networks only read (no gradient to their weights), in the
precision and BatchNorm mode the config sets: call them through Step.read.

A plug-in subclasses Plugin: a `name`, a pydantic `Params` model of its parameters (validated with
the rest of the config), optionally the parameter that is its gamma axis (`gamma_param`: then it
can be paired with the paper's methods at equal gamma), and `loss` (+ `networks`, `aux_loss` when
it trains networks of its own). The paper's methods are `PaperJ`, through the same path.
"""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, ContextManager

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict

from cmisweep import critic_training
from cmisweep import regularizer as R
from cmisweep.models.critics import build_critics
from cmisweep.models.protocol import ElboTerms


@dataclass
class Step:
    """What a regularizer sees of one VAE step (or of one validation batch, with step = 0)."""

    x: torch.Tensor  # the batch
    terms: ElboTerms  # the ELBO's per-example terms and the samples z ~ q(z|x), s
    step: int  # the trainer's optimizer step, 1-based (0 in validation)
    nets: nn.ModuleDict  # the regularizer's own networks
    reading: Callable[[], ContextManager] = contextlib.nullcontext  # their precision and BatchNorm mode
    cast: Callable[[torch.Tensor], torch.Tensor] = lambda t: t  # inputs to their precision

    def read(self, fn: Callable[..., Any], *inputs: torch.Tensor):
        """fn(nets, *inputs) in the mode the trainer reads the networks in during this step."""
        inputs = tuple(self.cast(t) for t in inputs)
        with self.reading():
            return fn(self.nets, *inputs)


def elbo_loss(terms: ElboTerms) -> torch.Tensor:
    """-ELBO = Recon + KL(s) + KL(z), averaged over the batch: the vanilla loss (Eq. 2/3)."""
    return terms.recon.float().mean() + terms.kl_s.float().mean() + terms.kl_z.float().mean()


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Plugin(abc.ABC):
    """Base of a regularizer. Subclasses set the class attributes and define `loss`."""

    name: ClassVar[str] = "plugin"
    Params: ClassVar[type[BaseModel]] = NoParams
    gamma_param: ClassVar[str | None] = None  # the parameter that is its gamma axis, if any
    aux_steps: int = 0  # Adam steps of networks() per VAE step
    aux_lr: float | None = None  # default: 10x the VAE's lr (the paper's ratio for its critics)

    def __init__(self, params: BaseModel, model) -> None:
        self.params = params

    def networks(self) -> nn.ModuleDict:
        return nn.ModuleDict()

    @abc.abstractmethod
    def loss(self, step: Step) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(-J for this batch, a scalar; named batch means to log as train/<name>, val/<name>)."""

    def aux_loss(self, nets: nn.ModuleDict, z: torch.Tensor, s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The loss of networks() on detached encodings (z, s) of the batch x; a regularizer with
        networks of its own defines it (none: the trainer never calls it)."""
        raise TypeError(f"regularizer {self.name} has networks to train but no aux_loss")

    def state_dict(self) -> dict:
        """Any state of its own beyond networks() to checkpoint (e.g. a generator's state)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PaperJ(Plugin):
    """The paper's family (cmisweep.regularizer): -J = Recon + KL(s) + w_z KL(z) + w_m M + w_c C
    (Eq. 14), with D_m and D_c trained by Eq. 12 as its networks."""

    name = "paper"

    def __init__(self, reg: R.Regularizer, critics: nn.ModuleDict) -> None:
        super().__init__(NoParams(), None)
        self.reg, self.critics, self.aux_steps = reg, critics, reg.critic_steps

    def networks(self) -> nn.ModuleDict:
        return self.critics

    def loss(self, step: Step) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = step.terms
        m_logits, c_logits = step.read(R.critic_logits, t.z, t.s)
        parts = R.objective(self.reg, t.recon, t.kl_z, t.kl_s, m_logits, c_logits)
        logged = (("m_hat", parts.m_hat), ("c_hat", parts.c_hat), ("c_bounded", parts.c_bounded))
        return parts.loss, {k: v for k, v in logged if v is not None}

    def aux_loss(self, nets, z, s, x):
        return critic_training.batch_loss(nets, z, s, self.reg.c_form)


def build_regularizer(cfg, model) -> Plugin:
    """The regularizer a RegularizerConfig names, for this model: a plug-in with its validated
    params, or the paper's family with the critics its weights need."""
    if cfg.plugin is not None:
        cls = cfg.plugin_class
        return cls(cls.Params.model_validate(cfg.plugin_params), model)
    reg = cfg.objective
    critics = build_critics(model.z_dim, model.critic_spec, reg.uses_m, reg.uses_c, cfg.critic_head, cfg.critic_width)
    return PaperJ(reg, critics)
