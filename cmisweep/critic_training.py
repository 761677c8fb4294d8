"""Critics trained with Eq. 12 of the paper and read out: the one loop of the trainer's critic
steps (beside the VAE, docs/design.md section 1) and of I-hat's fresh critics (section 3).

A critic D trained with the logistic loss of Eq. 12 to tell samples of q (label 1) from samples of
r (label 0) has logit log D/(1-D) -> log q/r, so KL(q||r) ~ E_q[logit]: regularizer.kl_estimate on
one batch (inside the objective, with its gradient), read_out over held-out batches (I-hat).

A critic here is a JointCritic (logits (B,)) or a CriticEnsemble of K of them (logits (K, B)),
used through what both have: embed(s) and score(e, z).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from cmisweep import regularizer as R

Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # batch size -> (z, s) ~ q(z, s)
Pairs = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # held-out (z, s) batches, streamed


def joint_loss(d_c, z: torch.Tensor, s: torch.Tensor, neg_z: torch.Tensor) -> torch.Tensor:
    """Eq. 12 for D_c on one batch: (z, s) ~ q(z, s) against (neg_z, s) (R.negative_z: the paper's
    p(z)q(s) or the exact q(z)q(s)). The negatives keep the batch's own s, so the embedding of s is
    computed once. An ensemble's K losses are summed: its members share no parameter, so each gets
    the gradient it would get alone."""
    e = d_c.embed(s)
    pos, neg = d_c.score(e, z).float(), d_c.score(e, neg_z).float()
    if pos.dim() == 1:
        return R.critic_loss(pos, neg)
    return sum(R.critic_loss(pos[k], neg[k]) for k in range(len(pos)))


def batch_loss(critics, z: torch.Tensor, s: torch.Tensor, c_form: R.CForm) -> torch.Tensor:
    """Eq. 12 summed over the trainer's critics, on one batch of encodings (z, s) ~ q(z, s):
    D_m ('m'): q(z) against z ~ p(z) (App. 4); D_c ('c'): joint_loss with fresh negatives of c_form."""
    loss = z.new_zeros(())
    if "m" in critics:
        d_m = critics["m"]
        loss = loss + R.critic_loss(d_m(z), d_m(torch.randn_like(z)))
    if "c" in critics:
        loss = loss + joint_loss(critics["c"], z, s, R.negative_z(z, c_form))
    return loss


def step(opt: torch.optim.Optimizer, loss: torch.Tensor, schedule=None) -> torch.Tensor:
    """One optimizer step of the critics on their Eq. 12 loss; returns the loss, detached."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if schedule is not None:
        schedule.step()
    return loss.detach()


def fit(ensembles: list, forms: list[str], generators: list[torch.Generator], sample: Sampler, steps: int,
        batch_size: int, lr: float, bf16: bool = False) -> None:
    """Train fresh critic ensembles (I-hat's) from their initial weights: each of `steps` steps
    draws one batch per input stream (a critic seed's own batches), and every member of every
    ensemble takes one step of Eq. 12 on its stream's batch against its own negatives (forms[k],
    drawn from generators[k]: member k of each ensemble). One Adam over all members is K Adams
    (elementwise, no parameter shared).

    The learning rate decays linearly to 0: at a constant rate the read-out wanders by ~10% of the
    true value from one step to the next (measured on correlated Gaussians), with the decay it
    settles. bf16: the forward pass under bf16 autocast (weights, optimizer and loss stay fp32),
    ~2x a fp32 step where bf16 is native (BENCHMARKS.md section 7)."""
    params = [p for e in ensembles for p in e.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    streams = ensembles[0].groups
    member_stream = ensembles[0].member_stream()
    for e in ensembles:
        e.train()
    for _ in range(steps):
        zs, ss = zip(*(sample(batch_size) for _ in range(streams)))
        z = torch.stack(zs)[member_stream.to(zs[0].device)]  # (K, B, D): each member's positives
        s = torch.stack(ss, dim=1)  # (B, G, *s_shape): the embedding reads each stream once
        neg = torch.stack([R.negative_z(z[k], f, generator=g) for k, (f, g) in enumerate(zip(forms, generators))])
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = sum(joint_loss(e, z, s, neg) for e in ensembles)
        step(opt, loss, schedule)


@torch.no_grad()
def read_out(ensembles: list, pairs: Pairs, keep: list[list] | None = None) -> list[list[float]]:
    """E_q[logit] of each member of each ensemble, all on the same held-out (z, s) batches
    (streamed: the s of an image model is large), in fp32 and summed in fp64. keep: one list per
    ensemble that collects each batch's (embeddings (K, B, emb), z (B, D)), for a second read-out
    of the same pairs (metrics/infonce.py) without embedding s again."""
    for e in ensembles:
        e.eval()
    totals, n = [torch.zeros(e.k, dtype=torch.float64) for e in ensembles], 0
    for z, s in pairs():
        for i, e in enumerate(ensembles):
            emb = e.embed(s[:, None].expand(-1, e.groups, *s.shape[1:]))
            totals[i] += e.score(emb, z[None].expand(e.k, *z.shape)).double().sum(1).cpu()
            if keep is not None:
                keep[i].append((emb.float(), z.float()))
        n += len(z)
    return [(t / n).tolist() for t in totals]
