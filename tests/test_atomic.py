"""Atomic writes: the old file or the whole new one, never half; a dead writer's temp file is cleaned up."""
import os
import subprocess
import sys

import pytest

from srood_lib import atomic


def test_a_write_replaces_the_file_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic.atomic_write(path, lambda f: f.write(b"one"))
    atomic.atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two" and sorted(p.name for p in path.parent.iterdir()) == ["f.bin"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    path = tmp_path / "f.bin"
    atomic.atomic_write(path, lambda f: f.write(b"old"))

    def half_then_fail(f):
        f.write(b"ne")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_temps_of_dead_writers_on_this_host_go_those_of_live_ones_stay(tmp_path):
    path = tmp_path / "f.bin"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_tmp = tmp_path / f".f.bin.{atomic.HOST}-{int(dead.stdout)}.abc.tmp"
    live_tmp = tmp_path / f".f.bin.{atomic.HOST}-{os.getpid()}.abc.tmp"
    other_host = tmp_path / ".f.bin.elsewhere-1.abc.tmp"
    for p in (dead_tmp, live_tmp, other_host):
        p.write_bytes(b"half")
    atomic.atomic_write(path, lambda f: f.write(b"new"))
    assert not dead_tmp.exists() and live_tmp.exists() and other_host.exists()
