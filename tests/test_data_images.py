import gzip
import shutil

import numpy as np
import pytest
import torch

from cmisweep.data import images
from cmisweep.data.images import FILES, load_images, locate, parse_idx, read_idx
from cmisweep.errors import DataError
from helpers import idx_bytes, write_idx


def test_parse_idx_round_trip_raw_and_gz(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x-idx3-ubyte", "x-idx3-ubyte.gz"):
        assert np.array_equal(read_idx(write_idx(tmp_path / name, a)), a)


def test_header_size_mismatch_names_the_file(tmp_path):
    raw = idx_bytes(np.zeros((5, 4), np.uint8))[:-3]
    p = tmp_path / "short-idx1-ubyte"
    p.write_bytes(raw)
    with pytest.raises(DataError, match="short-idx1-ubyte.*truncated or corrupt"):
        read_idx(p)
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x01\x02\x03\x04", p)


def test_truncated_gzip_names_the_file(tmp_path):
    p = write_idx(tmp_path / "a-idx3-ubyte.gz", np.ones((50, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"a-idx3-ubyte\.gz.*truncated or corrupt"):
        read_idx(p)


def test_known_file_with_wrong_checksum_is_refused(tmp_path):
    p = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        read_idx(p, "mnist")
    assert read_idx(p).shape == (10000,)  # no data set named: no checksum to compare with


def _fake_set(root):
    for stem in FILES.values():
        (root / (stem + ".gz")).parent.mkdir(parents=True, exist_ok=True)
        (root / (stem + ".gz")).write_bytes(b"")
    return root


def test_lookup_order_explicit_env_local_debian(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env, explicit, deb = tmp_path / "env", tmp_path / "explicit", tmp_path / "deb" / "fashion-mnist"
    monkeypatch.setattr(images, "DEBIAN_DIR", {"fashion-mnist": deb})
    monkeypatch.setenv("CMISWEEP_DATA", str(env))
    _fake_set(deb)
    assert locate("fashion-mnist") == deb
    _fake_set(tmp_path / "data" / "fashion-mnist")
    assert locate("fashion-mnist") == tmp_path / "data" / "fashion-mnist"
    _fake_set(env / "fashion-mnist")
    assert locate("fashion-mnist") == env / "fashion-mnist"
    _fake_set(explicit)  # the data directory itself
    assert locate("fashion-mnist", explicit) == explicit
    with pytest.raises(DataError, match="does not exist"):
        locate("fashion-mnist", tmp_path / "nowhere")
    with pytest.raises(DataError, match="cmisweep data fetch mnist"):
        locate("mnist")  # no mnist anywhere; Debian ships only Fashion-MNIST


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_real_sets_load_binarized_and_split(name, request):
    from conftest import need_data

    d = need_data(name)
    data = load_images(name, d)
    assert data.train_x.shape == (48000, 1, 28, 28) and data.val_x.shape == (12000, 1, 28, 28)
    assert data.test_x.shape == (10000, 1, 28, 28) and data.test_y.shape == (10000,)
    assert set(torch.unique(data.train_x).tolist()) == {0, 1}
    assert data.train_x.dtype == torch.uint8 and data.n_classes == 10
    again = load_images(name, d, train_size=1000, val_size=100)
    assert torch.equal(again.train_x, data.train_x[:1000])  # subsets are prefixes of the same split
    other = load_images(name, d, split_seed=1, train_size=1000)
    assert not torch.equal(other.train_x, again.train_x)
    # train and validation are disjoint parts of the official train set
    flat = lambda t: {bytes(r) for r in t[:2000].reshape(len(t[:2000]), -1).numpy()}  # noqa: E731
    assert len(flat(again.train_x) & flat(data.val_x)) < 10  # duplicates exist in the raw data


def test_truncated_real_file_is_an_error_naming_it(fmnist_dir, tmp_path):
    d = tmp_path / "fashion-mnist"
    shutil.copytree(fmnist_dir, d)
    for f in d.iterdir():
        f.chmod(0o644)
    victim = d / "train-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_images("fashion-mnist", d)
    # a flipped byte inside the gzip stream: still refused (CRC or checksum), never used
    raw = gzip.decompress((fmnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    raw = raw[:100] + bytes([raw[100] ^ 1]) + raw[101:]
    shutil.copy(fmnist_dir / "train-labels-idx1-ubyte.gz", victim)
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        load_images("fashion-mnist", d)
