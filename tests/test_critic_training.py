"""How the critics train beside the VAE (regularizer.critic_precision / critic_z / critic_bn, the
KL(z) ablation's keys): each setting must do what it names inside a real training step."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from cmisweep import regularizer as R
from cmisweep.config import TrainConfig, TrialConfig
from cmisweep.models.critics import build_critics
from cmisweep.models.pixelcnn import PixelCNNVAE
from cmisweep.training import Trainer
from cmisweep.regularizer_api import PaperJ
from helpers import synthetic_images


def build(decoder="plain"):
    torch.manual_seed(0)
    model = PixelCNNVAE(z_dim=4, layers=6, maps=8, encoder_channels=8, decoder=decoder)
    critics = build_critics(4, model.critic_spec, uses_m=False, uses_c=True, width=16)
    x, _ = synthetic_images(32, seed=1)
    return model, critics, x.float()


def trainer(model, critics, x, precision="fp32", **critic):
    cfg = TrainConfig(batch_size=32, lr=1e-3, precision=precision, memory_format="contiguous")
    t = Trainer(copy.deepcopy(model), PaperJ(R.preset("cmi", 0.3), copy.deepcopy(critics)), x, x, cfg,
                critic_lr=1e-2, seed=3, **critic)
    t.model.train()
    t.critics.train()  # as during an epoch
    return t


def buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k or "num_batches" in k}


def test_the_shipped_space_carries_the_keys_to_each_trials_trainer():
    """From the ablation space's YAML through the sweep's points and trial configs to the Trainer a
    worker builds (trial.build_trainer): each grid point's settings reach the critic steps."""
    from types import SimpleNamespace

    from cmisweep.sweep.space import grid_points, load_space, trial_config
    from cmisweep.trial import build_trainer

    space = load_space(Path(__file__).parents[1] / "search_spaces" / "fmnist-kl-ablation-critics.yaml")
    x, _ = synthetic_images(8, seed=1)
    data = SimpleNamespace(train_x=x.float(), val_x=x.float())
    points, threads = grid_points(space), torch.get_num_threads()  # build_trainer sets the trial's thread count
    for point in points:
        t, _ = build_trainer(trial_config(space, point), data)
        p = point["params"]
        precision = t.precision if p["regularizer.critic_precision"] == "same" else p["regularizer.critic_precision"]
        assert (t.critic_precision, t.critic_z, t.critic_bn) == (
            precision, p["regularizer.critic_z"], p["regularizer.critic_bn"])
        assert t.critic_opt.param_groups[0]["lr"] == 1e-3
    torch.set_num_threads(threads)
    assert len(points) == 8


@pytest.mark.parametrize("mode, folds, training", [("frozen", False, True), ("train", True, True), ("eval", False, False)])
def test_critic_bn_sets_the_critics_batchnorm_in_the_vae_step(mode, folds, training):
    t = trainer(*build(), critic_bn=mode)
    seen = []
    bn = next(m for m in t.critics.modules() if isinstance(m, nn.BatchNorm2d))
    bn.register_forward_hook(lambda m, i, o: seen.append(m.training))
    before = buffers(t.critics)
    t.vae_step(t.train_x)
    changed = any(not torch.equal(before[k], v) for k, v in buffers(t.critics).items())
    assert changed == folds  # only "train" folds the VAE step's batch into the running statistics
    assert seen == [training]  # "eval" normalizes with the running statistics
    assert t.critics.training  # and the critic steps that follow train as before


def spy_critic_inputs(t):
    seen = []
    original = t.critic_step
    t.critic_step = lambda z, s, x=None: (seen.append((z.clone(), s.clone())), original(z, s, x))[1]
    return seen


@pytest.mark.parametrize("mode", ["reuse", "resample"])
def test_critic_z_reuses_the_vae_steps_encodings_or_draws_fresh_ones(mode):
    model, critics, x = build("he2019")
    t = trainer(model, critics, x, critic_z=mode)
    seen = spy_critic_inputs(t)
    torch.manual_seed(5)
    _, z, s = Trainer.vae_step(copy.deepcopy(t), x)  # the VAE step's own (z, s), same noise
    torch.manual_seed(5)
    t.train_step(x)
    assert len(seen) == t.reg.aux_steps == 2
    if mode == "reuse":
        assert all(torch.equal(cz, z) and torch.equal(cs, s) for cz, cs in seen)
    else:  # a fresh z for every critic step, from the encoder as the VAE step left it
        assert not any(torch.equal(cz, z) for cz, _ in seen)
        assert not torch.equal(seen[0][0], seen[1][0])
        assert torch.equal(seen[0][1], seen[1][1])  # this model's s depends on x alone


def test_resampling_leaves_the_decoders_batchnorm_statistics_to_the_vae_step():
    model, critics, x = build("he2019")
    after = {}
    for mode in ("reuse", "resample"):
        t = trainer(model, critics, x, critic_z=mode)
        assert buffers(t.model)  # the he2019 decoder has BatchNorm statistics to check
        t.train_step(x)
        after[mode] = buffers(t.model)
    for k, v in after["reuse"].items():
        assert torch.equal(v, after["resample"][k]), k


@pytest.mark.parametrize("critic_precision, expected", [("same", torch.bfloat16), ("fp32", torch.float32)])
def test_critic_precision_runs_the_critics_apart_from_the_vae(critic_precision, expected):
    model, critics, x = build()
    t = trainer(model, critics, x, precision="bf16", critic_precision=critic_precision)
    critic_dtypes, vae_dtypes = [], []
    first_conv = next(m for m in t.critics["c"].modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: critic_dtypes.append(o.dtype))
    t.model.encoder.net.register_forward_hook(lambda m, i, o: vae_dtypes.append(o.dtype))
    t.train_step(x)
    assert len(critic_dtypes) == 1 + t.reg.aux_steps  # the VAE step's read and each critic step
    assert set(critic_dtypes) == {expected}
    assert set(vae_dtypes) == {torch.bfloat16}  # the VAE stays in its own precision


@pytest.mark.parametrize("c_form", ["paper", "exact"])
def test_the_training_critics_learn_a_known_dependence(c_form):
    """The trainer's own critic steps (Trainer.critic_step, the VAE untouched) on encodings with a
    known dependence: z ~ N(1, I) in 4 dimensions, so M = KL(q(z) || p(z)) = 2 nats, and s a noisy
    function of z, so I(z;s) is large. Within 150 steps D_m reads more than half of M and D_c more
    than 0.5 nats. A critic whose negatives were its positives (nothing to tell apart) reads ~0:
    CMI would then quietly be beta-VAE."""
    model, _, x = build()
    critics = build_critics(4, model.critic_spec, uses_m=True, uses_c=True, width=32)
    cfg = TrainConfig(batch_size=64, lr=1e-3, precision="fp32", memory_format="contiguous")
    t = Trainer(model, PaperJ(R.preset("cmi", 0.3, c_form=c_form), critics), x, x, cfg, critic_lr=3e-3, seed=0)
    g = torch.Generator().manual_seed(0)

    def encodings(n: int):
        z = 1.0 + torch.randn(n, 4, generator=g)
        s = z[:, torch.arange(8) % 4, None, None].expand(n, 8, 28, 28) + 0.5 * torch.randn(n, 8, 28, 28, generator=g)
        return z, s

    for _ in range(150):
        t.critic_step(*encodings(64))
    z, s = encodings(512)
    with torch.no_grad():
        m_logits, c_logits = R.critic_logits(t.critics.eval(), z, s)
    m_hat, c_hat = float(R.kl_estimate(m_logits)), float(R.kl_estimate(c_logits))
    assert m_hat > 1.0, m_hat
    assert c_hat > 0.5, c_hat


def test_cmisweep_train_with_c_bound_on_real_images(fmnist_dir, tmp_path):
    """regularizer.c_bound from a trial file to the loss, on real Fashion-MNIST: the trial trains,
    MLflow records the setting, and each epoch logs the share of VAE steps the bound took."""
    import json
    import re
    import subprocess
    import sys

    import yaml
    from mlflow.tracking import MlflowClient

    from helpers import tiny_trial

    cfg = tiny_trial(regularizer={"c_bound": "kl_z"}, train={"epochs": 2},
                     evaluation={"ihat": None, "probes": False, "mcas": False})
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "cmisweep", "train", str(tmp_path / "trial.yaml"), "--out",
                        str(tmp_path / "out"), "--results", str(tmp_path / "results")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "test/kl_z" in json.loads(r.stdout)  # trained and evaluated
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", r.stderr).group(1)
    assert client.get_run(run_id).data.params["regularizer.c_bound"] == "kl_z"
    shares = [m.value for m in client.get_metric_history(run_id, "train/c_bounded")]
    assert len(shares) == 2 and all(0.0 <= v <= 1.0 for v in shares)
