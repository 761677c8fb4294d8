"""I-hat(z;s) by fresh critics trained after training on held-out encodings (paper Table 1).

Two forms, each a JointCritic trained with Eq. 12 and read out as E_q[logit]:
  paper: negatives p(z)q(s)  -> estimates KL(q(z,s) || p(z)q(s)) = I(z;s) + KL(q(z)||p(z))
  exact: negatives q(z)q(s)  -> estimates I(z;s)
each as far as the critic's head can represent log q(z,s)/r(z,s) and its training reaches: the
paper's dot and cosine heads are linear in z, and at the studies' shapes no head and form came
within its bound of an analytic I (docs/design.md 3.2).
One critic's estimate moves by ~0.2 nats between seeds, as much as the effect being measured, so
the metric averages several critic seeds and reports mean and spread.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from cmisweep import critic_training
from cmisweep.config import EvalConfig
from cmisweep.critic_training import Pairs, Sampler
from cmisweep.metrics.encodings import cached_sampler, pooled_sampler
from cmisweep.metrics.infonce import infonce, pair_scores
from cmisweep.models.critic_ensemble import CriticEnsemble
from cmisweep.models.critics import JointCritic, resolve_head
from cmisweep.device import auto_precision


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
    extra_heads: dict[str, Callable[[], JointCritic]] | None = None,
    bf16: bool = False,
) -> dict:
    """Mean and spread (std over critic seeds) of both forms, plus each seed's estimate:
    ihat_<form>. extra_heads {name: factory}: more critics trained on the same batches and read
    on the same pairs (no extra encoding), reported as ihat_<name>_<form>.

    All seeds x forms x heads critics train at once (critic_training.fit) as one CriticEnsemble
    per head, members seed-major then form, each seed on its own stream of batches and each member
    on negatives from its own generator; a seed's critics start from the weights that
    torch.manual_seed(base_seed + 1000 + seed) gives. bf16: the ensembles train under bf16
    autocast; the read-out stays fp32."""
    forms = ("paper", "exact")
    heads = {"": make_critic, **(extra_heads or {})}
    per_seed = []
    for k in range(seeds):
        torch.manual_seed(base_seed + 1000 + k)
        per_seed.append({(h, f): heads[h]() for h in heads for f in forms})  # the model's head first
    ensembles = [CriticEnsemble([c[(h, f)] for c in per_seed for f in forms], groups=seeds) for h in heads]
    member_forms = [f for _ in range(seeds) for f in forms]
    gens = [torch.Generator().manual_seed(base_seed + 3000 + i) for i in range(len(member_forms))]
    critic_training.fit(ensembles, member_forms, gens, train_sample, steps, batch_size, lr, bf16)
    torch.manual_seed(base_seed + 2000)
    kept: list[list] = [[] for _ in ensembles]
    values = critic_training.read_out(ensembles, eval_pairs, kept)  # [head][seed * forms + form]
    out: dict = {}
    for hi, head in enumerate(heads):
        for fi, form in enumerate(forms):
            _summary(out, f"ihat_{head}_{form}" if head else f"ihat_{form}",
                     [values[hi][k * len(forms) + fi] for k in range(seeds)])
    # the cross-check: the exact-form critics read as InfoNCE, every held-out pair a negative
    exact = [i for i, f in enumerate(member_forms) if f == "exact"]
    for head, ensemble, batches in zip(heads, ensembles, kept):
        e, z = torch.cat([b[0] for b in batches], 1), torch.cat([b[1] for b in batches])
        _summary(out, f"ihat_{head}_nce" if head else "ihat_nce", infonce(pair_scores(ensemble, e, z, exact)))
        out["ihat_nce_negatives"] = len(z)
    return out


def _summary(out: dict, name: str, seed_values: list[float]) -> None:
    out[name] = float(np.mean(seed_values))
    out[f"{name}_std"] = float(np.std(seed_values, ddof=1)) if len(seed_values) > 1 else 0.0
    out[f"{name}_seeds"] = seed_values


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
    encodings; mean and spread over the critic seeds, and each seed's value.

    ihat_paper / ihat_exact: the critic head of evaluation.ihat.head (the model's: the paper's
    number); ihat_mlp_paper / ihat_mlp_exact: the MLP head, trained on the same batches of
    encodings (no second encoding pass). The paper's heads see z linearly (dot) or its direction
    alone (cosine) and miss much of a Gaussian log-ratio (docs/design.md 3.2)."""
    t0 = time.perf_counter()
    ic = cfg.ihat
    spec = model.critic_spec
    head = resolve_head(ic.head, spec)
    device = data.val_x.device
    g = torch.Generator().manual_seed(seed)

    def critic(h: str):
        return lambda: JointCritic(model.z_dim, spec.s_shape, h, ic.width).to(device)

    bf16 = (auto_precision("bf16", device) if ic.precision == "auto" else ic.precision) == "bf16"
    sampler = training_pairs(model, data.val_x[: ic.n_train], g, cfg, bf16)
    streams = g.get_state()

    def run(steps: int) -> dict:  # fresh critics and the same batch streams at any step count
        g.set_state(streams)
        return ihat(
            critic(head),
            sampler,
            model_pairs(model, data.test_x[: ic.n_eval], cfg.batch_size),
            seeds=ic.seeds, steps=steps, batch_size=ic.batch_size, lr=ic.lr, base_seed=seed,
            extra_heads=None if head == "mlp" else {"mlp": critic("mlp")}, bf16=bf16,
        )

    if ic.converge:
        out, steps, converged = settle(run, ic.doublings(), ic.tolerance)
    else:
        out, steps, converged = run(ic.steps), ic.steps, None
    if head == "mlp":  # the MLP head is the one asked for: the same numbers under both names
        out.update({k.replace("ihat_", "ihat_mlp_", 1): v for k, v in list(out.items())})
    metrics = {k: v for k, v in out.items() if not k.endswith("_seeds")}
    for name in (*FORMS, "ihat_nce", "ihat_mlp_nce"):
        for i, v in enumerate(out[f"{name}_seeds"]):
            metrics[f"{name}_seed{i}"] = v
    metrics["ihat_steps"] = steps
    if converged is not None:
        metrics["ihat_converged"] = float(converged)
    for prefix in ("ihat", "ihat_mlp"):  # KL(q(z,s) || p(z)q(s)) = I(z;s) + KL(q(z) || p(z)) >= I(z;s)
        spread = metrics[f"{prefix}_paper_std"] + metrics[f"{prefix}_exact_std"]
        metrics[f"{prefix}_forms_consistent"] = float(metrics[f"{prefix}_paper"] >= metrics[f"{prefix}_exact"] - spread)
        # the lower bound above the estimate it checks, beyond 10% (or 0.1 nats) and their spreads:
        # the families disagree (the E[logit] read-out under-reads I)
        spread = max(0.1, 0.1 * abs(metrics[f"{prefix}_exact"]),
                     metrics[f"{prefix}_nce_std"] + metrics[f"{prefix}_exact_std"])
        metrics[f"{prefix}_families_agree"] = float(metrics[f"{prefix}_nce"] <= metrics[f"{prefix}_exact"] + spread)
    metrics["time/ihat_s"] = time.perf_counter() - t0
    return metrics


FORMS = ("ihat_paper", "ihat_exact", "ihat_mlp_paper", "ihat_mlp_exact")


def training_pairs(model, val_x: torch.Tensor, g: torch.Generator, cfg: EvalConfig, bf16: bool) -> Sampler:
    """The critics' (z, s) pairs: the validation images encoded once where s ignores z; else (the
    DSAE) a pool of evaluation.ihat.pool_draws draws per sequence, or every batch encoded afresh."""
    s_dtype = torch.bfloat16 if bf16 else torch.float32
    sampler = cached_sampler(model, val_x, g, cfg.batch_size, s_dtype)
    if sampler is None and cfg.ihat.pool_draws:
        sampler = pooled_sampler(model, val_x, g, cfg.ihat.pool_draws, cfg.batch_size, s_dtype)
    return sampler or model_sampler(model, val_x, g)


def settle(run: Callable[[int], dict], doublings: list[int], tolerance: float) -> tuple[dict, int, bool]:
    """The doubling rule: run each step count of `doublings` in turn (IhatConfig.doublings: steps,
    2 steps, ...; each from fresh critics with its own learning-rate decay) until every estimate of
    FORMS that run returns moves by at most max(tolerance, its critic-seed std) from the run before;
    (the last run's result, its steps, whether it settled before the last count)."""
    prev, n = run(doublings[0]), doublings[0]
    for n in doublings[1:]:
        cur = run(n)
        keys = [k for k in FORMS if k in cur and k in prev]
        if all(abs(cur[k] - prev[k]) <= max(tolerance, cur[f"{k}_std"]) for k in keys):
            return cur, n, True
        prev = cur
    return prev, n, False
