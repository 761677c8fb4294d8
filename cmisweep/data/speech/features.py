"""The paper's speech features (docs/design.md section 2): 16 kHz audio, 25 ms Hann window, 10 ms hop,
201-bin log-magnitude spectrum, cut into non-overlapping 200 ms segments of T = 20 frames.
Normalization statistics come from the training split only and are applied to every split.
"""
from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms at 16 kHz; also the window length
HOP = 160  # 10 ms
N_BINS = N_FFT // 2 + 1  # 201
SEGMENT_FRAMES = 20  # 200 ms
# Added to |X| before the log so digital silence stays finite: log(1e-6) = -13.8 is a floor well
# below the spectrum of 16-bit audio (one quantization step already gives |X| ~ 1e-4).
LOG_EPS = 1e-6
STD_FLOOR = 1e-6  # a feature constant over the training set is centred, not blown up


def frame_count(n_samples: int) -> int:
    """Frames torch.stft gives with center=True: one per hop, plus one."""
    return 1 + n_samples // HOP


def segment_count(n_samples: int, segment_frames: int = SEGMENT_FRAMES) -> int:
    return frame_count(n_samples) // segment_frames


def log_spectrogram(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(time, 201) float32 log(|STFT| + LOG_EPS) of mono 16 kHz audio. Frames are centred (the
    signal is zero-padded by half a window at each end), so frame t covers t*10 ms +- 12.5 ms."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, window=torch.hann_window(N_FFT),
                      center=True, pad_mode="constant", return_complex=True)
    return torch.log(spec.abs() + LOG_EPS).T.contiguous()


def segments(frames: torch.Tensor, segment_frames: int = SEGMENT_FRAMES) -> torch.Tensor:
    """(time, D) -> (time // T, T, D) non-overlapping segments; a tail shorter than T is dropped."""
    n = frames.shape[0] // segment_frames
    return frames[: n * segment_frames].reshape(n, segment_frames, frames.shape[1])


def normalization_stats(train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std over every frame of the training segments (N, T, D)."""
    flat = train.reshape(-1, train.shape[-1]).double()
    return flat.mean(0).float(), flat.std(0).clamp_min(STD_FLOOR).float()


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean) / std
