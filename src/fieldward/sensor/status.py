"""``OUT/status.json``: what a running sensor writes every second, and what ``sensor status`` reads."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["STALE_AFTER_S", "read_status", "sensor_alive", "write_status"]

STALE_AFTER_S = 10.0
"""A status older than this, from a running process, means the sensor is stuck."""


def write_status(out: Path, status: dict[str, Any]) -> None:
    """Replace ``out/status.json`` atomically (readers never see half a file)."""
    tmp = out / "status.json.tmp"
    try:
        tmp.write_text(json.dumps(status, indent=2, default=str) + "\n")
        tmp.replace(out / "status.json")
    except OSError:
        pass  # a full disk must not stop the capture; the staleness shows in `sensor status`


def read_status(out: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sensor_alive(status: dict[str, Any]) -> bool:
    """The process that wrote ``status`` still runs and wrote it recently."""
    pid = status.get("pid")
    if not isinstance(pid, int) or status.get("state") == "stopped":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # runs as another user: it exists
    return time.time() - float(status.get("updated", 0)) < STALE_AFTER_S
