"""Atomic writes (cmisweep.files): a writer that fails leaves the old file and no debris, and two
writers of one file never share a temporary name."""
from pathlib import Path

import pytest

from cmisweep.files import atomic_write, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    f = atomic_write_text(tmp_path / "report.md", "old")

    def broken(p: Path):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(f, broken)
    assert f.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_two_writers_of_one_file_do_not_collide(tmp_path):
    f = tmp_path / "trials.parquet"
    seen = []

    def outer(p: Path):
        p.write_text("outer")
        # a second writer of the same file finishes while the first is still writing
        atomic_write(f, lambda q: seen.append(q) or q.write_text("inner"))
        seen.append(p)
        assert p.read_text() == "outer"  # its own temporary was not overwritten by the other writer

    atomic_write(f, outer)
    assert seen[0] != seen[1] and f.read_text() == "outer"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trials.parquet"]
