"""Merging the workers' folders of one segment into one analysis folder.

Each packet is analysed by exactly one worker and each flow lives in one worker, so flows, events
and packet counts simply add up; flow ids are made unique across workers (worker ``k``'s ids get
``k << FLOW_ID_SHIFT`` added, in flows, events and alert evidence alike). ``communications.parquet``
is grouped again by its key (counters summed, times widened). Devices are merged by id (addresses,
protocols and facts united; for each identifying attribute the value with the higher confidence
wins); role peer counts and service client counts are counted again over the merged communications
(distinct devices, not a sum or a maximum of the workers' counts). Alerts with the same id (same
type, source, destination, protocol) are combined. With one worker the folder is moved as it is:
byte for byte what ``fieldward analyze`` would write.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fieldward.detect.model import Alert
from fieldward.inventory.model import ATTRIBUTES

MAX_TRIGGERS = Alert.MAX_TRIGGERS
ADDRESSES_FILE = "addresses.json"
"""Written in a worker's folder when there are several workers: its distinct IP and MAC addresses,
united here into the segment's ``hosts`` and ``mac_addresses``."""

__all__ = ["FLOW_ID_SHIFT", "merge_communications", "merge_devices", "merge_segment"]

FLOW_ID_SHIFT = 48
"""Worker ``k``'s flow ids become ``id + (k << FLOW_ID_SHIFT)`` in a merged segment (one worker never
numbers 2**48 flows in a segment)."""
ROLE_NAMES: dict[str, tuple[str, str]] = {"modbus": ("master", "slave"), "dnp3": ("master", "outstation")}
"""Role names per service (the inventory builder's ``ROLE_NAMES``; others are client and server)."""
COMMUNICATION_KEYS = ("src_device", "dst_device", "transport", "dst_port", "service")

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
    return [merged[k] for k in sorted(merged, key=lambda k: tuple("" if x is None else x for x in k))]


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
    out["services"] = _merge_keyed(a["services"], b["services"], ("transport", "port", "service"), "clients")
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


def _worker_index(folder: Path) -> int:
    name = folder.name
    return int(name.rsplit("-", 1)[1]) if name.startswith("worker-") and name[7:].isdigit() else 0


def _shift_flow_ids(table: pa.Table, index: int) -> pa.Table:
    """Make worker ``index``'s flow ids unique in the merged segment (negative ids: no flow)."""
    if index == 0 or "flow_id" not in table.column_names:
        return table
    column = table["flow_id"]
    ids = pc.cast(column, pa.int64())
    shifted = pc.if_else(pc.less(ids, 0), ids, pc.add(ids, index << FLOW_ID_SHIFT))
    position = table.column_names.index("flow_id")
    return table.set_column(position, table.field(position), pc.cast(shifted, column.type))


def _concat_parquet(paths: list[Path], target: Path) -> int:
    tables = [_shift_flow_ids(pq.read_table(p), _worker_index(p.parent)) for p in paths if p.is_file()]
    if not tables:
        return 0
    table = pa.concat_tables(tables, promote_options="permissive")
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target, compression="zstd")
    return int(table.num_rows)


def merge_communications(tables: list[pa.Table]) -> pa.Table:
    """The workers' ``communications.parquet`` tables as one: rows of one key (client device, server
    device, transport, port, service) summed, first time the earliest, last time the latest."""
    table = pa.concat_tables(tables, promote_options="permissive")
    sums = [n for n in table.column_names if n not in COMMUNICATION_KEYS and n not in ("first_ts", "last_ts")]
    aggregates = [(n, "sum") for n in sums]
    aggregates += [
        (n, agg) for n, agg in (("first_ts", "min"), ("last_ts", "max")) if n in table.column_names
    ]
    grouped = table.group_by(list(COMMUNICATION_KEYS), use_threads=False).aggregate(aggregates)
    grouped = grouped.rename_columns(
        [n.removesuffix("_sum").removesuffix("_min").removesuffix("_max") for n in grouped.column_names]
    )
    grouped = grouped.select(table.column_names).cast(table.schema)
    return grouped.sort_by(
        [("src_device", "ascending"), ("dst_device", "ascending"), ("dst_port", "ascending")]
    )


_Key = tuple[Any, ...]


def _peer_sets(communications: pa.Table) -> dict[_Key, set[str]]:
    """Distinct peer devices over ``communications`` by the inventory builder's rules: a client role
    for each service a device asked for, a server role and a service for each answered one. Keys:
    ``("role", device, protocol, role)`` and ``("service", device, transport, port, service)``."""
    found: dict[_Key, set[str]] = {}
    if communications.num_rows == 0:
        return found
    columns = ["src_device", "dst_device", "transport", "dst_port", "service", "answered"]
    rows = communications.select(columns)
    for src, dst, transport, port, service, answered in zip(
        *(rows[c].to_pylist() for c in columns), strict=True
    ):
        if service is not None:
            client, server = ROLE_NAMES.get(service, ("client", "server"))
            found.setdefault(("role", src, service, client), set()).add(dst)
            if answered:
                found.setdefault(("role", dst, service, server), set()).add(src)
        if answered and transport in ("tcp", "udp") and port and (port < 49152 or service is not None):
            found.setdefault(("service", dst, transport, port, service), set()).add(src)
    return found


def _counts(devices: list[dict[str, Any]]) -> dict[_Key, int]:
    """Each role's peers and each service's clients as a worker counted them."""
    counts: dict[_Key, int] = {}
    for device in devices:
        for role in device.get("roles", []):
            counts[("role", device["id"], role["protocol"], role["role"])] = int(role["peers"])
        for service in device.get("services", []):
            key = ("service", device["id"], service["transport"], service["port"], service.get("service"))
            counts[key] = int(service["clients"])
    return counts


def _recount(
    devices: list[dict[str, Any]],
    merged: pa.Table,
    workers: list[tuple[list[dict[str, Any]], pa.Table | None]],
) -> None:
    """Role peers and service clients counted again as distinct devices over the merged
    communications. A worker also counts peers at addresses no device was made for (a broadcast
    address), which communications leave out: the most such peers of one worker are added (exact
    when those addresses are the same in every worker or seen by one worker only)."""
    distinct = _peer_sets(merged)
    extra: dict[_Key, int] = {}
    for worker_devices, edges in workers:
        sets = _peer_sets(edges) if edges is not None else {}
        for key, count in _counts(worker_devices).items():
            extra[key] = max(extra.get(key, 0), count - len(sets.get(key, ())))
    for device in devices:
        for role in device.get("roles", []):
            key = ("role", device["id"], role["protocol"], role["role"])
            if key in distinct:
                role["peers"] = len(distinct[key]) + extra.get(key, 0)
        for service in device.get("services", []):
            key = ("service", device["id"], service["transport"], service["port"], service.get("service"))
            if key in distinct:
                service["clients"] = len(distinct[key]) + extra.get(key, 0)


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
            index = _worker_index(folder)
            for trigger in alert.get("evidence") or ():
                if index and int(trigger.get("flow_id", -1)) >= 0:
                    trigger["flow_id"] = int(trigger["flow_id"]) + (index << FLOW_ID_SHIFT)
            have = merged.get(alert["id"])
            if have is None:
                merged[alert["id"]] = alert
                continue
            if "count" in alert:
                have["count"] = have.get("count", 0) + alert["count"]
            evidence = [*(have.get("evidence") or ()), *(alert.get("evidence") or ())]
            have["evidence"] = sorted(evidence, key=lambda t: str(t.get("ts")))[:MAX_TRIGGERS]
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


def merge_segment(
    target: Path,
    worker_folders: list[Path],
    meta: dict[str, Any],
    finish: Callable[[Path], None] | None = None,
) -> None:
    """Build the segment folder ``target`` from the workers' folders (moved or merged, then removed).

    ``finish(target)`` runs after the merge and before ``segment.json`` is written (the marker of a
    complete segment): the sensor's cross-flow detection when there are several workers."""
    folders = [f for f in worker_folders if f.is_dir()]
    target.mkdir(parents=True, exist_ok=True)
    if len(folders) == 1 and len(worker_folders) == 1:
        for entry in folders[0].iterdir():
            entry.replace(target / entry.name)
        folders[0].rmdir()
    elif folders:
        _merge_folders(target, folders)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
    if finish is not None:
        finish(target)
    (target / "segment.json").write_text(json.dumps(meta, indent=2) + "\n")


def _merge_folders(target: Path, folders: list[Path]) -> None:
    device_lists: list[list[dict[str, Any]]] = []
    workers: list[tuple[list[dict[str, Any]], pa.Table | None]] = []
    unattributed = 0
    for folder in folders:
        path = folder / "devices.json"
        if path.is_file():
            data = orjson.loads(path.read_bytes())
            device_lists.append(data.get("devices", []))
            unattributed += int(data.get("summary", {}).get("unattributed_evidence", 0))
            comm = folder / "communications.parquet"
            workers.append((device_lists[-1], pq.read_table(comm) if comm.is_file() else None))
    edges = [table for _devices, table in workers if table is not None]
    merged_edges = merge_communications(edges) if edges else None
    if merged_edges is not None:
        pq.write_table(merged_edges, target / "communications.parquet", compression="zstd")
    communications = merged_edges.num_rows if merged_edges is not None else 0
    _concat_parquet([f / "flows.parquet" for f in folders], target / "flows.parquet")
    logs = sorted({p.name for f in folders for p in (f / "events").glob("*.parquet")})
    for name in logs:
        _concat_parquet([f / "events" / name for f in folders], target / "events" / name)
    devices = merge_devices(device_lists)
    if merged_edges is not None:
        _recount(devices, merged_edges, workers)
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
        hosts: set[str] = set()
        macs: set[str] = set()
        for folder in folders:
            path = folder / ADDRESSES_FILE
            if path.is_file():
                found = json.loads(path.read_text())
                hosts.update(found.get("hosts", ()))
                macs.update(found.get("macs", ()))
                path.unlink()
        if hosts or macs:
            summary["hosts"] = len(hosts)
            summary["mac_addresses"] = len(macs)
        else:  # workers that did not list their addresses: the devices' addresses
            summary["hosts"] = len({ip for d in devices for ip in d["ips"]})
        summary["alerts"] = len(alerts)
        summary["alerts_by_severity"] = dict(Counter(str(a.get("severity")) for a in alerts).most_common())
        (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
