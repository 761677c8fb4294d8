"""Speech data for the DSAE (docs/design.md sections 2 and 4): segments of normalized features with the
utterance each comes from, for four corpora.

- speech-synth: the espeak-ng corpus of synth.py (`cmisweep data synth-speech`), read as a folder.
- speech-folder: any root/<speaker>/<utterance>.wav|flac (explicit path only).
- timit: real TIMIT in the LDC layout, official split.
- japanese-vowels: UCI JapaneseVowels, 12 LPC cepstra per frame, no STFT. Its utterances have 7-29
  frames, so its segments are min(segment_frames, 7) frames long: every utterance gives at least one.

Validation is a seeded fraction of the training utterances (its speakers are training speakers);
test is the corpus's test speakers. Normalization statistics come from the training segments only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cmisweep.data.speech.corpora import folder_utterances, japanese_vowels, read_audio, timit_utterances
from cmisweep.data.speech.features import log_spectrogram, normalization_stats, normalize, segments
from cmisweep.errors import DataError
from cmisweep.vocabulary import SPEECH_SETS

SPEECH_DATASETS = SPEECH_SETS
DATASET_DIRS = {"speech-synth": "speech-synth", "timit": "timit", "japanese-vowels": "japanese-vowels"}
JV_SEGMENT_FRAMES = 7  # the shortest JapaneseVowels utterance


@dataclass
class SpeechData:
    """Segments (N, T, D) float32 normalized with training statistics; *_utt the row of
    `utterances` each segment comes from."""

    name: str
    train_x: torch.Tensor
    val_x: torch.Tensor
    test_x: torch.Tensor
    train_utt: torch.Tensor
    val_utt: torch.Tensor
    test_utt: torch.Tensor
    utterances: pd.DataFrame  # columns utterance, speaker, gender, split ('train' | 'val' | 'test'), path
    feature_mean: torch.Tensor
    feature_std: torch.Tensor

    def to(self, device: torch.device | str) -> "SpeechData":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device)
        return SpeechData(**moved)


def _looks_like(dataset: str, d: Path) -> bool:
    if dataset == "japanese-vowels":
        return (d / "JapaneseVowels_TRAIN.ts").is_file()
    if dataset == "timit":
        return d.is_dir() and any(p.is_dir() and p.name.lower() == "train" for p in d.iterdir())
    if dataset == "speech-synth":
        return (d / "speakers.csv").is_file()
    return d.is_dir()


def locate(dataset: str, path: str | Path | None = None) -> Path:
    """The corpus directory: an explicit path (itself or <path>/<dataset-dir>), else
    $CMISWEEP_DATA/<dataset-dir>, else ./data/<dataset-dir>."""
    if dataset not in SPEECH_DATASETS:
        raise DataError(f"unknown speech dataset {dataset!r}; expected one of {', '.join(SPEECH_DATASETS)}")
    if path is not None:
        if not Path(path).exists():
            raise DataError(f"data path {path} does not exist")
        tried = [Path(path)] + ([Path(path) / DATASET_DIRS[dataset]] if dataset in DATASET_DIRS else [])
    elif dataset == "speech-folder":
        raise DataError("speech-folder needs an explicit path: a root/<speaker>/<utterance>.wav|flac folder")
    else:
        roots = [Path(os.environ["CMISWEEP_DATA"])] if os.environ.get("CMISWEEP_DATA") else []
        tried = [r / DATASET_DIRS[dataset] for r in roots + [Path("data").absolute()]]
    for d in tried:
        if _looks_like(dataset, d):
            return d
    msg = f"{dataset}: corpus not found in any of: {', '.join(str(d) for d in tried)}"
    if dataset == "speech-synth":
        msg += ". Run `cmisweep data synth-speech` to synthesize it, or set CMISWEEP_DATA"
    elif dataset == "timit":
        msg += " (expected TRAIN/ and TEST/ in the LDC layout); TIMIT is licensed by the LDC, set CMISWEEP_DATA"
    raise DataError(msg)


def _seeded_subset(index: np.ndarray, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(index)[:k])


def _assign_splits(table: pd.DataFrame, val_fraction: float, split_seed: int,
                   max_utterances: int | None) -> pd.DataFrame:
    """Move a seeded val_fraction of the training utterances to 'val'; cap each split at
    max_utterances (seeded); rows keep the corpus order."""
    table = table.reset_index(drop=True).copy()
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    n_val = int(round(val_fraction * len(train)))
    table.loc[_seeded_subset(train, n_val, split_seed), "split"] = "val"
    if max_utterances is not None:
        keep = [_seeded_subset(np.flatnonzero(table["split"].to_numpy() == s), max_utterances, split_seed + 1 + i)
                for i, s in enumerate(("train", "val", "test"))]
        table = table.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)
    return table


def load_speech(
    dataset: str,
    path: str | Path | None = None,
    *,
    segment_frames: int = 20,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_utterances: int | None = None,
    device: torch.device | str = "cpu",
) -> SpeechData:
    """Read a corpus, split it, extract features, segment and normalize them. max_utterances
    caps the utterances of each split (a seeded subset) for quick runs."""
    d = locate(dataset, path)
    arrays = None
    if dataset == "japanese-vowels":
        table, arrays = japanese_vowels(d)
        table["arrays"] = arrays  # travels with its row through the split and the cap
        segment_frames = min(segment_frames, JV_SEGMENT_FRAMES)
    elif dataset == "timit":
        table = timit_utterances(d)
    else:
        table = folder_utterances(d, split_seed=split_seed)
    table = _assign_splits(table, val_fraction, split_seed, max_utterances)
    per_utt = []
    for row in table.itertuples(index=False):
        feats = torch.from_numpy(row.arrays) if arrays is not None else log_spectrogram(read_audio(row.path)[0])
        per_utt.append(segments(feats, segment_frames))
    table = table.drop(columns=["arrays"], errors="ignore")
    # an utterance shorter than one segment has nothing to contribute: drop its row
    kept = [i for i, s in enumerate(per_utt) if len(s)]
    table = table.iloc[kept].reset_index(drop=True)
    per_utt = [per_utt[i] for i in kept]
    split_x, split_utt = {}, {}
    for s in ("train", "val", "test"):
        rows = np.flatnonzero(table["split"].to_numpy() == s)
        if len(rows) == 0:
            raise DataError(f"{d}: no {s} utterance of at least {segment_frames} frames "
                            f"(val_fraction={val_fraction}, max_utterances={max_utterances})")
        split_x[s] = torch.cat([per_utt[i] for i in rows]).float()
        split_utt[s] = torch.cat([torch.full((len(per_utt[i]),), int(i), dtype=torch.int64) for i in rows])
    mean, std = normalization_stats(split_x["train"])
    data = SpeechData(
        dataset,
        *(normalize(split_x[s], mean, std) for s in ("train", "val", "test")),
        *(split_utt[s] for s in ("train", "val", "test")),
        utterances=table,
        feature_mean=mean,
        feature_std=std,
    )
    return data.to(device)


__all__ = ["SPEECH_DATASETS", "SpeechData", "load_speech", "locate"]
