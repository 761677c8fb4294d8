"""I-hat(z;s) by fresh critics trained after training on held-out encodings (paper Table 1).

Two forms, each a JointCritic trained with Eq. 12 and read out as E_q[logit]:
  paper: negatives p(z)q(s)  -> estimates KL(q(z,s) || p(z)q(s)) = I(z;s) + KL(q(z)||p(z))
  exact: negatives q(z)q(s)  -> estimates I(z;s)
each as far as the critic's head can represent log q(z,s)/r(z,s): the paper's dot and cosine heads
read ~0.75 of I(z;s) on correlated Gaussians, the MLP head ~0.95 (README.md, "I-hat").
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
from cmisweep.metrics.encodings import cached_sampler
from cmisweep.models.critic_ensemble import CriticEnsemble
from cmisweep.models.critics import JointCritic, resolve_head
from cmisweep.training import auto_precision

Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # batch size -> (z, s) ~ q(z, s)


def _form(key) -> R.CForm:
    """A critic's negative form from its key: 'paper' | 'exact', or a (head, form) pair."""
    return key if isinstance(key, str) else key[-1]


def fit_critics(critics: dict, sample: Sampler, steps: int, batch_size: int, lr: float) -> None:
    """Train critics keyed by negative form ('paper' | 'exact', or (head, form) pairs) on the same
    positive batches: one encoding pass serves them all.

    The learning rate decays linearly to 0: at a constant rate the read-out wanders by ~10% of
    the true value from one step to the next (measured on correlated Gaussians), with the decay
    it settles."""
    opts = {f: torch.optim.Adam(c.parameters(), lr=lr) for f, c in critics.items()}
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda i: 1.0 - i / steps) for o in opts.values()]
    for c in critics.values():
        c.train()
    for _ in range(steps):
        z, s = sample(batch_size)
        for key, critic in critics.items():
            e = critic.embed(s)
            loss = R.critic_loss(critic.score(e, z), critic.score(e, R.negative_z(z, _form(key))))
            opts[key].zero_grad(set_to_none=True)
            loss.backward()
            opts[key].step()
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


def fit_ensembles(ensembles: list[CriticEnsemble], forms: list[str], generators: list[torch.Generator],
                  sample: Sampler, steps: int, batch_size: int, lr: float, bf16: bool = False) -> None:
    """fit_critics for stacked critics: each step draws one batch per input stream (a critic seed's
    own batches), and every member of every ensemble takes one step of Eq. 12 of the paper on its
    stream's batch against its own negatives (forms[k], drawn from generators[k]: member k of each
    ensemble). One Adam over all members is K Adams (elementwise, no parameter shared); the same
    linear LR decay as fit_critics. bf16: the forward pass under bf16 autocast (weights, optimizer
    and loss stay fp32), ~2x a fp32 step where bf16 is native (BENCHMARKS.md section 7)."""
    params = [p for e in ensembles for p in e.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    streams = ensembles[0].groups
    member_stream = ensembles[0].member_stream()
    for e in ensembles:
        e.train()
    for _ in range(steps):
        zs, ss = zip(*(sample(batch_size) for _ in range(streams)))
        z = torch.stack(zs)[member_stream.to(zs[0].device)]  # (K, B, D): each member's positives
        s = torch.stack(ss, dim=1)  # (B, G, *s_shape): the embedding reads each stream once
        neg = torch.stack([R.negative_z(z[k], f, generator=g) for k, (f, g) in enumerate(zip(forms, generators))])
        loss = 0.0
        for e in ensembles:
            with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=bf16):
                emb = e.embed(s)
                pos_logits, neg_logits = e.score(emb, z).float(), e.score(emb, neg).float()
            loss = loss + sum(R.critic_loss(pos_logits[k], neg_logits[k]) for k in range(e.k))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


@torch.no_grad()
def estimate_ensembles(ensembles: list[CriticEnsemble], pairs: Pairs) -> list[list[float]]:
    """estimate() for stacked critics: E_q[logit] of each member, all on the same held-out pairs."""
    for e in ensembles:
        e.eval()
    totals, n = [torch.zeros(e.k, dtype=torch.float64) for e in ensembles], 0
    for z, s in pairs():
        for i, e in enumerate(ensembles):
            s_in = s[:, None].expand(-1, e.groups, *s.shape[1:])
            totals[i] += e(s_in, z[None].expand(e.k, *z.shape)).double().sum(1).cpu()
        n += len(z)
    return [(t / n).tolist() for t in totals]


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
    legacy: bool = False,
    bf16: bool = False,
) -> dict:
    """Mean and spread (std over critic seeds) of both forms, plus each seed's estimate:
    ihat_<form>. extra_heads {name: factory}: more critics trained on the same batches and read
    on the same pairs (no extra encoding), reported as ihat_<name>_<form>.

    All seeds x forms x heads critics train at once as one CriticEnsemble per head, each seed on
    its own stream of batches; legacy=True trains them one seed after another, one critic after
    another (the former path, kept for bench/evaluation.py's before/after). Both start from the
    same initial weights (torch.manual_seed(base_seed + 1000 + seed) before a seed's critics).
    bf16: the ensembles train under bf16 autocast; the read-out stays fp32."""
    forms = ("paper", "exact")
    heads = {"": make_critic, **(extra_heads or {})}
    keys = [(h, f) for h in heads for f in forms]  # the model's head first: its seeds as before
    if legacy:
        trained: list[JointCritic] = []
        for k in range(seeds):
            torch.manual_seed(base_seed + 1000 + k)
            critics = {key: heads[key[0]]() for key in keys}
            fit_critics(critics, train_sample, steps, batch_size, lr)
            trained += [critics[key] for key in keys]
        torch.manual_seed(base_seed + 2000)
        values = estimate(trained, eval_pairs)
    else:
        values = _ihat_ensembles(heads, forms, train_sample, eval_pairs, seeds, steps, batch_size, lr, base_seed, bf16)
    out: dict = {}
    for i, (head, form) in enumerate(keys):
        name = f"ihat_{head}_{form}" if head else f"ihat_{form}"
        per_seed = values[i::len(keys)]
        out[name] = float(np.mean(per_seed))
        out[f"{name}_std"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
        out[f"{name}_seeds"] = per_seed
    return out


def _ihat_ensembles(heads: dict, forms: tuple, train_sample: Sampler, eval_pairs: Pairs, seeds: int,
                    steps: int, batch_size: int, lr: float, base_seed: int, bf16: bool) -> list[float]:
    """ihat's critics as one ensemble per head (members seed-major, then form), trained together;
    their estimates in the legacy order (seed-major, then head, then form)."""
    per_seed = []
    for k in range(seeds):
        torch.manual_seed(base_seed + 1000 + k)
        per_seed.append({(h, f): heads[h]() for h in heads for f in forms})
    ensembles = [CriticEnsemble([c[(h, f)] for c in per_seed for f in forms], groups=seeds) for h in heads]
    member_forms = [f for _ in range(seeds) for f in forms]
    gens = [torch.Generator().manual_seed(base_seed + 3000 + i) for i in range(len(member_forms))]
    fit_ensembles(ensembles, member_forms, gens, train_sample, steps, batch_size, lr, bf16)
    torch.manual_seed(base_seed + 2000)
    values = estimate_ensembles(ensembles, eval_pairs)  # [head][seed * forms + form]
    return [values[hi][k * len(forms) + fi] for k in range(seeds) for hi in range(len(heads)) for fi in range(len(forms))]


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


def ihat_metrics(model, data, cfg: EvalConfig, seed: int = 0, legacy: bool = False) -> dict:
    """I-hat(z;s) in both forms by fresh critics: trained on validation encodings, read on test
    encodings; mean and spread over the critic seeds, and each seed's value.

    ihat_paper / ihat_exact: the critic head of evaluation.ihat.head (the model's: the paper's
    number); ihat_mlp_paper / ihat_mlp_exact: the MLP head, trained on the same batches of
    encodings (no second encoding pass). The paper's heads see z linearly (dot) or its direction
    alone (cosine) and miss much of a Gaussian log-ratio (README.md, "I-hat")."""
    t0 = time.perf_counter()
    ic = cfg.ihat
    spec = model.critic_spec
    head = resolve_head(ic.head, spec)
    device = data.val_x.device
    g = torch.Generator().manual_seed(seed)

    def critic(h: str):
        return lambda: JointCritic(model.z_dim, spec.s_shape, h, ic.width).to(device)

    val_x = data.val_x[: ic.n_train]
    precision = auto_precision("bf16", device) if ic.precision == "auto" else ic.precision
    bf16 = not legacy and precision == "bf16"
    # legacy: encode every batch (the former path); else encode the validation images once
    sampler = None if legacy else cached_sampler(model, val_x, g, cfg.batch_size,
                                                 torch.bfloat16 if bf16 else torch.float32)
    sampler = sampler or model_sampler(model, val_x, g)

    out = ihat(
        critic(head),
        sampler,
        model_pairs(model, data.test_x[: ic.n_eval], cfg.batch_size),
        seeds=ic.seeds, steps=ic.steps, batch_size=ic.batch_size, lr=ic.lr, base_seed=seed,
        extra_heads=None if head == "mlp" else {"mlp": critic("mlp")}, legacy=legacy, bf16=bf16,
    )
    if head == "mlp":  # the MLP head is the one asked for: the same numbers under both names
        out.update({k.replace("ihat_", "ihat_mlp_", 1): v for k, v in list(out.items())})
    metrics = {k: v for k, v in out.items() if not k.endswith("_seeds")}
    for name in ("ihat_paper", "ihat_exact", "ihat_mlp_paper", "ihat_mlp_exact"):
        for i, v in enumerate(out[f"{name}_seeds"]):
            metrics[f"{name}_seed{i}"] = v
    metrics["time/ihat_s"] = time.perf_counter() - t0
    return metrics
