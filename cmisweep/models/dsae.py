"""DSAE, the "full model" of Li & Mandt (2018), for speech (the paper's Sect. 6.3, App. 1;
docs/design.md section 2).

    q(z | x_1:T)          a BiLSTM over x_1:T, its two final states -> mean, log-variance (z: 64)
    q(s_t | x, z, s_<t)   a BiLSTM over [x_t, z], then a forward LSTM fed [BiLSTM_t, s_t-1] (s_t: 64)
    p(s_t | s_<t)         an LSTM fed the POSTERIOR sample s_t-1 (s_0 = 0). One public version
                          feeds the prior its own samples during training; that is a bug, not the model.
    p(x_t | s_t, z)       an MLP to the mean of a Gaussian with a learned (per-feature) variance

Recon, KL(z) and KL(s) are sums over time and features (the paper's choice: it sets the balance
of the three terms). s is random here, so KL(s) = sum_t KL(q(s_t|.) || p(s_t|s_<t)) along the
sampled path.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from cmisweep.models.protocol import CriticSpec, ElboTerms, Gaussian, gaussian_kl, gaussian_nll


def _gaussian(params: torch.Tensor) -> Gaussian:
    mean, logvar = params.float().chunk(2, dim=-1)
    return Gaussian(mean, logvar.clamp(-12.0, 8.0))


class DSAE(nn.Module):
    def __init__(self, x_dim: int = 201, frames: int = 20, z_dim: int = 64, s_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.x_dim, self.frames, self.z_dim, self.s_dim, self.hidden = x_dim, frames, z_dim, s_dim, hidden
        self.z_rnn = nn.LSTM(x_dim, hidden, batch_first=True, bidirectional=True)
        self.z_head = nn.Linear(2 * hidden, 2 * z_dim)
        self.s_birnn = nn.LSTM(x_dim + z_dim, hidden, batch_first=True, bidirectional=True)
        self.s_rnn = nn.LSTMCell(2 * hidden + s_dim, hidden)
        self.s_head = nn.Linear(hidden, 2 * s_dim)
        self.prior_rnn = nn.LSTM(s_dim, hidden, batch_first=True)
        self.prior_head = nn.Linear(hidden, 2 * s_dim)
        self.decoder = nn.Sequential(
            nn.Linear(s_dim + z_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, x_dim)
        )
        self.dec_logvar = nn.Parameter(torch.zeros(x_dim))
        self.critic_spec = CriticSpec((frames, s_dim), "cosine")
        self.fast_precision = "fp32"  # bf16 autocast gains nothing on these LSTMs (bench/train_step.py)

    # --- the pieces ------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> Gaussian:
        _, (h, _) = self.z_rnn(x.float())
        return _gaussian(self.z_head(torch.cat([h[0], h[1]], dim=-1)))

    def posterior_s(self, x: torch.Tensor, z: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, Gaussian]:
        """A path s_1:T from q(s_t | x, z, s_<t) (means along the path if not sample), and q's params."""
        B, T, _ = x.shape
        h, _ = self.s_birnn(torch.cat([x.float(), z.unsqueeze(1).expand(B, T, self.z_dim)], dim=-1))
        state = None
        s_prev = x.new_zeros(B, self.s_dim, dtype=h.dtype)
        path, means, logvars = [], [], []
        for t in range(T):
            state = self.s_rnn(torch.cat([h[:, t], s_prev], dim=-1), state)
            q = _gaussian(self.s_head(state[0]))
            s_prev = q.sample() if sample else q.mean
            path.append(s_prev)
            means.append(q.mean)
            logvars.append(q.logvar)
            s_prev = s_prev.to(h.dtype)
        return torch.stack(path, 1), Gaussian(torch.stack(means, 1), torch.stack(logvars, 1))

    def prior_s(self, s: torch.Tensor) -> Gaussian:
        """p(s_t | s_<t) for every t given a path s (B, T, s_dim): the LSTM reads s_0 = 0, s_1..s_T-1."""
        shifted = torch.cat([s.new_zeros(s.shape[0], 1, self.s_dim), s[:, :-1]], dim=1)
        out, _ = self.prior_rnn(shifted)
        return _gaussian(self.prior_head(out))

    def decode(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x_t | s_t, z), (B, T, x_dim)."""
        B, T, _ = s.shape
        return self.decoder(torch.cat([s, z.unsqueeze(1).expand(B, T, z.shape[-1]).to(s.dtype)], dim=-1))

    # --- protocol ----------------------------------------------------------------------------------

    def elbo_terms(self, x: torch.Tensor) -> ElboTerms:
        x = x.float()
        qz = self.encode(x)
        z = qz.sample()
        s, qs = self.posterior_s(x, z)
        ps = self.prior_s(s)
        mean = self.decode(s, z).float()
        recon = gaussian_nll(x, mean, self.dec_logvar).sum((1, 2))
        kl_s = gaussian_kl(qs, ps).sum((1, 2))
        return ElboTerms(recon, qz.kl_standard_normal(), kl_s, z, s, qz.mean)

    def local_features(self, x: torch.Tensor, z: torch.Tensor, sample: bool = True) -> torch.Tensor:
        return self.posterior_s(x, z, sample)[0]

    @torch.no_grad()
    def generate(self, z: torch.Tensor, n: int = 1, noise=None) -> torch.Tensor:
        """n spectrogram segments per z: s_1:T from the prior, x_t the decoder mean."""
        z = z.repeat_interleave(n, dim=0)
        s_prev = z.new_zeros(z.shape[0], 1, self.s_dim)
        state, path = None, []
        for _ in range(self.frames):
            out, state = self.prior_rnn(s_prev, state)
            s_prev = _gaussian(self.prior_head(out)).sample()
            path.append(s_prev)
        return self.decode(torch.cat(path, 1), z)

    @torch.no_grad()
    def convert(self, x: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
        """Voice conversion: s from the source (posterior means given its own z), decoded with z_target."""
        z_own = self.encode(x).mean
        s, _ = self.posterior_s(x, z_own, sample=False)
        return self.decode(s, z_target)
