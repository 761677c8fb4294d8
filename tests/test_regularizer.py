import math

import pytest
import torch

from cmisweep import critic_training
from cmisweep import regularizer as R
from cmisweep.models.critics import JointCritic, MarginalCritic
from helpers import fit_and_read_forms

# fixed per-example terms of a batch of 4, and critic logits
RECON = torch.tensor([100.0, 120.0, 90.0, 110.0])
KLZ = torch.tensor([5.0, 7.0, 6.0, 2.0])
KLS = torch.tensor([1.0, 2.0, 3.0, 4.0])
DM = torch.tensor([0.5, 1.5, -0.5, 2.5])  # D_m logits at z ~ q(z|x): M-hat = mean = 1.0
DC = torch.tensor([2.0, 3.0, 1.0, 4.0])  # D_c logits at (z, s) ~ q(z, s): C-hat = mean = 2.5
mean = lambda t: float(t.mean())  # noqa: E731


def loss(reg, kls=KLS):
    return float(R.objective(reg, RECON, KLZ, kls, DM, DC).loss)


def test_vanilla_is_the_negative_elbo():  # Eq. 2 / 3
    assert loss(R.preset("vanilla")) == pytest.approx(mean(RECON) + mean(KLS) + mean(KLZ))


@pytest.mark.parametrize("a", [0.2, 0.7])
def test_beta_vae_eq16(a):  # -J = Recon + beta KL(z), beta = 1 - alpha; M dropped
    reg = R.preset("beta", a)
    assert (reg.w_z, reg.w_c, reg.uses_m, reg.uses_c) == (1 - a, 0.0, False, False)  # beta = w_z
    assert loss(reg) == pytest.approx(mean(RECON) + mean(KLS) + (1 - a) * mean(KLZ))


@pytest.mark.parametrize("a", [0.2, 0.7])
def test_advmi_app4(a):  # -J = Recon + (1 - alpha) KL(z) + alpha KL(q(z)||p(z)), the last by D_m
    reg = R.preset("advmi", a)
    assert reg.uses_m and not reg.uses_c
    assert loss(reg) == pytest.approx(mean(RECON) + mean(KLS) + (1 - a) * mean(KLZ) + a * 1.0)


@pytest.mark.parametrize("g", [0.3, 0.9])
def test_cmi_eq14(g):  # -J = Recon + (1 - gamma) KL(z) + gamma KL(q(z,s)||p(z)q(s)); M vanishes
    reg = R.preset("cmi", g)
    assert reg.uses_c and not reg.uses_m and reg.w_m == 0
    assert loss(reg) == pytest.approx(mean(RECON) + mean(KLS) + (1 - g) * mean(KLZ) + g * 2.5)


def test_alpha_and_gamma_independent():
    # gamma < alpha: M must be estimated, weight alpha - gamma
    reg = R.preset("cmi", 0.2, alpha=0.5)
    assert reg.m_term == "estimate" and reg.w_m == pytest.approx(0.3)
    assert loss(reg) == pytest.approx(mean(RECON) + mean(KLS) + 0.5 * mean(KLZ) + 0.3 * 1.0 + 0.2 * 2.5)
    # gamma > alpha: dropping (gamma - alpha) M >= 0 from J is a lower bound (Eq. 9): auto drops it
    reg = R.preset("cmi", 0.6, alpha=0.2)
    assert reg.m_term == "drop" and not reg.uses_m
    assert loss(reg) == pytest.approx(mean(RECON) + mean(KLS) + 0.8 * mean(KLZ) + 0.6 * 2.5)
    # ... or estimated on request, entering with the negative weight alpha - gamma
    reg = R.preset("cmi", 0.6, alpha=0.2, m_term="estimate")
    assert loss(reg) == pytest.approx(mean(RECON) + mean(KLS) + 0.8 * mean(KLZ) - 0.4 * 1.0 + 0.6 * 2.5)


def test_exact_negatives_move_kl_q_z_into_m():
    # C now estimates I(z;s) alone, so alpha I(x;z) - gamma I(z;s) needs alpha M
    reg = R.preset("cmi", 0.4, c_form="exact")
    assert reg.w_m == pytest.approx(0.4) and reg.uses_m
    assert loss(reg) == pytest.approx(mean(RECON) + mean(KLS) + 0.6 * mean(KLZ) + 0.4 * 1.0 + 0.4 * 2.5)


def test_c_bound_takes_kl_z_where_the_read_exceeds_it():
    # C-hat 2.5 against a batch KL(z) of 5.0: the read stands; against 2.0 the bound replaces it
    reg = R.preset("cmi", 0.4, c_bound="kl_z")
    under = R.objective(reg, RECON, KLZ, KLS, DM, DC)
    assert float(under.loss) == pytest.approx(loss(R.preset("cmi", 0.4))) and float(under.c_bounded) == 0.0
    low = KLZ * 0.4  # mean 2.0
    over = R.objective(reg, RECON, low, KLS, DM, DC)
    assert float(over.loss) == pytest.approx(mean(RECON) + mean(KLS) + 0.6 * 2.0 + 0.4 * 2.0)
    assert float(over.c_hat) == pytest.approx(2.5) and float(over.c_bounded) == 1.0  # the read is still logged


def test_c_bound_sends_the_gradient_of_whichever_term_is_taken():
    dc, kl = DC.clone().requires_grad_(), (KLZ * 0.4).requires_grad_()
    R.objective(R.preset("cmi", 0.4, c_bound="kl_z"), RECON, kl, KLS, None, dc).loss.backward()
    # bounded: C enters as KL(z), so KL(z)'s weight is w_z + w_c = 1 and the critic gets nothing
    assert torch.allclose(kl.grad, torch.full((4,), 1.0 / 4)) and torch.count_nonzero(dc.grad) == 0
    dc, kl = DC.clone().requires_grad_(), KLZ.clone().requires_grad_()
    R.objective(R.preset("cmi", 0.4, c_bound="kl_z"), RECON, kl, KLS, None, dc).loss.backward()
    assert torch.allclose(kl.grad, torch.full((4,), 0.6 / 4)) and torch.allclose(dc.grad, torch.full((4,), 0.4 / 4))


def test_refusals():
    with pytest.raises(ValueError, match="not a bound"):
        R.preset("cmi", 0.2, alpha=0.5, m_term="drop")
    with pytest.raises(ValueError, match="allow_weights_above_one"):
        R.preset("cmi", 1.2)
    with pytest.raises(ValueError, match="allow_weights_above_one"):
        R.preset("cmi", 0.5, alpha=1.5)
    assert R.preset("cmi", 1.2, allow_weights_above_one=True).w_c == 1.2
    with pytest.raises(ValueError, match="alpha is set independently only with preset cmi"):
        R.preset("beta", 0.3, alpha=0.5)
    with pytest.raises(ValueError, match="unknown preset"):
        R.preset("factor")


def test_critic_loss_is_eq12():
    pos, neg = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, -1.0])
    d_pos, d_neg = torch.sigmoid(pos), torch.sigmoid(neg)
    hand = -torch.log(d_pos).mean() - torch.log(1 - d_neg).mean()
    assert float(R.critic_loss(pos, neg)) == pytest.approx(float(hand), rel=1e-6)


def test_negatives():
    torch.manual_seed(0)
    z = torch.randn(64, 3) * 5 + 10
    shuffled = R.negative_z(z, "exact")
    assert torch.equal(shuffled.sort(0).values, z.sort(0).values) and not torch.equal(shuffled, z)
    prior = R.negative_z(z, "paper")
    assert abs(float(prior.mean())) < 0.5 and abs(float(prior.std()) - 1) < 0.2


@pytest.mark.slow(20)
def test_critics_estimate_known_information_on_correlated_gaussians():
    """z, s in R^d with corr(z_i, s_i) = rho: I(z;s) = -d/2 log(1 - rho^2). z is scaled by sigma,
    so q(z) = N(0, sigma^2 I) and KL(q(z)||p(z)) = d/2 (sigma^2 - 1 - log sigma^2) > 0: the paper's
    form then estimates I + KL(q(z)||p(z)), the exact form I, D_m the KL alone. Within 15%."""
    d, rho, sigma = 4, 0.8, 1.5
    mi = -d / 2 * math.log(1 - rho**2)
    kl_qz = d / 2 * (sigma**2 - 1 - math.log(sigma**2))
    g = torch.Generator().manual_seed(0)

    def sample(n):
        s = torch.randn(n, d, generator=g)
        z = sigma * (rho * s + math.sqrt(1 - rho**2) * torch.randn(n, d, generator=g))
        return z, s

    torch.manual_seed(0)
    critics = {form: JointCritic(d, (d,), head="mlp", width=128) for form in ("paper", "exact")}
    held_out = [sample(4096) for _ in range(2)]
    read = fit_and_read_forms(critics, sample, held_out, steps=1500, batch_size=512, lr=2e-3)
    paper, exact = read["paper"], read["exact"]
    assert exact == pytest.approx(mi, rel=0.15)
    assert paper == pytest.approx(mi + kl_qz, rel=0.15)

    d_m = MarginalCritic(d)  # trained by the trainer's critic step (Eq. 12, q(z) against p(z))
    opt = torch.optim.Adam(d_m.parameters(), lr=1e-3)
    for _ in range(1500):
        z, s = sample(512)
        critic_training.step(opt, critic_training.batch_loss({"m": d_m}, z, s, "paper"))
    with torch.no_grad():
        m_hat = float(R.kl_estimate(d_m(torch.cat([z for z, _ in held_out]))))
    assert m_hat == pytest.approx(kl_qz, rel=0.15)
