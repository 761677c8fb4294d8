"""A small sequential VAE as a cmisweep model plug-in: an image read as a sequence of rows.

z is global (one per image); each row t has a local latent s_t ~ q(s_t | x_t, z), and the row's
pixels are Bernoulli given (s_t, z): p(x | z, s) = prod_t p(x_t | s_t, z). The ELBO's terms are
Recon = -log p(x | z, s), KL(z) and KL(s) = sum_t KL(q(s_t | x_t, z) || N(0, I)), as the DSAE
has for speech frames. Use: trial.model: {kind: plugin, plugin: "examples/row_vae.py:RowVAE"}.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from cmisweep.models.protocol import CriticSpec, ElboTerms, Gaussian


class RowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    z_dim: int = Field(16, gt=0)
    s_dim: int = Field(8, gt=0)
    hidden: int = Field(128, gt=0)


def _gaussian(h):
    mean, logvar = h.chunk(2, dim=-1)
    return Gaussian(mean.float(), logvar.float().clamp(-12.0, 8.0))


class RowVAE(nn.Module):
    name = "row_vae"
    Params = RowParams
    modality = "image"

    def __init__(self, params: RowParams, x_shape):
        super().__init__()
        _, rows, cols = x_shape
        self.z_dim, self.shape = params.z_dim, tuple(x_shape)
        self.critic_spec = CriticSpec((rows, params.s_dim), "cosine")
        self.q_z = nn.Sequential(nn.Flatten(), nn.Linear(rows * cols, params.hidden), nn.ReLU(),
                                 nn.Linear(params.hidden, 2 * params.z_dim))
        self.q_s = nn.Sequential(nn.Linear(cols + params.z_dim, params.hidden), nn.ReLU(),
                                 nn.Linear(params.hidden, 2 * params.s_dim))
        self.p_x = nn.Sequential(nn.Linear(params.s_dim + params.z_dim, params.hidden), nn.ReLU(),
                                 nn.Linear(params.hidden, cols))

    def encode(self, x):
        return _gaussian(self.q_z(x.float()))

    def _rows(self, x, z):  # (B, rows, cols + z_dim): each row beside the global z
        rows = x.float().squeeze(1)
        return torch.cat([rows, z[:, None, :].expand(-1, rows.shape[1], -1)], -1)

    def _q_s(self, x, z):
        return _gaussian(self.q_s(self._rows(x, z)))

    def local_features(self, x, z, sample=True):
        q = self._q_s(x, z)
        return q.sample() if sample else q.mean

    def _logits(self, z, s):
        return self.p_x(torch.cat([s, z[:, None, :].expand(-1, s.shape[1], -1)], -1)).unsqueeze(1)

    def elbo_terms(self, x):
        qz = self.encode(x)
        z = qz.sample()
        qs = self._q_s(x, z)
        s = qs.sample()
        recon = F.binary_cross_entropy_with_logits(self._logits(z, s).float(), x.float(), reduction="none").sum((1, 2, 3))
        return ElboTerms(recon, qz.kl_standard_normal(), qs.kl_standard_normal().sum(-1), z, s, qz.mean)

    @torch.no_grad()
    def generate(self, z, n=1, noise=None):
        z = z.repeat_interleave(n, dim=0)
        s = torch.randn(len(z), self.critic_spec.s_shape[0], self.critic_spec.s_shape[1], device=z.device)
        p = torch.sigmoid(self._logits(z, s).float())
        u = torch.rand_like(p) if noise is None else noise.reshape(p.shape)
        return (u < p).float()
