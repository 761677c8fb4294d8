"""Binarized MNIST and Fashion-MNIST from the standard IDX files (docs/design.md section 4).

The files (.gz or raw) are read with numpy, their decompressed content checked against the
published MD5s, binarized statically at 0.5, the official train set split 80/20 (seeded) into
train and validation, the official test set kept. The whole set lives as uint8 tensors on the
training device: at 28x28 a DataLoader would cost more than it saves.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cmisweep.errors import DataError
from cmisweep.vocabulary import IMAGE_SETS

IMAGE_DATASETS = IMAGE_SETS
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MD5 of the decompressed IDX content, as published with each data set.
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
DEBIAN_DIR = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
_IDX_DTYPES = {0x08: np.uint8}


def read_idx_bytes(path: Path) -> bytes:
    """The decompressed content of an IDX file (.gz or raw); a damaged file is a DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read IDX file ({type(e).__name__}: {e}); it is truncated or corrupt") from None


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """Parse IDX bytes (magic 0 0 dtype ndim, big-endian dims, data) into an array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: IDX content has {len(raw)} bytes, its header {dims} says {expected}; truncated or corrupt")
    return np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=header).reshape(dims)


def read_idx(path: Path, dataset: str | None = None) -> np.ndarray:
    """Read one IDX file; when its name is a known file of `dataset`, verify its MD5 first."""
    raw = read_idx_bytes(path)
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    want = MD5.get(dataset or "", {}).get(stem)
    if want is not None:
        got = hashlib.md5(raw).hexdigest()
        if got != want:
            raise DataError(f"{path}: checksum mismatch (MD5 {got}, expected {want} for {dataset}); the file is corrupt")
    return parse_idx(raw, path)


def find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def candidate_dirs(dataset: str, path: str | Path | None = None) -> list[Path]:
    """Where to look, in order: an explicit path, $CMISWEEP_DATA, ./data, Debian's package dir.
    Each root is tried as <root>/<dataset> and as the data directory itself."""
    roots: list[Path] = []
    if path is not None:
        roots.append(Path(path))
    else:
        if os.environ.get("CMISWEEP_DATA"):
            roots.append(Path(os.environ["CMISWEEP_DATA"]))
        roots.append(Path("data").absolute())
    dirs = [d for r in roots for d in (r / dataset, r)]
    if path is None and dataset in DEBIAN_DIR:
        dirs.append(DEBIAN_DIR[dataset])
    return dirs


def locate(dataset: str, path: str | Path | None = None) -> Path:
    """The first directory holding all four IDX files of `dataset`."""
    if dataset not in IMAGE_DATASETS:
        raise DataError(f"unknown image dataset {dataset!r}; expected one of {', '.join(IMAGE_DATASETS)}")
    tried = candidate_dirs(dataset, path)
    for d in tried:
        if all(find_file(d, stem) for stem in FILES.values()):
            return d
    if path is not None and not Path(path).exists():
        raise DataError(f"data path {path} does not exist")
    looked = ", ".join(str(d) for d in tried)
    raise DataError(
        f"{dataset}: the IDX files ({', '.join(FILES.values())}[.gz]) were not found in any of: {looked}. "
        f"Run `cmisweep data fetch {dataset}` or set CMISWEEP_DATA"
    )


@dataclass
class ImageData:
    """Binary images (N, 1, 28, 28) as uint8 in {0, 1}, labels as int64, on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int = 10

    def to(self, device: torch.device | str) -> "ImageData":
        moved = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return ImageData(self.name, n_classes=self.n_classes, **moved)


def binarize(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Static binarization: intensity / 255 > threshold, i.e. intensity > floor(255 threshold) on
    the uint8 values directly (no float copy of the 47 MB training set in every trial)."""
    return (images > np.uint8(math.floor(255.0 * threshold))).astype(np.uint8)


def load_images(
    dataset: str,
    path: str | Path | None = None,
    *,
    split_seed: int = 0,
    val_fraction: float = 0.2,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    device: torch.device | str = "cpu",
) -> ImageData:
    """Load, verify, binarize and split one data set. train_size / val_size / test_size take
    seeded subsets (reduced runs); the split itself does not depend on them."""
    d = locate(dataset, path)
    arrays = {key: read_idx(find_file(d, stem), dataset) for key, stem in FILES.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{d}: {part} images {x.shape} and labels {y.shape} do not match")
    x = torch.from_numpy(binarize(arrays["train_images"])).unsqueeze(1)
    y = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    n_val = int(round(val_fraction * len(x)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    if val_size is not None:
        val_idx = val_idx[:val_size]
    tx = torch.from_numpy(binarize(arrays["test_images"])).unsqueeze(1)
    ty = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    if test_size is not None:
        keep = torch.randperm(len(tx), generator=torch.Generator().manual_seed(split_seed + 1))[:test_size]
        tx, ty = tx[keep], ty[keep]
    data = ImageData(dataset, x[train_idx], y[train_idx], x[val_idx], y[val_idx], tx, ty,
                     n_classes=int(y.max()) + 1)
    return data.to(device)
