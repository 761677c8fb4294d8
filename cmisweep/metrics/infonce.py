"""InfoNCE (van den Oord et al. 2018) on I-hat's own critics: a cross-check from another family of
estimator (docs/design.md section 3).

For any score f(z, s), with K pairs (z_i, s_i) ~ q(z, s),

    I(z;s) >= E_i[ f(z_i, s_i) - log (1/K) sum_j exp f(z_j, s_i) ],

a lower bound that can never exceed log K. I-hat's exact-form critics (negatives q(z)q(s)) learn
f -> log q(z,s) / q(z)q(s), the score that makes the bound tight, so reading them this way needs no
training of its own. Every held-out encoding is a negative of every other (K = n_eval, not the
batch): log K must sit above the readings it checks (log 50 = 3.9 nats would not). The scores
reuse the embeddings of the E[logit] read-out (critic_training.read_out's `keep`).
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def pair_scores(ensemble, e: torch.Tensor, z: torch.Tensor, members: list[int],
                budget: int = 1 << 22) -> torch.Tensor:
    """f_k(z_j, s_i) for the chosen members k, every i (rows) and j (columns): (len(members), n, n)."""
    n, out = z.shape[0], []
    e = e[members]
    k = len(members)
    if ensemble.head == "dot":
        return torch.einsum("kie,je->kij", e, z)
    rows = max(1, budget // max(1, k * n * (e.shape[-1] + z.shape[-1])))
    full = _Members(ensemble, members)
    for i in range(0, n, rows):
        c = min(rows, n - i)
        ei = e[:, i: i + c].repeat_interleave(n, dim=1)  # (k, c*n, emb): s_i against every z_j
        zj = z.repeat(c, 1)[None].expand(k, -1, -1)
        out.append(full.score(ei, zj).float().reshape(k, c, n))
    return torch.cat(out, 1)


class _Members:
    """The score head of some members of an ensemble (the cosine scale and MLP weights sliced)."""

    def __init__(self, ensemble, members: list[int]):
        self.ensemble, self.members = ensemble, members

    def score(self, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ens, idx = self.ensemble, self.members
        if ens.head == "cosine":
            return ens.log_scale.exp()[idx][:, None] * torch.nn.functional.cosine_similarity(e, z, dim=-1)
        h = torch.cat([e, z], dim=-1)
        for i, (w, b) in enumerate(zip(ens.w, ens.b)):
            h = torch.baddbmm(b[idx][:, None], h, w[idx].transpose(1, 2))
            h = torch.relu(h) if i < len(ens.w) - 1 else h
        return h.squeeze(-1)


def infonce(scores: torch.Tensor) -> list[float]:
    """The bound per member from scores (k, n, n) whose diagonal holds the positive pairs."""
    n = scores.shape[-1]
    pos = scores.diagonal(dim1=1, dim2=2)
    bound = pos - torch.logsumexp(scores.double(), dim=2) + math.log(n)
    return bound.mean(1).tolist()
