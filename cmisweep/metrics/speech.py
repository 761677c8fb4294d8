"""The speech evaluation suite of one trained DSAE: I-hat(z;s), EER(z), EER(s), VC-mCAS (gender,
and over the test speakers' identities) and a voice-conversion figure."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from cmisweep.config import EvalConfig
from cmisweep.metrics.mutual_info import ihat_metrics
from cmisweep.metrics.speaker import speaker_eer, vc_mcas
from cmisweep.metrics.vc_speaker import vc_mcas_speaker


def evaluate_speech(model, data, cfg: EvalConfig, out_dir: Path, seed: int = 0) -> tuple[dict, list[Path]]:
    metrics: dict = {}
    artifacts: list[Path] = []
    model.eval()
    if cfg.ihat is not None:
        metrics.update(ihat_metrics(model, data, cfg, seed))
    if cfg.eer:
        t0 = time.perf_counter()
        metrics.update(speaker_eer(model, data, cfg.batch_size))
        metrics["time/eer_s"] = time.perf_counter() - t0
    if cfg.vc_mcas:
        t0 = time.perf_counter()
        metrics.update(vc_mcas(model, data, cfg.vc_pairs, seed, cfg.batch_size, cfg.vc_protocol, cfg.vc_segments))
        metrics["time/vc_s"] = time.perf_counter() - t0
    if cfg.vc_speaker:
        t0 = time.perf_counter()
        metrics.update(vc_mcas_speaker(model, data, cfg.vc_speaker_segments, seed, cfg.batch_size))
        metrics["time/vc_speaker_s"] = time.perf_counter() - t0
    if cfg.sample_grid:
        artifacts.append(conversion_figure(model, data, out_dir / "conversion.png", seed))
    return metrics, artifacts


@torch.no_grad()
def conversion_figure(model, data, path: Path, seed: int = 0) -> Path:
    """One test segment, another speaker's segment, the first converted to the second's z, and a
    sample from the prior with the first's z (normalized log spectra, time on x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(seed)
    speakers = data.utterances["speaker"].to_numpy()
    utt = data.test_utt.cpu()
    i = int(torch.randint(len(utt), (1,), generator=g))
    others = (torch.as_tensor(speakers[utt.numpy()] != speakers[int(utt[i])])).nonzero().squeeze(1)
    j = int(others[torch.randint(len(others), (1,), generator=g)]) if len(others) else i
    x = data.test_x[[i, j]]
    z = model.encode(x).mean
    panels = {"source": x[0], "z donor": x[1], "source with donor's z": model.convert(x[:1], z[1:2])[0],
              "prior sample, source's z": model.generate(z[:1], 1)[0]}
    fig, axes = plt.subplots(1, 4, figsize=(12, 3))
    for ax, (title, spec) in zip(axes, panels.items()):
        ax.imshow(spec.float().cpu().numpy().T, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame")
    axes[0].set_ylabel("frequency bin")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
