"""I-hat's batched critics (CriticEnsemble + critic_training.fit) are the one-at-a-time critics: from
the same initial weights, on the same batches and negatives, each member trains and reads out
as a lone JointCritic trained with Eq. 12 of the paper would. Fails if members shared parameters,
read another seed's batch, or took another member's (or form's) negatives."""
import copy

import pytest
import torch

from cmisweep import regularizer as R
from cmisweep import critic_training
from cmisweep.models.critic_ensemble import CriticEnsemble
from cmisweep.models.critics import JointCritic

Z, SEEDS, FORMS, STEPS, B, LR = 4, 2, ("paper", "exact"), 12, 32, 5e-3


def pairs(n: int, shape: tuple, g: torch.Generator):
    """(z, s) with z depending on s, so the critics have something to learn."""
    s = torch.randn(n, *shape, generator=g)
    z = s.flatten(1)[:, :Z] + 0.5 * torch.randn(n, Z, generator=g)
    return z, s


@torch.no_grad()
def mean_logit(critic: JointCritic, held_out: list) -> float:
    """The reference read-out of a lone critic, by hand: E_q[logit] over the held-out pairs."""
    critic.eval()
    return float(torch.cat([critic(s, z) for z, s in held_out]).mean())


@pytest.fixture
def float64():
    """Float64 weights and data: float32 summation order (one grouped conv vs K convs) differs by
    ~1e-7, which Adam's normalized steps amplify over training; in float64 it stays invisible."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("shape", [(6,), (5, 3), (3, 8, 8)])
def test_ensemble_equals_critics_trained_one_at_a_time(shape, float64):
    torch.manual_seed(0)
    heads = ("dot", "cosine", "mlp")
    # members seed-major then form, one ensemble per head, as ihat builds them
    critics = {h: [JointCritic(Z, shape, h, 16) for _ in range(SEEDS * len(FORMS))] for h in heads}
    lone = copy.deepcopy(critics)
    ensembles = [CriticEnsemble(critics[h], groups=SEEDS) for h in heads]
    forms = [f for _ in range(SEEDS) for f in FORMS]
    g = torch.Generator().manual_seed(1)
    batches = [[pairs(B, shape, g) for _ in range(SEEDS)] for _ in range(STEPS)]  # [step][seed]
    replay = iter([b for step in batches for b in step])
    gens = [torch.Generator().manual_seed(100 + k) for k in range(len(forms))]
    critic_training.fit(ensembles, forms, gens, lambda n: next(replay), STEPS, B, LR)

    held_out = [pairs(64, shape, g) for _ in range(2)]
    batched = critic_training.read_out(ensembles, lambda: iter(held_out))
    for hi, h in enumerate(heads):
        for k, (critic, form) in enumerate(zip(lone[h], forms)):
            # the reference: one critic, its seed's batches, its own form's negatives
            opt = torch.optim.Adam(critic.parameters(), lr=LR)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / STEPS)
            neg_g = torch.Generator().manual_seed(100 + k)
            critic.train()
            for step in batches:
                z, s = step[k // len(FORMS)]
                e = critic.embed(s)
                loss = R.critic_loss(critic.score(e, z), critic.score(e, R.negative_z(z, form, generator=neg_g)))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            one = mean_logit(critic, held_out)
            assert batched[hi][k] == pytest.approx(one, rel=1e-4, abs=1e-5), (h, k, form)
    # and the trained members come back out as JointCritics with the same read-out
    back = [mean_logit(c, held_out) for c in ensembles[2].unstack()]
    assert back == pytest.approx(batched[2], rel=1e-4, abs=1e-5)
