"""Fixtures of the live-sensor tests: a veth lab in network namespaces made by the test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.sensor.lab import VethLab, lab_unavailable

_counter = itertools.count()


@pytest.fixture(scope="session")
def lab_ok() -> None:
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(f"live-capture tests: {reason}")


@pytest.fixture
def lab(lab_ok: None) -> Iterator[VethLab]:
    """A fresh pair of namespaces and a veth pair (removed after the test)."""
    with VethLab(tag=f"{os.getpid() % 10000}x{next(_counter)}") as made:
        yield made
