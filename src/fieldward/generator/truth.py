"""Ground truth of a generated capture: what each simulated device really is.

``plant_truth(config)`` lists, for every device of the plant ``config`` describes, the identity the
generator gave it (MAC, IP, vendor, model, firmware, serial, hostname) with the device type and
Purdue level an analyst would assign. The inventory's precision and recall are measured against it
(``benchmarks/bench_inventory.py``); ``fieldward generate --truth FILE`` writes it as JSON.

Types and levels use the inventory's vocabulary (``fieldward.inventory.model.DeviceType``) but are
stated here, per simulated role, independently of the inventory's inference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fieldward.generator.config import GeneratorConfig
from fieldward.generator.plan import build_plan
from fieldward.generator.plant import Device, Role

ROLE_TRUTH: dict[Role, tuple[str, int]] = {
    Role.HMI: ("hmi", 2),
    Role.EWS: ("engineering_workstation", 2),
    Role.SCADA: ("scada_server", 2),
    Role.HISTORIAN: ("historian", 3),
    Role.DOMAIN_CONTROLLER: ("it_server", 3),
    Role.BROKER: ("ot_server", 3),
    Role.NVR: ("video_recorder", 4),
    Role.PLC_SIEMENS: ("plc", 1),
    Role.PLC_ROCKWELL: ("plc", 1),
    Role.PLC_SCHNEIDER: ("plc", 1),
    Role.PLC_ABB: ("plc", 1),
    Role.GATEWAY: ("field_gateway", 1),
    Role.IO_ADAPTER: ("io_module", 1),
    Role.RTU: ("rtu", 1),
    Role.SENSOR: ("iot_sensor", 0),
    Role.CAMERA: ("ip_camera", 4),
}
"""Device type and Purdue level of each simulated role."""


def _firmware(device: Device) -> str | None:
    if device.s7 is not None:
        major, minor, patch = device.s7[2]
        return f"V{major}.{minor}.{patch}"
    if device.cip is not None:
        major, minor = device.cip.revision
        return f"{major}.{minor}"
    if device.modbus_identity is not None:
        return device.modbus_identity[2]
    return None


def device_truth(device: Device) -> dict[str, Any]:
    kind, level = ROLE_TRUTH[device.role]
    return {
        "mac": ":".join(f"{b:02x}" for b in device.mac),
        "ip": device.ip_text,
        "role": device.role.value,
        "device_type": kind,
        "purdue_level": level,
        "vendor": device.vendor,
        "model": device.s7[1] if device.s7 is not None else device.model,
        "firmware": _firmware(device),
        "serial": device.serial if (device.s7 or device.cip) else None,
        "hostname": device.name,
    }


def plant_truth(config: GeneratorConfig) -> list[dict[str, Any]]:
    """The ground truth of every device of the plant ``config`` generates."""
    return [device_truth(device) for device in build_plan(config).plant.devices]


def write_truth(path: Path, config: GeneratorConfig) -> None:
    payload = {
        "generator": {"devices": config.devices, "minutes": config.minutes, "seed": config.seed},
        "devices": plant_truth(config),
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")


SCORED = ("vendor", "device_type", "purdue_level", "model", "firmware", "serial", "hostname")
"""The attributes :func:`score` measures."""


def _normalise(name: str, value: object) -> str | None:
    """Spelling-insensitive comparison: case, serial prefixes (``0x``, Siemens' ``S C-``), domains."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if name == "serial":
        text = text.removeprefix("s c-").removeprefix("0x").lstrip("0")
    if name == "hostname":
        text = text.split(".")[0]
    if name == "device_type" and text == "unknown":
        return None
    return text or None


def score(truth: list[dict[str, Any]], devices: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Precision and recall per attribute of an inventory (``devices.json`` records) against the
    ground truth, devices matched by MAC. precision = right / reported, recall = right / in truth;
    NaN where nothing was reported (or expected). Row ``devices`` gives the share of truth devices
    found at all (as recall)."""
    by_mac = {d["mac"]: d for d in devices if d.get("mac")}
    out: dict[str, dict[str, float]] = {}
    for name in SCORED:
        reported = right = expected = 0
        for item in truth:
            want = _normalise(name, item.get(name))
            found = by_mac.get(item["mac"])
            got = _normalise(name, found.get(name)) if found is not None else None
            expected += want is not None
            if got is not None and want is not None:
                reported += 1
                right += got == want
        out[name] = {
            "precision": right / reported if reported else float("nan"),
            "recall": right / expected if expected else float("nan"),
            "reported": reported,
            "expected": expected,
        }
    matched = sum(1 for item in truth if item["mac"] in by_mac)
    nan = float("nan")
    out["devices"] = {
        "precision": nan,
        "recall": matched / len(truth) if truth else nan,
        "reported": matched,
        "expected": len(truth),
    }
    return out
