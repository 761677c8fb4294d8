"""The CMI term in one training step: gamma C (Eq. 13/14 of the paper) must send gradient to the
encoder through z and to the layers that produce s through s, with the critic's weights held as
they are; the critics themselves move only in their own steps (Eq. 12)."""
import copy

import pytest
import torch

from cmisweep import regularizer as R
from cmisweep.config import TrainConfig
from cmisweep.models.critics import build_critics
from cmisweep.models.pixelcnn import PixelCNNVAE
from cmisweep.training import Trainer
from cmisweep.regularizer_api import PaperJ
from helpers import synthetic_images

ALPHA, GAMMA, SEED = 0.3, 0.3, 7


def build(seed=0):
    torch.manual_seed(seed)
    model = PixelCNNVAE(z_dim=4, layers=6, maps=8, encoder_channels=8)
    critics = build_critics(4, model.critic_spec, uses_m=False, uses_c=True, width=16)
    x, _ = synthetic_images(32, seed=1)
    return model, critics, x.float()


def trainer(model, critics, x, reg, **train):
    cfg = TrainConfig(batch_size=32, lr=1e-3, precision="fp32", memory_format="contiguous", **train)
    # copies: every trainer starts from the same VAE and the same critic weights
    return Trainer(copy.deepcopy(model), PaperJ(reg, copy.deepcopy(critics)), x, x, cfg, critic_lr=1e-2)


def vae_grads(t, x):
    t.model.train()
    t.critics.train()  # as train_epoch leaves them
    torch.manual_seed(SEED)  # the same z ~ q(z|x) in every run
    t.vae_step(x)
    return {n: p.grad.detach().clone() for n, p in t.model.named_parameters() if p.grad is not None}


def c_hat_grads(model, critics, x):
    """d C-hat / d theta by hand: the mean D_c logit at (z, s) ~ q(z, s), the critic as the VAE
    step reads it (batch statistics, weights fixed)."""
    model, critics = copy.deepcopy(model), copy.deepcopy(critics)
    model.train()
    critics.train()
    torch.manual_seed(SEED)
    terms = model.elbo_terms(x)
    R.kl_estimate(critics["c"](terms.s, terms.z)).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_gamma_c_sends_gradient_to_the_encoder_and_to_the_layers_of_s():
    model, critics, x = build()
    # same alpha both ways: the only difference in -J is + gamma C (Eq. 14 with M dropped, Eq. 9)
    g0 = vae_grads(trainer(model, critics, x, R.Regularizer(ALPHA, 0.0, "drop")), x)
    g1 = vae_grads(trainer(model, critics, x, R.Regularizer(ALPHA, GAMMA, "drop")), x)
    dc = c_hat_grads(model, critics, x)
    encoder = lambda n: n.startswith("encoder.")  # noqa: E731  q(z|x): reaches C through z only
    s_layers = lambda n: any(n.startswith(f"layers.{i}.") for i in range(model.s_layer - 1))  # noqa: E731  s
    for part in (encoder, s_layers):
        names = [n for n in g1 if part(n)]
        assert names
        for n in names:
            diff, expected = g1[n] - g0[n], GAMMA * dc[n]
            # far above float32 rounding of the reconstruction gradient (~1e-7 of it)
            assert float(expected.norm()) > 1e-4 * float(g0[n].norm()), n
            # and it enters -J as + gamma C-hat: same size, same sign (up to float32 rounding of
            # the much larger reconstruction gradient it is added to)
            assert float((diff - expected).norm()) < 0.02 * float(expected.norm()), n


def snapshot(critics):
    return {k: v.detach().clone() for k, v in critics.state_dict().items()}


def bn_buffers(state):
    return {k: v for k, v in state.items() if "running_" in k or "num_batches_tracked" in k}


def test_vae_step_leaves_the_critics_and_critic_step_moves_them():
    model, critics, x = build()
    t = trainer(model, critics, x, R.preset("cmi", GAMMA))
    assert bn_buffers(snapshot(t.critics))  # the image critic has BatchNorm layers to check
    t.model.train()
    t.critics.train()  # as during an epoch: training-mode BatchNorm
    before = snapshot(t.critics)
    _, z, s = t.vae_step(x)
    after_vae = snapshot(t.critics)
    for k in before:  # weights and running statistics alike
        assert torch.equal(before[k], after_vae[k]), f"the VAE step changed critic state {k}"
    assert all(p.grad is None for p in t.critics.parameters())
    assert all(p.requires_grad for p in t.critics.parameters())  # ready for the critic step

    t.critic_step(z, s)
    after_critic = snapshot(t.critics)
    for name, _ in t.critics.named_parameters():
        assert not torch.equal(after_vae[name], after_critic[name]), f"the critic step left {name}"
    for k in bn_buffers(after_vae):
        assert not torch.equal(after_vae[k], after_critic[k]), f"the critic step left {k}"


@pytest.mark.parametrize("critic_steps", [1, 2])
def test_a_training_step_updates_batchnorm_statistics_once_per_critic_step(critic_steps):
    model, critics, x = build()
    t = trainer(model, critics, x, R.preset("cmi", GAMMA, critic_steps=critic_steps))
    t.critics.train()
    before = snapshot(t.critics)
    t.train_step(x)
    after = snapshot(t.critics)
    counts = {k: int(after[k] - before[k]) for k in after if k.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {critic_steps}
