"""I-hat(z;s) by fresh critics trained after training on held-out encodings (paper Table 1).

Two forms, each a JointCritic trained with Eq. 12 and read out as E_q[logit]:
  paper: negatives p(z)q(s)  -> estimates KL(q(z,s) || p(z)q(s)) = I(z;s) + KL(q(z)||p(z))
  exact: negatives q(z)q(s)  -> estimates I(z;s)
One critic's estimate moves by ~0.2 nats between seeds, as much as the effect being measured, so
the metric averages several critic seeds and reports mean and spread.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np
import torch

from cmisweep import regularizer as R
from cmisweep.config import EvalConfig
from cmisweep.models.critics import JointCritic

Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # batch size -> (z, s) ~ q(z, s)


def fit_critics(critics: dict[str, JointCritic], sample: Sampler, steps: int, batch_size: int, lr: float) -> None:
    """Train critics keyed by negative form ('paper' | 'exact') on the same positive batches.

    The learning rate decays linearly to 0: at a constant rate the read-out wanders by ~10% of
    the true value from one step to the next (measured on correlated Gaussians), with the decay
    it settles."""
    opts = {f: torch.optim.Adam(c.parameters(), lr=lr) for f, c in critics.items()}
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda i: 1.0 - i / steps) for o in opts.values()]
    for c in critics.values():
        c.train()
    for _ in range(steps):
        z, s = sample(batch_size)
        for form, critic in critics.items():
            e = critic.embed(s)
            loss = R.critic_loss(critic.score(e, z), critic.score(e, R.negative_z(z, form)))
            opts[form].zero_grad(set_to_none=True)
            loss.backward()
            opts[form].step()
        for sched in scheds:
            sched.step()


Pairs = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]  # held-out (z, s) batches, streamed


@torch.no_grad()
def estimate(critics: list[JointCritic], pairs: Pairs) -> list[float]:
    """E_q[logit] of each critic over the same held-out (z, s) batches (streamed: the s of an
    image model is large)."""
    for c in critics:
        c.eval()
    totals, n = [0.0] * len(critics), 0
    for z, s in pairs():
        for i, c in enumerate(critics):
            totals[i] += float(c(s, z).float().sum())
        n += len(z)
    return [t / n for t in totals]


def ihat(
    make_critic: Callable[[], JointCritic],
    train_sample: Sampler,
    eval_pairs: Pairs,
    *,
    seeds: int = 3,
    steps: int = 1000,
    batch_size: int = 100,
    lr: float = 1e-3,
    base_seed: int = 0,
) -> dict:
    """Mean and spread (std over critic seeds) of both forms, plus each seed's estimate."""
    forms = ("paper", "exact")
    trained: list[JointCritic] = []
    for k in range(seeds):
        torch.manual_seed(base_seed + 1000 + k)
        critics = {form: make_critic() for form in forms}
        fit_critics(critics, train_sample, steps, batch_size, lr)
        trained += [critics[f] for f in forms]
    torch.manual_seed(base_seed + 2000)
    values = estimate(trained, eval_pairs)
    per_seed = {f: values[i::len(forms)] for i, f in enumerate(forms)}
    out: dict = {}
    for form, values in per_seed.items():
        out[f"ihat_{form}"] = float(np.mean(values))
        out[f"ihat_{form}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out[f"ihat_{form}_seeds"] = values
    return out


def model_sampler(model, x: torch.Tensor, generator: torch.Generator) -> Sampler:
    """(z, s) ~ q(z, s) from the encodings of data x: z ~ q(z|x), s from the model."""

    @torch.no_grad()
    def sample(batch_size: int):
        idx = torch.randint(len(x), (batch_size,), generator=generator).to(x.device)
        xb = x[idx]
        z = model.encode(xb).sample()
        return z, model.local_features(xb, z).float()

    return sample


def model_pairs(model, x: torch.Tensor, batch_size: int) -> Pairs:
    @torch.no_grad()
    def pairs():
        for i in range(0, len(x), batch_size):
            xb = x[i: i + batch_size]
            z = model.encode(xb).sample()
            yield z, model.local_features(xb, z).float()

    return pairs


def ihat_metrics(model, data, cfg: EvalConfig, seed: int = 0) -> dict:
    """I-hat(z;s) in both forms by fresh critics: trained on validation encodings, read on test
    encodings; mean and spread over the critic seeds, and each seed's value."""
    t0 = time.perf_counter()
    ic = cfg.ihat
    spec = model.critic_spec
    head = spec.head if ic.head == "model" else ic.head
    device = data.val_x.device
    g = torch.Generator().manual_seed(seed)
    out = ihat(
        lambda: JointCritic(model.z_dim, spec.s_shape, head, ic.width).to(device),
        model_sampler(model, data.val_x[: ic.n_train], g),
        model_pairs(model, data.test_x[: ic.n_eval], cfg.batch_size),
        seeds=ic.seeds, steps=ic.steps, batch_size=ic.batch_size, lr=ic.lr, base_seed=seed,
    )
    metrics = {k: v for k, v in out.items() if not k.endswith("_seeds")}
    for form in ("paper", "exact"):
        for i, v in enumerate(out[f"ihat_{form}_seeds"]):
            metrics[f"ihat_{form}_seed{i}"] = v
    metrics["time/ihat_s"] = time.perf_counter() - t0
    return metrics
