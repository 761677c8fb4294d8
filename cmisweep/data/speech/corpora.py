"""Speech corpora as lists of utterance records, and the audio reader (docs/design.md section 4).

A record table is a DataFrame with columns utterance (unique id), speaker, gender ('F' | 'M' |
None), split ('train' | 'test') and path. Three layouts are read: real TIMIT in the LDC layout,
any root/<speaker>/<utterance>.wav|flac folder (the synthetic corpus is one, with a speakers.csv),
and JapaneseVowels in sktime's .ts format (LPC cepstra, no audio).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

from cmisweep.errors import DataError

SAMPLE_RATE = 16000
COLUMNS = ["utterance", "speaker", "gender", "split", "path"]
AUDIO_SUFFIXES = (".wav", ".flac")
JV_FILES = {"train": "JapaneseVowels_TRAIN.ts", "test": "JapaneseVowels_TEST.ts"}
JV_DIMS = 12


def _sphere_coding(path: Path) -> str | None:
    """sample_coding from a NIST SPHERE header, or None when the file is not SPHERE."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        return None
    m = re.search(rb"sample_coding\s+-s\d+\s+(\S+)", head)
    return m.group(1).decode("ascii", "replace") if m else "pcm"


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio in [-1, 1] at 16 kHz, and its rate (always 16000). Reads wav, flac and
    uncompressed NIST SPHERE (TIMIT's .WAV); other rates are resampled, channels averaged."""
    path = Path(path)
    try:
        coding = _sphere_coding(path)
        # libsndfile reads SPHERE PCM but not 'shorten', which it reports only as "unimplemented format"
        if coding is not None and "shorten" in coding:
            raise DataError(f"{path}: NIST SPHERE compressed with shorten (sample_coding {coding}); expected "
                            "uncompressed PCM: decompress it first, e.g. `sph2pipe -f wav`")
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except (OSError, sf.SoundFileError) as e:
        raise DataError(f"{path}: cannot read audio ({e}); expected a wav, flac or uncompressed "
                        "NIST SPHERE file") from None
    if x.shape[0] == 0:
        raise DataError(f"{path}: the audio file holds no samples")
    x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        g = np.gcd(int(sr), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sr) // g).astype(np.float32)
    return x, SAMPLE_RATE


def _child(parent: Path, name: str) -> list[Path]:
    """Subdirectories of `parent` named `name`, case-insensitively (TIMIT copies differ in case)."""
    return sorted(p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name)


def timit_utterances(root: str | Path) -> pd.DataFrame:
    """Real TIMIT: root/{TRAIN,TEST}/DR*/<SPEAKER>/<UTT>.WAV, in any case. The split is TIMIT's
    official one, the speaker id the directory name, its first letter the gender; SA sentences
    are kept. Where a copy holds both UTT.WAV and a converted UTT.WAV.wav, the first in sort
    order is kept."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: TIMIT directory does not exist")
    rows = []
    for split in ("train", "test"):
        for top in _child(root, split):
            for region in sorted(p for p in top.iterdir() if p.is_dir() and p.name.lower().startswith("dr")):
                for spk in sorted(p for p in region.iterdir() if p.is_dir()):
                    seen: set[str] = set()
                    for f in sorted(spk.iterdir()):
                        utt = f.name.split(".")[0].upper()
                        if f.suffix.lower() != ".wav" or utt in seen:
                            continue
                        seen.add(utt)
                        g = spk.name[:1].upper()
                        rows.append((f"{spk.name.upper()}/{utt}", spk.name.upper(),
                                     g if g in ("F", "M") else None, split, str(f)))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if not {"train", "test"} <= set(table["split"]):
        raise DataError(f"{root}: not a TIMIT tree; expected TRAIN/DR*/<SPEAKER>/*.WAV and TEST/DR*/<SPEAKER>/*.WAV")
    if table["utterance"].duplicated().any():
        dup = table.loc[table["utterance"].duplicated(), "utterance"].iloc[0]
        raise DataError(f"{root}: utterance {dup} appears twice (a speaker in two dialect regions or splits)")
    return table


def seeded_speaker_split(speakers: list[str], seed: int, test_fraction: float) -> dict[str, str]:
    """speaker -> 'train' | 'test': a seeded draw of round(test_fraction * n) test speakers
    (at least one, and one left for training, when there are two or more)."""
    n = len(speakers)
    k = int(round(test_fraction * n))
    if test_fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    test = {speakers[i] for i in order[:k]}
    return {s: "test" if s in test else "train" for s in speakers}


def folder_utterances(root: str | Path, split_seed: int = 0, test_fraction: float = 0.25) -> pd.DataFrame:
    """root/<speaker>/<utterance>.wav|flac. With root/speakers.csv (columns speaker, split and
    optionally gender) the split and gender come from it; without, gender is None and the
    speakers are split by a seeded draw."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: speech folder does not exist")
    files = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        audio = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        if audio:
            files[d.name] = audio
    if not files:
        raise DataError(f"{root}: no audio found; expected <speaker>/<utterance>.wav or .flac under it")
    table_path = root / "speakers.csv"
    if table_path.is_file():
        try:
            meta = pd.read_csv(table_path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{table_path}: cannot read ({e})") from None
        if not {"speaker", "split"} <= set(meta.columns):
            raise DataError(f"{table_path}: expected columns speaker, split (and gender); "
                            f"got {', '.join(meta.columns)}")
        meta = meta.set_index("speaker")
        missing = sorted(set(files) - set(meta.index))
        if missing:
            raise DataError(f"{table_path}: speakers {', '.join(missing[:5])} have audio but no row")
        bad = sorted(set(meta.loc[list(files), "split"]) - {"train", "test"})
        if bad:
            raise DataError(f"{table_path}: split must be 'train' or 'test', got {', '.join(bad)}")
        split = meta["split"].to_dict()
        genders = meta["gender"].to_dict() if "gender" in meta.columns else {}
    else:
        split = seeded_speaker_split(list(files), split_seed, test_fraction)
        genders = {}
    rows = []
    for spk, audio in files.items():
        g = str(genders.get(spk, "")).upper()
        for f in audio:
            rows.append((f"{spk}/{f.stem}", spk, g if g in ("F", "M") else None, split[spk], str(f)))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table["utterance"].duplicated().any():
        dup = table.loc[table["utterance"].duplicated(), "utterance"].iloc[0]
        raise DataError(f"{root}: utterance {dup} exists both as .wav and .flac")
    return table


def _parse_ts(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """sktime .ts: @-header lines, then one case per line: dimensions separated by ':', each a
    comma-separated series, the class label last."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "@data") + 1
    except StopIteration:
        raise DataError(f"{path}: no @data line; expected an sktime .ts file") from None
    series, labels = [], []
    for n, line in enumerate(lines[start:], start + 1):
        if not line.strip() or line.startswith("#"):
            continue
        *dims, label = line.strip().split(":")
        try:
            values = [[float(v) for v in d.split(",")] for d in dims]
        except ValueError:
            raise DataError(f"{path}: line {n}: a series holds a value that is not a number") from None
        if len(values) != JV_DIMS or len({len(v) for v in values}) != 1:
            raise DataError(f"{path}: line {n}: expected {JV_DIMS} dimensions of equal length, "
                            f"got lengths {[len(v) for v in values]}")
        series.append(np.array(values, dtype=np.float32).T)  # (frames, 12)
        labels.append(label.strip())
    if not series:
        raise DataError(f"{path}: no cases after @data")
    return series, labels


def japanese_vowels(root: str | Path) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """UCI JapaneseVowels from JapaneseVowels_{TRAIN,TEST}.ts: the record table (speaker = the
    class label '1'..'9', all male, path = the .ts file) and one (frames, 12) array per row,
    7-29 frames of LPC cepstra. The split is the official one."""
    root = Path(root)
    rows, arrays = [], []
    for split, name in JV_FILES.items():
        path = root / name
        if not path.is_file():
            raise DataError(f"{path}: JapaneseVowels file not found; "
                            f"expected {' and '.join(JV_FILES.values())} in {root}")
        series, labels = _parse_ts(path)
        for i, (arr, label) in enumerate(zip(series, labels)):
            rows.append((f"{split}/{i:04d}", label, "M", split, str(path)))
            arrays.append(arr)
    return pd.DataFrame(rows, columns=COLUMNS), arrays
