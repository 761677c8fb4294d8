"""CLUB (Cheng et al., ICML 2020) as a cmisweep regularizer: -ELBO + lam * I_CLUB(z; s).

I_CLUB = E_p(z,s)[log q(z|s)] - E_p(z)p(s)[log q(z|s)] is an upper bound on I(z;s) when the
variational q(z|s) (a Gaussian here) fits p(z|s); q is trained beside the VAE by maximum likelihood
on the batch's (z, s) pairs, its own network and optimizer, as the paper's critics are. `lam` is the
gamma axis, so CLUB pairs with CMI at equal gamma. Use: search.plugins: {club: "examples/club.py:Club"}.
"""
import math

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from cmisweep.regularizer_api import Plugin, Step, elbo_loss


class ClubParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lam: float = Field(0.0, ge=0)  # the weight of I_CLUB: the gamma axis
    hidden: int = Field(64, gt=0)  # width of q(z|s)
    steps: int = Field(2, ge=1)  # q's steps per VAE step


class GaussianQ(nn.Module):
    """q(z|s) = N(mu(s), exp(logvar(s))) from flattened s."""

    def __init__(self, s_shape, z_dim, hidden):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s_shape), hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * z_dim))

    def forward(self, s):
        mu, logvar = self.net(s.float()).chunk(2, dim=-1)
        return mu, torch.tanh(logvar) * 5  # bounded log-variance keeps the likelihood stable

    def loglik(self, z, s):  # log q(z_i | s_i) up to a constant, summed over z's dimensions
        mu, logvar = self(s)
        return (-(z.float() - mu) ** 2 / logvar.exp() / 2 - logvar / 2).sum(-1)

    def club(self, z, s):  # I_CLUB on a batch: paired minus all-pairs log-likelihood
        mu, logvar = self(s)
        z = z.float()
        pos = (-(z - mu) ** 2 / logvar.exp() / 2).sum(-1)
        neg = (-(z[None, :, :] - mu[:, None, :]) ** 2 / logvar.exp()[:, None, :] / 2).sum(-1).mean(1)
        return (pos - neg).mean()


class Club(Plugin):
    name = "club"
    Params = ClubParams
    gamma_param = "lam"

    def __init__(self, params: ClubParams, model):
        super().__init__(params, model)
        self.aux_steps = params.steps
        self.nets = nn.ModuleDict({"q": GaussianQ(model.critic_spec.s_shape, model.z_dim, params.hidden)})

    def networks(self):
        return self.nets

    def loss(self, step: Step):
        mi = step.read(lambda nets, z, s: nets["q"].club(z, s), step.terms.z, step.terms.s)
        return elbo_loss(step.terms) + self.params.lam * mi, {"club_mi": mi.detach()}

    def aux_loss(self, nets, z, s, x):
        return -nets["q"].loglik(z, s).mean()
