"""What must agree between a live sensor's segment folder and an offline ``analyze`` folder.

Capture times differ (the kernel stamps replayed packets with the time they arrive), so time fields
are left out; every count, address, identity, protocol and alert must match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

SUMMARY_KEYS = (
    "packets",
    "captured_bytes",
    "flows",
    "hosts",
    "mac_addresses",
    "protocols_by_bytes",
    "protocols_by_packets",
    "application_protocols_by_flows",
    "events",
    "link_types",
    "weird",
    "devices",
    "alerts",
    "alerts_by_severity",
)
DEVICE_TIME_FIELDS = ("first_seen", "last_seen", "address_history", "attributes")


def _device(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in DEVICE_TIME_FIELDS}


def results(folder: Path, *, exact_devices: bool = True) -> dict[str, Any]:
    summary = json.loads((folder / "summary.json").read_text())
    devices = json.loads((folder / "devices.json").read_text())["devices"]
    alerts = [json.loads(line) for line in (folder / "alerts.jsonl").read_text().splitlines() if line.strip()]
    events = {p.stem: pq.read_metadata(p).num_rows for p in sorted((folder / "events").glob("*.parquet"))}
    return {
        "summary": {k: summary.get(k) for k in SUMMARY_KEYS},
        "devices": sorted(
            (
                _device(d) if exact_devices else {"id": d["id"], "ips": d["ips"], "mac": d["mac"]}
                for d in devices
            ),
            key=lambda d: str(d["id"]),
        ),
        "alerts": sorted(
            (
                a["type"],
                a["src"],
                a["dst"],
                a["protocol"],
                a["count"],
                a.get("src_device"),
                a.get("dst_device"),
                json.dumps(a.get("details"), sort_keys=True),
            )
            for a in alerts
        ),
        "event_rows": events,
    }
