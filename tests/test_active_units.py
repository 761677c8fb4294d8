"""Active units of z (Burda et al. 2016, Sect. 5.2) and the run record a trial reports with them."""
import json

import pytest
import torch

from cmisweep import regularizer as R
from cmisweep.config import TrainConfig, TrialConfig
from cmisweep.metrics.active_units import ACTIVE_UNIT_THRESHOLD, active_units
from cmisweep.models.critics import build_critics
from cmisweep.models.dsae import DSAE
from cmisweep.models.pixelcnn import PixelCNNVAE
from cmisweep.device import auto_precision
from cmisweep.training import Trainer
from cmisweep.regularizer_api import PaperJ
from helpers import synthetic_images, tiny_trial


def _column(n: int, variance: float, offset: float, g: torch.Generator) -> torch.Tensor:
    """n values whose population variance over the n is exactly `variance`, around `offset`."""
    r = torch.randn(n, generator=g, dtype=torch.float64)
    return offset + (r - r.mean()) / r.std(correction=0) * variance ** 0.5


def test_active_units_counts_the_dimensions_whose_mean_varies_over_inputs():
    """3 of 6 units active: variances 1, 2 x the threshold and 4 count; half the threshold, a
    constant of 5 (large mean, no variance) and 0 do not."""
    g = torch.Generator().manual_seed(0)
    spec = [(1.0, 0.0), (2 * ACTIVE_UNIT_THRESHOLD, 1.0), (0.5 * ACTIVE_UNIT_THRESHOLD, -1.0),
            (0.0, 5.0), (4.0, -3.0), (0.0, 0.0)]
    means = torch.stack([_column(500, v, o, g) for v, o in spec], dim=1)
    assert ACTIVE_UNIT_THRESHOLD == 0.01  # Burda et al.'s value
    assert active_units(means) == 3
    assert active_units(means.float()) == 3 and active_units(means.bfloat16()) == 3
    assert active_units(means[:, [3, 5]]) == 0  # a collapsed z


def _collapse(head: torch.nn.Linear, z_dim: int, keep: int) -> None:
    """Make the mean half of an encoder's last layer keep `keep` units (their weights x100) and fix
    the rest at 3 whatever x; every log-variance at 0, so that a sampled z varies in all units."""
    with torch.no_grad():
        head.weight[:keep] *= 100
        head.weight[keep:z_dim] = 0
        head.bias[keep:z_dim] = 3.0
        head.weight[z_dim:] = 0
        head.bias[z_dim:] = 0


@pytest.mark.parametrize("kind", ["pixelcnn_vae", "dsae"])
def test_validation_counts_active_units_from_the_models_posterior_means(kind):
    """Through the model protocol (ElboTerms.z_mean), for both models: an encoder with 2 of its
    units tied to a constant counts z_dim - 2 active, not the z_dim a sampled z would show."""
    torch.manual_seed(0)
    if kind == "dsae":
        model, z_dim = DSAE(x_dim=12, frames=8, z_dim=6, s_dim=5, hidden=16), 6
        x = torch.randn(120, 8, 12) + torch.randn(120, 1, 12)
        head = model.z_head
    else:
        model, z_dim = PixelCNNVAE(z_dim=6, layers=6, maps=8, encoder_channels=8), 6
        x = synthetic_images(120, seed=1)[0]
        head = model.encoder.net[-1]
    _collapse(head, z_dim, keep=4)
    reg = R.preset("cmi", 0.3)
    critics = build_critics(z_dim, model.critic_spec, reg.uses_m, reg.uses_c, width=16)
    t = Trainer(model, PaperJ(reg, critics), x, x, TrainConfig(epochs=1, batch_size=40, eval_batch_size=50, precision="fp32"),
                critic_lr=1e-2)
    with torch.no_grad():
        mean = model.eval().encode(x).mean
    assert mean[:, :4].var(0).min() > 0.1 and mean[:, 4:].var(0).max() == 0  # what the setup made
    assert t.validate()["active_units"] == 4  # over three batches of 50, 50, 20


@pytest.mark.slow(10)
def test_a_trial_reports_active_units_cpu_and_precision(fmnist_dir, tmp_path):
    """A tiny trial on real Fashion-MNIST (ELBO evaluation only): its final result carries the
    test set's active units, the per-epoch validation count, the CPU and the resolved precision."""
    from cmisweep.sweep.trainable import CPU_BF16, CPU_MODEL, DEVICE, PRECISION, final_result
    from cmisweep.trial import build_trainer, evaluate

    cfg = TrialConfig.model_validate(tiny_trial(data={"val_size": 100, "test_size": 200},
                                                evaluation={"enabled": False}))
    trainer, data = build_trainer(cfg)
    trainer.fit(cfg.train.epochs)
    metrics, _ = evaluate(trainer, data, cfg, tmp_path)  # what finish() returns, without writing the artifacts
    final = final_result(trainer, metrics)
    z_dim = cfg.model.z_dim
    assert isinstance(final["final/active_units"], int) and 0 <= final["final/active_units"] <= z_dim
    assert final["final/active_units_frac"] == final["final/active_units"] / z_dim
    assert 0 <= final["val/active_units"] <= z_dim and 0 <= final["final/val/active_units"] <= z_dim
    assert "final/test/active_units" not in final  # the test count is final/active_units
    assert isinstance(final[CPU_MODEL], str) and final[CPU_MODEL]
    assert final[CPU_BF16] in ("none", "avx512_bf16", "amx_tile", "avx512_bf16,amx_tile")
    # `auto` resolved: the PixelCNN-VAE's bf16 fast path where this CPU runs bf16 natively
    assert cfg.train.precision == "auto" and final[PRECISION] == auto_precision("bf16", torch.device("cpu"))
    assert final[DEVICE] == "cpu"
    json.dumps(final)  # written as final.json into the last checkpoint
