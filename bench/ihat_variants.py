"""What was tried to bring an I-hat head to its analytic bound (issue 30; BENCHMARKS.md section 11,
"Tried"): critics trained on the Gaussian worlds of cmisweep.metrics.ihat_truth and read as E[logit]
on held-out pairs, with the held-out Eq. 12 loss beside it (2 log 2 = 1.386: a critic that learned
nothing; above it: one that learned its training pairs by heart).

    .venv/bin/python bench/ihat_variants.py --variant baseline --modality speech --n-train 2000 --steps 300,1200

Variants (each critic seed and form trained alone, the studies' I-hat settings otherwise):
  baseline   the MLP head, Eq. 12 with one negative a positive (what I-hat runs)
  all_pairs  the MLP head, every other pair of the batch a negative (exact form; B - 1 draws of
             p(z) for the paper form), the negatives' loss averaged so each positive weighs one
  separable  <e(s), phi(z)> / 8 + g(e(s)) + h(z): a Gaussian log-ratio's terms, each learned
A fifth of the n_train encodings is held out from training to read the held-out loss on.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmisweep import regularizer as R  # noqa: E402
from cmisweep.config import EvalConfig  # noqa: E402
from cmisweep.metrics.ihat_truth import LEVELS, StandIn, World  # noqa: E402
from cmisweep.metrics.mutual_info import model_pairs, training_pairs  # noqa: E402
from cmisweep.models.critics import JointCritic  # noqa: E402

FORMS = ("paper", "exact")


class Separable(nn.Module):
    def __init__(self, z_dim: int, s_shape: tuple, width: int):
        super().__init__()
        self.base = JointCritic(z_dim, s_shape, "mlp", width)  # its embedding of s
        self.phi = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(), nn.Linear(width, width))
        self.g = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))
        self.h = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(), nn.Linear(width, 1))

    def embed(self, s):
        return self.base.embed(s)

    def score(self, e, z):
        return (e * self.phi(z)).sum(-1) / 8 + self.g(e).squeeze(-1) + self.h(z).squeeze(-1)


def loss(critic, variant: str, form: str, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    e = critic.embed(s)
    if variant != "all_pairs":
        return R.critic_loss(critic.score(e, z), critic.score(e, R.negative_z(z, form)))
    b = len(z)
    neg_z = z if form == "exact" else torch.randn_like(z)
    neg = critic.score(e[:, None].expand(b, b, -1).reshape(b * b, -1), neg_z.repeat(b, 1)).reshape(b, b)
    keep = ~torch.eye(b, dtype=torch.bool) if form == "exact" else torch.ones(b, b, dtype=torch.bool)
    return F.softplus(-critic.score(e, z)).mean() + F.softplus(neg)[keep].mean()


@torch.no_grad()
def read(critic, model, x: torch.Tensor, form: str) -> tuple[float, float]:
    """(E[logit] on the pairs of x, the Eq. 12 loss there)."""
    critic.eval()
    torch.manual_seed(2000)
    logit = held = n = 0.0
    for z, s in model_pairs(model, x, 500)():
        e = critic.embed(s)
        pos, neg = critic.score(e, z).double(), critic.score(e, R.negative_z(z, form)).double()
        logit, held, n = logit + pos.sum().item(), held + (F.softplus(-pos) + F.softplus(neg)).sum().item(), n + len(z)
    return logit / n, held / n


def run(args, world: World, steps: int, seed: int, form: str) -> tuple[float, float]:
    model = StandIn(world)
    cfg = EvalConfig(ihat={"batch_size": args.batch, "n_train": args.n_train, "n_eval": 2000, "width": 64})
    x = world.sample(args.n_train, 0)
    held_out = args.n_train // 5
    sample = training_pairs(model, x[:-held_out], torch.Generator().manual_seed(seed), cfg, False)
    torch.manual_seed(1000 + seed)
    critic = (Separable(model.z_dim, model.critic_spec.s_shape, 64) if args.variant == "separable"
              else JointCritic(model.z_dim, model.critic_spec.s_shape, "mlp", 64))
    opt = torch.optim.Adam(critic.parameters(), lr=args.lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    critic.train()
    for _ in range(steps):
        opt.zero_grad()
        loss(critic, args.variant, form, *sample(args.batch)).backward()
        opt.step()
        decay.step()
    estimate, _ = read(critic, model, world.sample(2000, 1), form)
    _, held = read(critic, model, x[-held_out:], form)
    return estimate, held


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("baseline", "all_pairs", "separable"), default="baseline")
    ap.add_argument("--modality", choices=("image", "speech"), default="speech")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--steps", default="300,1200")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    for mi, kl in LEVELS:
        world = World(args.modality, mi, kl)
        for steps in map(int, args.steps.split(",")):
            t0, cells = time.perf_counter(), []
            for form in FORMS:
                runs = torch.tensor([run(args, world, steps, k, form) for k in range(args.seeds)])
                cells.append(f"{form}: target {world.target(form):.2f}, E[logit] {runs[:, 0].mean():.3f} "
                             f"(std {runs[:, 0].std() if args.seeds > 1 else 0:.3f}), held-out loss {runs[:, 1].mean():.4f}")
            print(f"{args.variant} {args.modality} I={mi} steps={steps} n_train={args.n_train} "
                  f"({time.perf_counter() - t0:.0f} s) | " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
