"""fieldward.files.atomic_write: all or nothing, permissions set, no temporary file left behind."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from fieldward.files import atomic_write


def test_atomic_write_replaces_the_file_with_the_given_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    atomic_write(target, b"new contents", mode=0o640, prefix=".state-")
    assert target.read_bytes() == b"new contents"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_new_file_is_private_by_default(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    atomic_write(target, b"secret")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    not_bytes: Any = "text, not bytes"
    with pytest.raises(TypeError):
        atomic_write(target, not_bytes)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_missing_folder_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "file", b"x")
