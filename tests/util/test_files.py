"""Files are replaced whole or left as they were."""

from __future__ import annotations

import os

import pytest

from jupyter_securehpc.util import files


def test_atomic_write_sets_mode_from_the_start(tmp_path):
    target = tmp_path / "secret.json"
    files.atomic_write(target, "{}", mode=0o600)
    assert target.read_text() == "{}"
    assert target.stat().st_mode & 0o777 == 0o600


def test_failed_write_keeps_the_old_content_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        files.atomic_write(target, "new" * 1000)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_if_changed(tmp_path):
    target = tmp_path / "slurm.conf"
    assert files.write_if_changed(target, "a\n") is True
    assert files.write_if_changed(target, "a\n") is False
    assert files.write_if_changed(target, "b\n") is True
    assert target.read_text() == "b\n"
