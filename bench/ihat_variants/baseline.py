"""One-off exploration of issue 30 (BENCHMARKS.md section 11, "Tried"): I-hat's critics on the
Gaussian worlds of cmisweep.metrics.ihat_truth, read as E[logit] on held-out pairs, with the held-out
Eq. 12 loss beside it. Usage: python bench/ihat_variants/baseline.py MODALITY N_TRAIN STEPS[,STEPS] HEAD
"""
import sys, time, math, torch
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", ".."))
from types import SimpleNamespace
from cmisweep import critic_training, regularizer as R
from cmisweep.config import EvalConfig
from cmisweep.metrics.ihat_truth import World, StandIn
from cmisweep.metrics.mutual_info import training_pairs, model_pairs
from cmisweep.models.critic_ensemble import CriticEnsemble
from cmisweep.models.critics import JointCritic
import torch.nn.functional as F

mod = sys.argv[1]; n_train = int(sys.argv[2]); steps_list = [int(s) for s in sys.argv[3].split(",")]
head = sys.argv[4] if len(sys.argv) > 4 else "mlp"
torch.set_num_threads(1)
cfg = EvalConfig(ihat={"seeds": 3, "steps": 300, "batch_size": 64, "n_train": n_train, "n_eval": 2000, "width": 64})
forms = ["paper", "exact"]
for mi, kl in ((0.5, 0.0), (2.0, 1.0), (4.0, 2.0)):
    w = World(mod, mi, kl); m = StandIn(w)
    n_check = n_train // 5
    allx = w.sample(n_train, 0)
    trx, chx = allx[: n_train - n_check], allx[n_train - n_check:]
    tex = w.sample(2000, 1)
    for steps in steps_list:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        sampler = training_pairs(m, trx, g, cfg, True)
        per = []
        for k in range(3):
            torch.manual_seed(1000 + k)
            per.append({f: JointCritic(m.z_dim, m.critic_spec.s_shape, head, 64) for f in forms})
        ens = CriticEnsemble([c[f] for c in per for f in forms], groups=3)
        mf = [f for _ in range(3) for f in forms]
        gens = [torch.Generator().manual_seed(3000 + i) for i in range(6)]
        critic_training.fit([ens], mf, gens, sampler, steps, 64, 1e-3, True)
        ens.eval()
        res = {}
        for name, x in (("check", chx), ("test", tex)):
            torch.manual_seed(2000)
            pos_sum = torch.zeros(6, dtype=torch.float64); loss = torch.zeros(6, dtype=torch.float64)
            lse = [[] for _ in range(6)]; n = 0
            with torch.no_grad():
                for z, s in model_pairs(m, x, 500)():
                    e = ens.embed(s[:, None].expand(-1, 3, *s.shape[1:]))
                    pos = ens.score(e, z[None].expand(6, *z.shape)).double()
                    negz = torch.stack([R.negative_z(z, f) for f in mf])
                    neg = ens.score(e, negz).double()
                    pos_sum += pos.sum(1); n += len(z)
                    loss += (F.softplus(-pos) + F.softplus(neg)).sum(1)
                    for i in range(6): lse[i].append(neg[i])
            el = pos_sum / n; ls = loss / n
            dv = torch.tensor([el[i] - (torch.logsumexp(torch.cat(lse[i]), 0) - math.log(n)) for i in range(6)])
            res[name] = (el, ls, dv)
        out = []
        for fi, f in enumerate(forms):
            idx = [k * 2 + fi for k in range(3)]
            tgt = w.target(f)
            el, ls, dv = res["test"]; _, lsc, _ = res["check"]
            out.append(f"{f}: tgt {tgt:.2f} elogit {el[idx].mean():.3f}±{el[idx].std():.3f} dv {dv[idx].mean():.3f} "
                       f"loss_check {lsc[idx].mean():.4f} loss_test {ls[idx].mean():.4f}")
        print(f"{mod} {head} I={mi} steps={steps} n_train={n_train} ({time.perf_counter()-t0:.0f}s) | " + " | ".join(out), flush=True)
