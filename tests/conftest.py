"""Shared fixtures: the golden corpus in ../shared and the tshark reference dissector."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared/corpus beside the repository (as in CI); FIELDWARD_CORPUS points elsewhere.
CORPUS = Path(os.environ.get("FIELDWARD_CORPUS") or REPO.parent / "shared" / "corpus")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared corpus of real captures (../shared/corpus); skips when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS} (it sits beside the repository in CI)")
    return CORPUS


@pytest.fixture(scope="session")
def tshark() -> str:
    """Path of the tshark binary; skips when Wireshark's tshark is not installed."""
    path = shutil.which("tshark")
    if path is None:
        pytest.skip("tshark is not installed (Debian package 'tshark'); .ci/run installs it")
    return path


@pytest.fixture(scope="session")
def capinfos() -> str:
    path = shutil.which("capinfos")
    if path is None:
        pytest.skip("capinfos is not installed (Debian package 'wireshark-common'); .ci/run installs it")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_data_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep FieldWard's default database out of the user's home: every test (and every fieldward
    process a test starts) uses a data folder of the test session, unless a test sets its own."""
    os.environ["FIELDWARD_HOME"] = str(tmp_path_factory.mktemp("fieldward-home"))
    os.environ.pop("FIELDWARD_DATABASE_URL", None)
