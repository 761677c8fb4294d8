"""One-off exploration of issue 30 (BENCHMARKS.md section 11, "Tried"): every other pair of a batch
as a negative. Usage: python bench/ihat_variants/all_pairs.py MODALITY N_TRAIN STEPS HEAD LR BATCH [THREADS]
"""
# all-pairs negatives: each s against every other z of its batch (exact) or B-1 draws of p(z) (paper)
import sys, time, math, torch
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", ".."))
import torch.nn.functional as F
from cmisweep.config import EvalConfig
from cmisweep.metrics.ihat_truth import World, StandIn
from cmisweep.metrics.mutual_info import training_pairs, model_pairs
from cmisweep.models.critic_ensemble import CriticEnsemble
from cmisweep.models.critics import JointCritic

mod = sys.argv[1]; n_train = int(sys.argv[2]); steps_list = [int(s) for s in sys.argv[3].split(",")]
head = sys.argv[4]; lr = float(sys.argv[5]); B = int(sys.argv[6])
torch.set_num_threads(int(sys.argv[7]) if len(sys.argv) > 7 else 1)
cfg = EvalConfig(ihat={"seeds": 3, "steps": 300, "batch_size": B, "n_train": n_train, "n_eval": 2000, "width": 64})
forms = ["paper", "exact"]
K = 6; mf = [f for _ in range(3) for f in forms]

def allpair_scores(ens, e, z, paper_idx, gen=None):
    # e (K,B,emb), z (K,B,D) positives -> pos (K,B), neg (K,B,B) where neg[k,i,j] = f(z_j', s_i)
    Kk, Bb, D = z.shape
    negz = z.clone()
    pz = torch.randn(Kk, Bb, D, generator=gen)
    for k in paper_idx: negz[k] = pz[k]
    ei = e[:, :, None, :].expand(Kk, Bb, Bb, e.shape[-1]).reshape(Kk, Bb * Bb, -1)
    zj = negz[:, None, :, :].expand(Kk, Bb, Bb, D).reshape(Kk, Bb * Bb, D)
    neg = ens.score(ei, zj).reshape(Kk, Bb, Bb)
    pos = ens.score(e, z)
    return pos, neg, negz

for mi, kl in ((0.5, 0.0), (2.0, 1.0), (4.0, 2.0)):
    w = World(mod, mi, kl); m = StandIn(w)
    n_check = n_train // 5
    allx = w.sample(n_train, 0); trx, chx = allx[: n_train - n_check], allx[n_train - n_check:]
    tex = w.sample(2000, 1)
    paper_idx = [i for i, f in enumerate(mf) if f == "paper"]
    for steps in steps_list:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(0)
        sampler = training_pairs(m, trx, g, cfg, False)
        per = []
        for k in range(3):
            torch.manual_seed(1000 + k)
            per.append({f: JointCritic(m.z_dim, m.critic_spec.s_shape, head, 64) for f in forms})
        ens = CriticEnsemble([c[f] for c in per for f in forms], groups=3)
        opt = torch.optim.Adam(ens.parameters(), lr=lr)
        sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
        ms = ens.member_stream()
        gen = torch.Generator().manual_seed(5)
        ens.train()
        for _ in range(steps):
            zs, ss = zip(*(sampler(B) for _ in range(3)))
            z = torch.stack(zs)[ms]; s = torch.stack(ss, dim=1)
            e = ens.embed(s)
            pos, neg, _ = allpair_scores(ens, e, z, paper_idx, gen)
            eye = torch.eye(B, dtype=torch.bool)
            negl = F.softplus(neg)
            exact_mask = ~eye  # exact: j != i
            lossk = F.softplus(-pos).mean(1)
            nl = []
            for k in range(K):
                if k in paper_idx: nl.append(negl[k].mean())
                else: nl.append(negl[k][exact_mask].mean())
            loss = (lossk + torch.stack(nl)).sum()
            opt.zero_grad(); loss.backward(); opt.step(); sch.step()
        ens.eval()
        res = {}
        for name, x in (("check", chx), ("test", tex)):
            torch.manual_seed(2000)
            el = torch.zeros(K, dtype=torch.float64); n = 0; ls = torch.zeros(K, dtype=torch.float64)
            with torch.no_grad():
                for z, s in model_pairs(m, x, 500)():
                    e = ens.embed(s[:, None].expand(-1, 3, *s.shape[1:]))
                    zz = z[None].expand(K, *z.shape)
                    pos = ens.score(e, zz).double()
                    el += pos.sum(1); n += len(z)
                    negz = torch.stack([z[torch.randperm(len(z))] if f == "exact" else torch.randn_like(z) for f in mf])
                    neg = ens.score(e, negz).double()
                    ls += (F.softplus(-pos) + F.softplus(neg)).sum(1)
            res[name] = (el / n, ls / n)
        out = []
        for fi, f in enumerate(forms):
            idx = [k * 2 + fi for k in range(3)]
            el, ls = res["test"]; _, lsc = res["check"]
            out.append(f"{f}: tgt {w.target(f):.2f} elogit {el[idx].mean():.3f}±{el[idx].std():.3f} "
                       f"loss_check {lsc[idx].mean():.4f}")
        print(f"{mod} {head} I={mi} steps={steps} lr={lr} B={B} ({time.perf_counter()-t0:.0f}s) | " + " | ".join(out), flush=True)
