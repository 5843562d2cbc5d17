"""Analyst-set importance of devices (``DIR/assets.json``), the one input of the risk model no sensor can see.

Traffic tells FieldWard that a device is a PLC at Purdue level 1; only the plant knows that this PLC
runs the boiler's burner management while its twin runs a car wash. The analyst says so with an
importance per device (``critical``, ``high``, ``normal``, ``low``); the risk model
(:mod:`fieldward.assess.risk`) multiplies the device's criticality by it. Devices not listed are
``normal``.

The file sits next to ``devices.json`` in the analysis folder::

    {"format": 1, "devices": {"mac:00:1b:1b:30:89:24": "critical", "mac:3c:d9:2b:a8:63:8b": "low"}}

It is written atomically (a temporary file renamed over the old one). Every mistake (an unknown
device, an unknown importance, a corrupt file) is an :class:`ImportanceError` with one clear sentence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from fieldward.errors import FieldWardError
from fieldward.files import atomic_write

__all__ = [
    "ASSETS_FILE",
    "DEVICES_FILE",
    "Importance",
    "ImportanceError",
    "clear_importance",
    "load_importance",
    "resolve_device",
    "save_importance",
    "set_importance",
]

ASSETS_FILE = "assets.json"
DEVICES_FILE = "devices.json"
FORMAT_VERSION = 1


class Importance(StrEnum):
    """How much a device matters to the process, as the analyst judges it."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @classmethod
    def parse(cls, value: str | Importance) -> Importance:
        """``value`` as an importance (case-insensitive); ImportanceError for anything else."""
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            choices = ", ".join(level.value for level in cls)
            raise ImportanceError(f"unknown importance {value!r} (one of {choices})") from None


class ImportanceError(FieldWardError):
    """An importance that cannot be read or set (unknown device or level, corrupt assets.json)."""


def load_importance(out_dir: Path) -> dict[str, Importance]:
    """The importance of every device listed in ``out_dir/assets.json`` (empty when there is no file)."""
    path = out_dir / ASSETS_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ImportanceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ImportanceError(f"{path} is not JSON ({exc}); repair it or remove it") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise ImportanceError(f"{path} is not a FieldWard assets file (format {FORMAT_VERSION} expected)")
    devices = data.get("devices", {})
    if not isinstance(devices, dict):
        raise ImportanceError(f"{path}: 'devices' must be an object of device id -> importance")
    result: dict[str, Importance] = {}
    for device_id, level in devices.items():
        if not isinstance(level, str):
            raise ImportanceError(f"{path}: the importance of {device_id!r} must be a string")
        try:
            result[str(device_id)] = Importance.parse(level)
        except ImportanceError as exc:
            raise ImportanceError(f"{path}: device {device_id!r}: {exc}") from None
    return result


def save_importance(out_dir: Path, importance: Mapping[str, Importance | str]) -> Path:
    """Write ``importance`` to ``out_dir/assets.json`` atomically (``normal`` entries are dropped)."""
    levels = {str(k): Importance.parse(v) for k, v in importance.items()}
    payload = {
        "format": FORMAT_VERSION,
        "devices": {k: v.value for k, v in sorted(levels.items()) if v is not Importance.NORMAL},
    }
    path = out_dir / ASSETS_FILE
    data = (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode("utf-8")
    try:
        atomic_write(path, data, prefix=".assets-")
    except OSError as exc:
        raise ImportanceError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def set_importance(out_dir: Path, device: str, level: Importance | str) -> tuple[str, dict[str, Importance]]:
    """Set the importance of ``device`` (an id, or an IP address or host name naming one device).

    Returns the device id it resolved to and the whole mapping as saved. ImportanceError when the
    device is not in ``out_dir/devices.json`` or the level is not an importance.
    """
    wanted = Importance.parse(level)
    device_id = resolve_device(out_dir, device)
    levels = load_importance(out_dir)
    levels[device_id] = wanted
    save_importance(out_dir, levels)
    return device_id, {k: v for k, v in levels.items() if v is not Importance.NORMAL}


def clear_importance(out_dir: Path, device: str) -> str:
    """Return ``device`` to ``normal`` importance; the resolved device id."""
    device_id = resolve_device(out_dir, device)
    levels = load_importance(out_dir)
    levels.pop(device_id, None)
    save_importance(out_dir, levels)
    return device_id


def resolve_device(out_dir: Path, device: str) -> str:
    """The id of the device of ``out_dir/devices.json`` that ``device`` names: its id, or an IP
    address or host name that exactly one device has."""
    records = _device_records(out_dir)
    wanted = device.strip()
    if any(record.get("id") == wanted for record in records):
        return wanted
    lowered = wanted.lower()
    matches = sorted(
        {
            str(record["id"])
            for record in records
            if lowered in {str(ip).lower() for ip in _list(record.get("ips"))}
            or (isinstance(record.get("hostname"), str) and record["hostname"].lower() == lowered)
        }
    )
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ImportanceError(f"{device!r} names {len(matches)} devices ({', '.join(matches)}): give the id")
    raise ImportanceError(
        f"unknown device {device!r}: not an id, IP address or host name in {out_dir / DEVICES_FILE}"
    )


def _device_records(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / DEVICES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportanceError(
            f"{path} does not exist: run `fieldward analyze` into {out_dir} first"
        ) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ImportanceError(f"cannot read the inventory {path}: {exc}") from exc
    devices = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(devices, list):
        raise ImportanceError(f"{path} is not a FieldWard inventory (no 'devices' list)")
    return [record for record in devices if isinstance(record, dict) and isinstance(record.get("id"), str)]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
