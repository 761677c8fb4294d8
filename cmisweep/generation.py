"""Controlled generation from a trained model (docs/design.md section 6): the paper's Fig. 4 sample
grids for images, and voice conversion by swapping z for speech.

Images: real test images, one per class, each followed by n samples of p(x | z) with z the mean of
q(z | x) of that image; what the samples share is what z holds.
Speech: z (the speaker) from SOURCE, s (the content) from TARGET, decoded frame by frame; the
log-magnitude spectrogram is inverted with Griffin-Lim (librosa) to audio of the target's length.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cmisweep.errors import DataError


def _modality(cfg) -> str:
    return cfg.data.modality


@torch.no_grad()
def sample_grid(model, cfg, out: Path, n: int = 10, seed: int = 0, data_path: str | None = None) -> Path:
    """Write the Fig. 4 grid of a PixelCNN-VAE: one real test image per class, then n samples."""
    from cmisweep.data.images import load_images
    from cmisweep.metrics.probes import balanced_indices
    from cmisweep.metrics.samples import save_grid

    if _modality(cfg) != "image":
        raise DataError(f"sample is for image models; this model is a {cfg.model.kind} on {cfg.data.dataset} "
                        "(use cmisweep convert)")
    data = load_images(cfg.data.dataset, data_path or cfg.data.path, split_seed=cfg.data.split_seed,
                       test_size=cfg.data.test_size)
    idx = balanced_indices(data.test_y, 1, seed)
    real = data.test_x[idx]
    torch.manual_seed(seed)
    z = model.encode(real).mean
    return save_grid(real, model.generate(z, n), out)


def _features(model, audio: np.ndarray) -> torch.Tensor:
    """Normalized log-magnitude frames (time, 201), with the model's training statistics."""
    from cmisweep.data.speech.features import log_spectrogram

    if not hasattr(model, "feature_mean"):
        raise DataError("the model carries no feature normalization (feature_mean / feature_std); "
                        "it was saved before cmisweep.saved existed: train it again")
    return (log_spectrogram(audio) - model.feature_mean) / model.feature_std


def _segments(frames: torch.Tensor, t: int) -> torch.Tensor:
    """(time, D) -> (ceil(time / T), T, D): the last segment padded by repeating the final frame."""
    pad = (-len(frames)) % t
    if pad:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1)])
    return frames.reshape(-1, t, frames.shape[-1])


@torch.no_grad()
def convert(model, cfg, source_wav: Path, target_wav: Path, out_wav: Path, n_iter: int = 32) -> tuple[Path, Path]:
    """Voice conversion: the speaker of SOURCE speaking TARGET's content. Writes out_wav (16 kHz,
    exactly as long as TARGET) and out_wav with .png: the spectrograms of source, target and the
    conversion."""
    import librosa
    import soundfile as sf

    from cmisweep.data.speech.corpora import read_audio
    from cmisweep.data.speech.features import HOP, LOG_EPS, N_FFT, SAMPLE_RATE

    if _modality(cfg) != "speech":
        raise DataError(f"convert is for speech models; this model is a {cfg.model.kind} on {cfg.data.dataset} "
                        "(use cmisweep sample)")
    src, _ = read_audio(source_wav)
    tgt, _ = read_audio(target_wav)
    t = cfg.data.segment_frames
    src_frames, tgt_frames = _features(model, src), _features(model, tgt)
    if len(src_frames) < t:
        raise DataError(f"{source_wav}: {len(src_frames)} frames; expected at least {t} ({t * 10} ms) "
                        "to read a speaker from")
    # the speaker: q(z|x)'s mean averaged over the source's whole segments (one z per utterance)
    z = model.encode(_segments(src_frames[: len(src_frames) // t * t], t)).mean.mean(0, keepdim=True)
    content = _segments(tgt_frames, t)
    converted = model.convert(content, z.expand(len(content), -1)).reshape(-1, content.shape[-1])
    converted = converted[: len(tgt_frames)] * model.feature_std + model.feature_mean
    magnitude = (converted.exp() - LOG_EPS).clamp_min(0).T.numpy().astype(np.float32)
    audio = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=HOP, win_length=N_FFT, n_fft=N_FFT,
                               window="hann", center=True, length=len(tgt), random_state=0)
    out_wav = Path(out_wav)
    out_wav.parent.mkdir(parents=True, exist_ok=True)
    peak = float(np.abs(audio).max()) or 1.0
    sf.write(out_wav, (audio / max(peak, 1.0)).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    png = out_wav.with_suffix(".png")
    _plot_spectrograms([("source (speaker)", src_frames), ("target (content)", tgt_frames),
                        ("converted", (converted - model.feature_mean) / model.feature_std)], png)
    return out_wav, png


def _plot_spectrograms(panels: list[tuple[str, torch.Tensor]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.2 * len(panels)))
    for ax, (title, frames) in zip(axes, panels):
        ax.imshow(frames.T.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-3, vmax=3)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("bin")
    axes[-1].set_xlabel("frame (10 ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
