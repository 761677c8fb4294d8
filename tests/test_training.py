import pytest
import torch

from cmisweep import regularizer as R
from cmisweep.config import TrainConfig
from cmisweep.errors import TrainingDiverged
from cmisweep.models.critics import build_critics
from cmisweep.models.pixelcnn import PixelCNNVAE
from cmisweep.training import Trainer
from cmisweep.regularizer_api import PaperJ
from helpers import synthetic_images


def make(reg=None, seed=0, train_x=None, decoder="plain", **train):
    reg = reg or R.preset("cmi", 0.3)
    torch.manual_seed(seed)
    model = PixelCNNVAE(z_dim=4, layers=6, maps=8, encoder_channels=8, decoder=decoder)
    critics = build_critics(4, model.critic_spec, reg.uses_m, reg.uses_c, width=16)
    x, _ = synthetic_images(200, seed=1)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 25, "lr": 1e-3, "steps_per_epoch": 4, **train})
    return Trainer(model, PaperJ(reg, critics), x if train_x is None else train_x, x[:50], cfg, critic_lr=1e-2, seed=seed)


def params(t):
    return [p.detach().clone() for p in list(t.model.parameters()) + list(t.critics.parameters())]


@pytest.mark.parametrize("reg", [R.preset("cmi", 0.3), R.preset("advmi", 0.5), R.preset("cmi", 0.2, alpha=0.6)])
def test_resumed_run_continues_exactly(reg, tmp_path):
    straight = make(reg)
    straight.fit(3)
    first = make(reg)
    first.fit(1, checkpoint=tmp_path / "ckpt.pt")
    # a new process would build everything afresh from the config, then restore
    resumed = make(reg, seed=123)
    resumed.restore(tmp_path / "ckpt.pt")
    assert resumed.epoch == 1
    resumed.fit(3)
    assert [h["val/objective"] for h in resumed.history] == [h["val/objective"] for h in straight.history]
    assert all(torch.equal(a, b) for a, b in zip(params(resumed), params(straight)))
    assert resumed.best["epoch"] == straight.best["epoch"]


def test_he2019_resume_restores_batchnorm_statistics(tmp_path):
    """BatchNorm running statistics are buffers in the checkpoint: a resumed he2019 run (fast path:
    bf16, channels-last) continues exactly, eval-mode validation included."""
    straight = make(decoder="he2019", precision="bf16")
    straight.fit(2)
    first = make(decoder="he2019", precision="bf16")
    first.fit(1, checkpoint=tmp_path / "ckpt.pt")
    resumed = make(decoder="he2019", seed=123, precision="bf16")
    resumed.restore(tmp_path / "ckpt.pt")
    stats = [k for k in resumed.model.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert len(stats) == 2 * (1 + 3 * (5 + 4) + 1)  # first block, 5 + 4 bottlenecks (3 each), head
    assert all(torch.equal(resumed.model.state_dict()[k], first.model.state_dict()[k]) for k in stats)
    resumed.fit(2)
    assert [h["val/objective"] for h in resumed.history] == [h["val/objective"] for h in straight.history]
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.buffers(), straight.model.buffers()))


def test_auto_precision_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    """auto picks the model's bf16 fast path only on a CPU with native bf16 (AVX512-BF16 or AMX);
    where it is emulated, bf16 is 3-4x slower than fp32 and auto must keep fp32."""
    from cmisweep.models.dsae import DSAE
    from cmisweep.training import resolve_precision
    cpu, pix = torch.device("cpu"), PixelCNNVAE(z_dim=4, layers=6, maps=8, encoder_channels=8)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    assert resolve_precision("auto", pix, cpu) == "fp32"
    assert resolve_precision("bf16", pix, cpu) == "bf16"  # asked for explicitly, it is honoured
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", pix, cpu) == "bf16"
    assert resolve_precision("fp32", pix, cpu) == "fp32"
    assert resolve_precision("auto", DSAE(), cpu) == "fp32"  # the DSAE's measured fast path is fp32


def test_checkpoint_loads_with_weights_only(tmp_path):
    t = make()
    t.fit(1, checkpoint=tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["epoch"] == 1 and set(state) >= {"model", "critics", "opt", "critic_opt", "rng", "best", "history"}
    assert not (tmp_path / "c.pt.tmp").exists()


def test_best_epoch_is_the_best_validation_objective():
    t = make(epochs=4)
    t.fit(4)
    scores = [h["val/objective"] for h in t.history]
    assert t.best["epoch"] == scores.index(max(scores)) + 1
    t.load_best()
    assert t.validate()["objective"] == pytest.approx(max(scores), rel=0.02)  # z noise differs


def test_non_finite_loss_names_epoch_and_step():
    x, _ = synthetic_images(200, seed=1)
    x = x.float()
    bad = 137
    x[bad] = float("nan")
    # the trainer draws its epoch-1 order from Generator(seed): find the step holding image 137
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    step = int((perm == bad).nonzero()) // 25 + 1
    t = make(train_x=x, steps_per_epoch=None, check_every=3)
    with pytest.raises(TrainingDiverged, match=f"non-finite loss at epoch 1 step {step}") as e:
        t.fit(2)
    assert (e.value.epoch, e.value.step) == (1, step)


def test_critics_learn_and_vae_improves():
    t = make(epochs=1, steps_per_epoch=8)
    before, critic_before = t.validate(), [p.detach().clone() for p in t.critics.parameters()]
    t.fit(3)
    after = t.validate()
    assert after["elbo"] > before["elbo"] + 10
    assert all(not torch.equal(a, b) for a, b in zip(critic_before, t.critics.parameters()))
    assert "train/critic_loss" in t.history[-1] and "val/c_hat" in t.history[-1]


def test_a_learning_rate_of_10_is_stopped_as_diverged():
    """At lr 10 the loss leaps past 1e20 and stays finite: train.max_loss stops it all the same."""
    t = make(R.preset("beta", 0.3), lr=10.0, check_every=1, steps_per_epoch=8)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 1 step \d+ \(VAE loss = .* > train.max_loss"):
        t.fit(2)


def test_order_seed_varies_the_training_run_and_not_the_initial_weights():
    """train.order_seed sets apart what a trial's seed drives after the initial weights (batch order,
    z and critic-negative draws): the same seed with another order_seed starts from the same weights
    and ends elsewhere; order_seed equal to the seed is the default run, bit for bit."""
    import types

    from cmisweep.config import TrialConfig
    from cmisweep.trial import build_trainer
    from helpers import synthetic_images, tiny_trial

    x, _ = synthetic_images(100)
    data = types.SimpleNamespace(train_x=x.float(), val_x=x[:20].float())

    def run(**train):
        cfg = TrialConfig.model_validate(tiny_trial(seed=3, train=train, evaluation={"enabled": False}))
        t, _ = build_trainer(cfg, data)
        start = params(t)
        t.fit(1)
        return start, params(t)

    (s0, e0), (s1, e1), (s2, e2) = run(), run(order_seed=3), run(order_seed=4)
    assert all(torch.equal(a, b) for a, b in zip(s0, s2))
    assert all(torch.equal(a, b) for a, b in zip(e0, e1))
    assert not all(torch.equal(a, b) for a, b in zip(e0, e2))
    # order_offset: the seed plus the offset, the same run as that order_seed
    s3, e3 = run(order_offset=1)
    assert all(torch.equal(a, b) for a, b in zip(s0, s3)) and all(torch.equal(a, b) for a, b in zip(e2, e3))
    with pytest.raises(ValueError, match="order_offset"):
        run(order_seed=4, order_offset=1)
