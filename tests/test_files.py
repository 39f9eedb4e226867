"""Saved files: the user's umask, fsync before the rename, orphan cleanup, clear errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from sklearn_ml3 import LearnedLoss
from sklearn_ml3._utils import atomic_write


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    path = LearnedLoss(hidden_layer_sizes=(3,), random_state=0).save(tmp_path / "a.ml3")
    assert mode(path) == expected


def test_resaving_keeps_the_files_mode(tmp_path, umask):
    path = LearnedLoss(hidden_layer_sizes=(3,), random_state=0).save(tmp_path / "a.ml3")
    path.chmod(0o640)
    LearnedLoss(hidden_layer_sizes=(3,), random_state=1).save(path)
    assert mode(path) == 0o640


def test_data_is_synced_before_the_rename(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), replace(a, b))[1])
    LearnedLoss(hidden_layer_sizes=(3,), random_state=0).save(tmp_path / "a.ml3")
    assert events == ["fsync", "replace", "fsync"]  # file, rename, then the folder


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_a_later_save_removes_orphans_of_killed_saves(tmp_path):
    target = tmp_path / "a.ml3"
    orphan = tmp_path / f".a.ml3.{dead_pid()}.x1y2.tmp"  # as a SIGKILL mid-save leaves it
    orphan.write_bytes(b"partial")
    live = tmp_path / f".a.ml3.{os.getppid()}.x1y2.tmp"  # a save still running elsewhere
    live.write_bytes(b"partial")
    other = tmp_path / f".b.ml3.{dead_pid()}.x1y2.tmp"  # another target's: not ours to touch
    other.write_bytes(b"partial")
    LearnedLoss(hidden_layer_sizes=(3,), random_state=0).save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.ml3", live.name, other.name])


def test_errors_name_the_target(tmp_path):
    target = tmp_path / "missing" / "a.ml3"
    with pytest.raises(FileNotFoundError, match=f"cannot write {target}: the folder"):
        LearnedLoss(hidden_layer_sizes=(3,), random_state=0).save(target)

    def fail(tmp):
        raise PermissionError(13, "Permission denied", tmp)

    with pytest.raises(PermissionError, match=f"cannot write {tmp_path / 'b'}: Permission"):
        atomic_write(tmp_path / "b", fail)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone
