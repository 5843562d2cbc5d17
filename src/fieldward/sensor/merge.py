"""Merging the workers' folders of one segment into one analysis folder.

Each packet is analysed by exactly one worker and each flow lives in one worker, so flows, events
and packet counts simply add up. Devices are merged by id (addresses, protocols, roles, services and
facts united; for each identifying attribute the value with the higher confidence wins); alerts with
the same id (same type, source, destination, protocol) are combined. With one worker the folder is
moved as it is: byte for byte what ``fieldward analyze`` would write.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from fieldward.inventory.model import ATTRIBUTES

__all__ = ["merge_devices", "merge_segment"]

_SUMMED = ("packets", "captured_bytes", "wire_bytes", "flows", "flows_evicted", "weird_total")
_COUNTED = (
    "protocols_by_bytes",
    "protocols_by_packets",
    "application_protocols_by_flows",
    "events",
    "link_types",
    "weird",
    "alerts_suppressed",
)


def _merge_keyed(
    a: list[dict[str, Any]], b: list[dict[str, Any]], keys: tuple[str, ...], top: str
) -> list[dict[str, Any]]:
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in [*a, *b]:
        key = tuple(item.get(k) for k in keys)
        have = merged.get(key)
        if have is None or (item.get(top) or 0) > (have.get(top) or 0):
            merged[key] = item
    return [merged[k] for k in sorted(merged, key=lambda k: tuple(str(x) for x in k))]


def _merge_device(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    out["ips"] = sorted(set(a["ips"]) | set(b["ips"]))
    out["vlans"] = sorted(set(a["vlans"]) | set(b["vlans"]))
    out["local"] = a["local"] or b["local"]
    out["router"] = a["router"] or b["router"]
    firsts = [x for x in (a["first_seen"], b["first_seen"]) if x]
    lasts = [x for x in (a["last_seen"], b["last_seen"]) if x]
    out["first_seen"] = min(firsts) if firsts else None
    out["last_seen"] = max(lasts) if lasts else None
    out["packets"] = a["packets"] + b["packets"]
    confidence = dict(a.get("confidence", {}))
    attributes = dict(a.get("attributes", {}))
    for name in ATTRIBUTES:
        mine, theirs = a.get("confidence", {}).get(name), b.get("confidence", {}).get(name)
        if theirs is not None and (mine is None or theirs > mine):
            out[name] = b.get(name)
            confidence[name] = theirs
            if name in b.get("attributes", {}):
                attributes[name] = b["attributes"][name]
    for name, data in b.get("attributes", {}).items():
        attributes.setdefault(name, data)
    out["confidence"] = confidence
    out["attributes"] = dict(sorted(attributes.items()))
    out["protocols"] = sorted(set(a["protocols"]) | set(b["protocols"]))
    out["roles"] = _merge_keyed(a["roles"], b["roles"], ("protocol", "role"), "peers")
    out["services"] = _merge_keyed(a["services"], b["services"], ("transport", "port"), "clients")
    history: dict[str, dict[str, Any]] = {}
    for entry in [*a["address_history"], *b["address_history"]]:
        have = history.get(entry["ip"])
        if have is None:
            history[entry["ip"]] = dict(entry)
        else:
            have["first_seen"] = min(x for x in (have["first_seen"], entry["first_seen"]) if x)
            have["last_seen"] = max(x for x in (have["last_seen"], entry["last_seen"]) if x)
    out["address_history"] = sorted(history.values(), key=lambda e: (e["first_seen"] or "", e["ip"]))
    facts: dict[str, set[str]] = {}
    for source in (a.get("facts", {}), b.get("facts", {})):
        for name, values in source.items():
            facts.setdefault(name, set()).update(values)
    out["facts"] = {name: sorted(values)[:20] for name, values in sorted(facts.items())}
    return out


def merge_devices(lists: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Device records (``devices.json`` entries) of several workers, merged by id."""
    merged: dict[str, dict[str, Any]] = {}
    for devices in lists:
        for device in devices:
            have = merged.get(device["id"])
            merged[device["id"]] = device if have is None else _merge_device(have, device)
    return sorted(merged.values(), key=lambda d: (not d["local"], d["id"]))


def _device_summary(devices: list[dict[str, Any]], communications: int, unattributed: int) -> dict[str, Any]:
    kinds = Counter(str(d.get("device_type") or "unknown") for d in devices)
    levels = Counter(str(d.get("purdue_level")) for d in devices)
    return {
        "devices": len(devices),
        "local": sum(1 for d in devices if d["local"]),
        "by_type": dict(kinds.most_common()),
        "by_purdue_level": dict(sorted(levels.items())),
        "communications": communications,
        "unattributed_evidence": unattributed,
    }


def _concat_parquet(paths: list[Path], target: Path) -> int:
    tables = [pq.read_table(p) for p in paths if p.is_file()]
    if not tables:
        return 0
    table = pa.concat_tables(tables, promote_options="permissive")
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target, compression="zstd")
    return int(table.num_rows)


def _merge_alerts(folders: list[Path], target: Path) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for folder in folders:
        path = folder / "alerts.jsonl"
        if not path.is_file():
            continue
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            alert = orjson.loads(line)
            have = merged.get(alert["id"])
            if have is None:
                merged[alert["id"]] = alert
                continue
            if "count" in alert:
                have["count"] = have.get("count", 0) + alert["count"]
            for key, pick in (("first_ts", min), ("last_ts", max)):
                if alert.get(key) and have.get(key):
                    have[key] = pick(have[key], alert[key])
    alerts = sorted(merged.values(), key=lambda a: (str(a.get("first_ts")), a.get("type", ""), a["id"]))
    with target.open("wb") as handle:
        for alert in alerts:
            handle.write(orjson.dumps(alert) + b"\n")
    return alerts


def _merge_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = dict(summaries[0])
    for key in _SUMMED:
        out[key] = sum(int(s.get(key) or 0) for s in summaries)
    for key in _COUNTED:
        total: Counter[str] = Counter()
        for s in summaries:
            total.update({k: int(v) for k, v in (s.get(key) or {}).items()})
        out[key] = dict(total.most_common())
    firsts = [s["first_ts"] for s in summaries if s.get("first_ts")]
    lasts = [s["last_ts"] for s in summaries if s.get("last_ts")]
    out["first_ts"] = min(firsts) if firsts else None
    out["last_ts"] = max(lasts) if lasts else None
    out["elapsed_s"] = max(float(s.get("elapsed_s") or 0) for s in summaries)
    return out


def merge_segment(target: Path, worker_folders: list[Path], meta: dict[str, Any]) -> None:
    """Build the segment folder ``target`` from the workers' folders (moved or merged, then removed)."""
    folders = [f for f in worker_folders if f.is_dir()]
    target.mkdir(parents=True, exist_ok=True)
    if len(folders) == 1:
        for entry in folders[0].iterdir():
            entry.replace(target / entry.name)
        folders[0].rmdir()
    elif folders:
        _merge_folders(target, folders)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    (target / "segment.json").write_text(json.dumps(meta, indent=2) + "\n")


def _merge_folders(target: Path, folders: list[Path]) -> None:
    device_lists: list[list[dict[str, Any]]] = []
    unattributed = 0
    for folder in folders:
        path = folder / "devices.json"
        if path.is_file():
            data = orjson.loads(path.read_bytes())
            device_lists.append(data.get("devices", []))
            unattributed += int(data.get("summary", {}).get("unattributed_evidence", 0))
    communications = _concat_parquet(
        [f / "communications.parquet" for f in folders], target / "communications.parquet"
    )
    _concat_parquet([f / "flows.parquet" for f in folders], target / "flows.parquet")
    logs = sorted({p.name for f in folders for p in (f / "events").glob("*.parquet")})
    for name in logs:
        _concat_parquet([f / "events" / name for f in folders], target / "events" / name)
    devices = merge_devices(device_lists)
    if device_lists:
        with (target / "devices.json").open("wb") as handle:
            summary = _device_summary(devices, communications, unattributed)
            handle.write(b'{"summary": ' + orjson.dumps(summary) + b',\n"devices": [\n')
            handle.write(b",\n".join(orjson.dumps(d) for d in devices))
            handle.write(b"\n]}\n")
    alerts = _merge_alerts(folders, target / "alerts.jsonl")
    for folder in folders:
        evidence = folder / "evidence"
        if evidence.is_dir():
            (target / "evidence").mkdir(exist_ok=True)
            for pcap in evidence.iterdir():
                pcap.replace(target / "evidence" / pcap.name)
    summaries = [
        json.loads((f / "summary.json").read_text()) for f in folders if (f / "summary.json").is_file()
    ]
    if summaries:
        summary = _merge_summaries(summaries)
        summary["devices"] = len(devices)
        summary["hosts"] = len({ip for d in devices for ip in d["ips"]})
        summary["alerts"] = len(alerts)
        summary["alerts_by_severity"] = dict(Counter(str(a.get("severity")) for a in alerts).most_common())
        (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
