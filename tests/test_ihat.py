"""I-hat(z;s) (the paper's Table 1): fresh critics trained with Eq. 12 on validation encodings and
read out as E_q[logit] on test encodings. The model here is a stand-in whose encodings are known
(z, s) pairs, so the estimator's answers can be checked against closed forms."""
import math
from types import SimpleNamespace

import pytest
import torch

from cmisweep.config import EvalConfig, IhatConfig
from cmisweep.metrics.mutual_info import ihat_metrics
from cmisweep.models.protocol import CriticSpec, Gaussian
from cmisweep.reports.tables import TABLE_METRICS

D = 4  # dimensions of z and of s


@pytest.fixture(autouse=True)
def one_thread():
    """Critics this small gain nothing from intra-op threads, and on a loaded machine a second
    thread waiting on the first makes each step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian_pairs(n: int, rho: float, sigma: float = 1.0, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """s ~ N(0, I), z = sigma (rho s + sqrt(1 - rho^2) eps): corr(z_i, s_i) = rho, q(z) = N(0, sigma^2 I).
    I(z;s) = -D/2 log(1 - rho^2); KL(q(z)||p(z)) = D/2 (sigma^2 - 1 - log sigma^2)."""
    s = torch.randn(n, D, generator=generator)
    z = sigma * (rho * s + math.sqrt(1 - rho**2) * torch.randn(n, D, generator=generator))
    return z, s


def mutual_information(rho: float) -> float:
    return -D / 2 * math.log(1 - rho**2)


class PairModel:
    """A stand-in encoder: an 'image' x is a stored pair [z | s]; q(z|x) is a point mass at z
    (tiny variance) and s is read off x. Only what I-hat calls: encode, local_features."""

    z_dim = D
    critic_spec = CriticSpec((D,), "dot")  # the paper's image head

    def encode(self, x):
        return Gaussian(x[:, :D], torch.full_like(x[:, :D], -20.0))

    def local_features(self, x, z, sample=True):
        return x[:, D:]


def images(rho: float, n: int, seed: int) -> torch.Tensor:
    return torch.cat(gaussian_pairs(n, rho, generator=torch.Generator().manual_seed(seed)), dim=1)


def ihat_cfg(**over) -> EvalConfig:
    # fixed steps unless a test asks for convergence: these tests are about heads and forms
    ic = dict(seeds=1, steps=300, batch_size=256, n_train=4000, n_eval=4000, width=64, lr=2e-3, converge=False)
    return EvalConfig(ihat=IhatConfig(**{**ic, **over}))


def test_critics_train_on_validation_and_read_on_test():
    """Validation pairs strongly dependent (rho 0.9), test pairs independent. Trained on
    validation, a critic that can represent the log-ratio (the MLP head) reads the independent
    test pairs as unlikely under q(z, s): a clearly negative E[logit]. Trained on the test pairs
    it would have learned nothing (logit ~ 0 everywhere), and read on validation it would say I."""
    data = SimpleNamespace(val_x=images(0.9, 4000, seed=1), test_x=images(0.0, 4000, seed=2))
    m = ihat_metrics(PairModel(), data, ihat_cfg(head="mlp", width=32))
    # measured: about -5 nats this way round, about 0 with the splits swapped
    assert m["ihat_exact"] < -1.0 and m["ihat_paper"] < -1.0, m


def test_evaluation_reports_the_papers_head_and_the_mlp_head():
    """Same encodings, two heads: ihat_* from the model's (dot) head, ihat_mlp_* from the MLP.
    On Gaussian pairs with a known I(z;s) the MLP head reads it, the dot head (linear in z) falls short."""
    data = SimpleNamespace(val_x=images(0.8, 4000, seed=1), test_x=images(0.8, 4000, seed=2))
    m = ihat_metrics(PairModel(), data, ihat_cfg())
    for name in ("ihat_paper", "ihat_exact", "ihat_mlp_paper", "ihat_mlp_exact"):
        assert {name, f"{name}_std", f"{name}_seed0"} <= set(m), name
    mi = mutual_information(0.8)
    assert m["ihat_mlp_exact"] == pytest.approx(mi, rel=0.15)
    assert m["ihat_exact"] < 0.9 * mi  # linear in z: it cannot form the log-ratio's quadratic term
    for name in ("final/ihat_paper", "final/ihat_exact", "final/ihat_mlp_paper", "final/ihat_mlp_exact"):
        assert name in TABLE_METRICS
    labels = [TABLE_METRICS[k] for k in ("final/ihat_exact", "final/ihat_mlp_exact")]
    assert len(set(labels)) == 2 and "MLP" in labels[1]


def test_bf16_critics_read_what_fp32_critics_read():
    """evaluation.ihat.precision bf16 (what auto picks where bf16 is native): the critics train
    under bf16 autocast. Same seeds and batches as fp32: the estimates are not bit-equal (the
    switch took effect) but agree within 5% of I(z;s), and the MLP head stays accurate."""
    data = SimpleNamespace(val_x=images(0.8, 4000, seed=1), test_x=images(0.8, 4000, seed=2))
    fp32 = ihat_metrics(PairModel(), data, ihat_cfg(precision="fp32"))
    bf16 = ihat_metrics(PairModel(), data, ihat_cfg(precision="bf16"))
    mi = mutual_information(0.8)
    assert bf16["ihat_mlp_exact"] == pytest.approx(mi, rel=0.15)
    for name in ("ihat_paper", "ihat_exact", "ihat_mlp_paper", "ihat_mlp_exact"):
        assert bf16[name] != fp32[name], name
        assert abs(bf16[name] - fp32[name]) < 0.05 * mi, (name, bf16[name], fp32[name])


@pytest.mark.slow(20)
def test_the_critics_double_their_steps_until_the_estimate_settles_and_not_before():
    """From a budget far too small, the doubling rule trains S, 2S, 4S, ... steps (each from fresh
    critics) and stops at the first doubling that moves no estimate by more than max(tolerance, its
    critic-seed spread; 0.1 nats here). Checked against fixed-step runs of the same critics: the estimate at the
    steps it stopped at is within that of the half budget, and the half budget's was not within it
    of the quarter's."""
    from cmisweep.metrics.mutual_info import FORMS

    data = SimpleNamespace(val_x=images(0.8, 1000, 0), test_x=images(0.8, 1000, 1))
    small = dict(seeds=2, batch_size=128, n_train=1000, n_eval=1000, width=32)
    m = ihat_metrics(PairModel(), data, ihat_cfg(steps=8, converge=True, max_steps=2048, tolerance=0.1, **small))
    n = int(m["ihat_steps"])
    assert m["ihat_converged"] == 1.0 and n >= 32, n

    def fixed(steps):
        return ihat_metrics(PairModel(), data, ihat_cfg(steps=steps, **small))

    half, quarter = fixed(n // 2), fixed(n // 4)
    assert all(m[k] == fixed(n)[k] for k in FORMS), n  # the reported estimate is the n-step run's
    assert all(abs(m[k] - half[k]) <= max(0.1, m[f"{k}_std"]) for k in FORMS)
    assert any(abs(half[k] - quarter[k]) > max(0.1, half[f"{k}_std"]) for k in FORMS)
    assert m["ihat_mlp_exact"] == pytest.approx(mutual_information(0.8), rel=0.2), (n, m["ihat_mlp_exact"])


def test_infonce_reads_the_exact_critics_and_never_exceeds_log_k():
    """The cross-check from another estimator family: the exact-form critics read as InfoNCE with
    every held-out pair a negative. With I = 2 nats far below log K it reads I as the exact form
    does; with I = 7.8 nats above log 64 it stays at or below log 64, the bound's ceiling."""
    data = SimpleNamespace(val_x=images(0.8, 2000, 0), test_x=images(0.8, 1000, 1))
    m = ihat_metrics(PairModel(), data, ihat_cfg(head="mlp", width=32, n_train=2000, n_eval=1000))
    assert m["ihat_nce_negatives"] == 1000
    assert m["ihat_mlp_nce"] == pytest.approx(mutual_information(0.8), rel=0.2)
    assert m["ihat_mlp_families_agree"] == 1.0
    data = SimpleNamespace(val_x=images(0.99, 2000, 0), test_x=images(0.99, 64, 1))
    m = ihat_metrics(PairModel(), data, ihat_cfg(head="mlp", width=32, n_train=2000, n_eval=64))
    assert mutual_information(0.99) > math.log(64) + 3
    assert m["ihat_nce_negatives"] == 64
    assert max(m[k] for k in m if k.startswith("ihat_mlp_nce_seed") or k == "ihat_mlp_nce") <= math.log(64) + 1e-9
    assert m["ihat_mlp_nce"] > math.log(64) - 1.0  # near its ceiling: it saw the dependence


def test_forms_consistent_catches_a_critic_stopped_too_early():
    """Here q(z) = p(z), so both forms estimate the same I(z;s). Stopped at 64 steps the paper-form
    MLP critic still lags the exact one by more than their seed spreads, which `forms_consistent`
    flags; trained until converged the two agree."""
    data = SimpleNamespace(val_x=images(0.8, 1000, 0), test_x=images(0.8, 1000, 1))
    small = dict(seeds=2, batch_size=128, n_train=1000, n_eval=1000, width=32)
    early = ihat_metrics(PairModel(), data, ihat_cfg(steps=64, **small))
    assert early["ihat_mlp_forms_consistent"] == 0.0, (early["ihat_mlp_paper"], early["ihat_mlp_exact"])
    settled = ihat_metrics(PairModel(), data, ihat_cfg(steps=64, converge=True, max_steps=2048, tolerance=0.1, **small))
    assert settled["ihat_converged"] == 1.0 and settled["ihat_mlp_forms_consistent"] == 1.0


def test_pooled_sampler_keeps_each_s_with_the_z_it_was_drawn_given():
    """Where s is sampled given z (the DSAE), the critics' pairs come from a pool drawn once: every
    pair's s is the one drawn given that pair's z (here s = z + small noise, so a pair whose s came
    with another z is off by ~sqrt(2) per dimension), z is a fresh draw of q(z|x) per pooled pair
    (not its mean), and the pool holds draws x len(x) pairs that a batch picks among."""
    from cmisweep.metrics.encodings import pooled_sampler

    class Sampled:
        z_dim = D

        def encode(self, x):
            return Gaussian(x, torch.zeros_like(x))  # q(z|x) = N(x, I)

        def local_features(self, x, z, sample=True):
            return (z + 0.01 * torch.randn_like(z))[:, None, :]  # (B, T=1, D)

    x = torch.zeros(50, D)
    sample = pooled_sampler(Sampled(), x, torch.Generator().manual_seed(0), draws=4, chunk=16)
    z, s = sample(4000)
    assert (s[:, 0] - z).abs().max() < 0.1
    assert z.std() == pytest.approx(1.0, abs=0.1)  # q(z|x)'s samples, not x
    assert len(torch.unique(z[:, 0])) == pytest.approx(200, abs=5)  # 4 draws x 50 sequences
