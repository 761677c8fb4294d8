"""One-off exploration of issue 30 (BENCHMARKS.md section 11, "Tried"): a separable head
<e(s), phi(z)> + g(e(s)) + h(z). Usage: python bench/ihat_variants/separable.py MODALITY N_TRAIN STEPS LR BATCH
"""
# a separable head: f(z, s) = <e(s), phi(z)> + g(e(s)) + h(z), one critic per form, one seed
import sys, time, math, torch, torch.nn as nn
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", ".."))
import torch.nn.functional as F
from cmisweep import regularizer as R
from cmisweep.config import EvalConfig
from cmisweep.metrics.ihat_truth import World, StandIn
from cmisweep.metrics.mutual_info import training_pairs, model_pairs
from cmisweep.models.critics import JointCritic

mod, n_train = sys.argv[1], int(sys.argv[2]); steps_list = [int(s) for s in sys.argv[3].split(",")]
lr = float(sys.argv[4]); B = int(sys.argv[5]); torch.set_num_threads(2)
cfg = EvalConfig(ihat={"seeds": 1, "steps": 300, "batch_size": B, "n_train": n_train, "n_eval": 2000, "width": 64})

class Sep(nn.Module):
    def __init__(self, z_dim, s_shape, width=64):
        super().__init__()
        base = JointCritic(z_dim, s_shape, "mlp", width)
        self.base = base
        self.phi = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(), nn.Linear(width, width))
        self.g = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))
        self.h = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(), nn.Linear(width, 1))
    def embed(self, s): return self.base.embed(s)
    def score(self, e, z):
        return (e * self.phi(z)).sum(-1) / 8 + self.g(e).squeeze(-1) + self.h(z).squeeze(-1)

for mi, kl in ((0.5, 0.0), (2.0, 1.0), (4.0, 2.0)):
    w = World(mod, mi, kl); m = StandIn(w)
    trx = w.sample(n_train, 0); tex = w.sample(2000, 1)
    for steps in steps_list:
        t0 = time.perf_counter(); out = []
        for form in ("paper", "exact"):
            g = torch.Generator().manual_seed(0)
            sampler = training_pairs(m, trx, g, cfg, False)
            torch.manual_seed(1000)
            c = Sep(m.z_dim, m.critic_spec.s_shape)
            opt = torch.optim.Adam(c.parameters(), lr=lr)
            sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
            c.train()
            for _ in range(steps):
                z, s = sampler(B)
                e = c.embed(s)
                loss = R.critic_loss(c.score(e, z), c.score(e, R.negative_z(z, form)))
                opt.zero_grad(); loss.backward(); opt.step(); sch.step()
            c.eval(); el, n = 0.0, 0
            torch.manual_seed(2000)
            with torch.no_grad():
                for z, s in model_pairs(m, tex, 500)():
                    el += c.score(c.embed(s), z).double().sum().item(); n += len(z)
            out.append(f"{form}: tgt {w.target(form):.2f} elogit {el / n:.3f}")
        print(f"{mod} sep I={mi} steps={steps} n={n_train} lr={lr} ({time.perf_counter()-t0:.0f}s) | " + " | ".join(out), flush=True)
