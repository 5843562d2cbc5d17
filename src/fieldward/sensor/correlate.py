"""Cross-flow detection of a multi-worker sensor, run in the main process over a merged segment.

With several capture workers each flow lives in one worker, so the detectors whose alerts come from
one flow (:attr:`~fieldward.detect.engine.Detector.per_flow`, e.g. OT operations) run in the workers
and alert live. The detectors that correlate across flows or hosts (scans and sweeps, brute force,
exception storms, the learned baseline, the anomaly models) would see only their worker's share
there, so they run here instead, once per segment, over the merged ``flows.parquet`` and
``events/*.parquet``: the same inputs one worker would have had, replayed in time order in slices
of :data:`SLICE_NS`, each flow delivered when the flow table would have ended it (its close, its idle
or active timeout, or the segment's end). Their learned state is kept across segments in
``OUT/state/correlator.baseline.json``, as a single worker keeps its own.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fieldward.decode.flows import FlowConfig
from fieldward.detect.engine import DetectionContext, DetectionEngine, select_detectors
from fieldward.detect.evidence import EvidenceTarget, write_evidence
from fieldward.detect.knowledge import Knowledge
from fieldward.detect.model import Alert
from fieldward.detect.settings import DetectionSettings
from fieldward.protocols.base import Event, ProtocolWeird
from fieldward.protocols.registry import Registry
from fieldward.weird import WeirdLog

__all__ = ["SLICE_NS", "Correlation", "correlate_segment", "event_types_by_log"]

SLICE_NS = 1_000_000_000
"""Replay slice (1 s): within one slice the events of every log come first, in time order, then the
flows ended in it, as in a worker's batch. Far shorter than every detector window (ARP scans 10 s,
anomaly bins 10 s, storms 60 s); far fewer detector calls than 100 ms slices (each call has a fixed
Arrow cost: 100 ms slices made the correlation of a sparse capture cost as much as its analysis)."""


@dataclass
class Correlation:
    alerts: list[Alert]
    """The alerts the cross-flow detectors raised over the segment."""
    suppressed: dict[str, int]
    weird: dict[str, int]


def event_types_by_log(plugins: bool = True) -> dict[str, type[Event]]:
    """Every event type the installed dissectors emit, by log name."""
    found: dict[str, type[Event]] = {ProtocolWeird.log: ProtocolWeird}
    for registered in Registry.default(plugins=plugins):
        for event_type in registered.dissector.event_types:
            found.setdefault(event_type.log, event_type)
    return found


def _ns(column: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.asarray(pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _flow_delivery(flows: pa.Table, config: FlowConfig) -> np.ndarray[Any, np.dtype[np.int64]]:
    """When the flow table would have handed each flow over (int64 ns; max int64: at the end)."""
    first, last = _ns(flows["first_ts"]), _ns(flows["last_ts"])
    reason = np.asarray(flows["end_reason"].to_pylist(), dtype=object)
    proto = np.asarray(flows["proto"].to_pylist(), dtype=object)
    idle = np.where(
        proto == "tcp",
        round(config.tcp_idle_timeout_s * 1e9),
        np.where(
            proto == "udp", round(config.udp_idle_timeout_s * 1e9), round(config.other_idle_timeout_s * 1e9)
        ),
    ).astype(np.int64)
    out = last.copy()
    out[reason == "idle_timeout"] = (last + idle)[reason == "idle_timeout"]
    active = reason == "active_timeout"
    out[active] = first[active] + round(config.active_timeout_s * 1e9)
    out[reason == "end_of_capture"] = np.iinfo(np.int64).max
    return out


def _slices(times: np.ndarray[Any, np.dtype[np.int64]]) -> list[tuple[int, int, int]]:
    """(slice, start row, end row) runs of rows sorted by time."""
    if times.size == 0:
        return []
    keys = np.where(times == np.iinfo(np.int64).max, np.iinfo(np.int64).max, times // SLICE_NS)
    cuts = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [times.size]])
    return [(int(keys[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def correlate_segment(
    folder: Path,
    knowledge: Knowledge,
    *,
    settings: DetectionSettings | None = None,
    flow_config: FlowConfig | None = None,
    plugins: bool = True,
) -> Correlation:
    """Run the cross-flow detectors over the merged segment ``folder`` (flows and events)."""
    weird = WeirdLog()
    context = DetectionContext(settings or DetectionSettings(), knowledge)
    engine = DetectionEngine(select_detectors("correlated", plugins), weird=weird, context=context)
    # (slice, kind, log, event type, rows): within a slice the events (kind 0) before the flows (1)
    work: list[tuple[int, int, str, Any, pa.Table]] = []
    types = event_types_by_log(plugins)
    for path in sorted((folder / "events").glob("*.parquet")):
        event_type = types.get(path.stem)
        if event_type is None or not engine.wants(path.stem):
            continue
        table = pq.read_table(path)
        if table.num_rows == 0:
            continue
        times = _ns(table["ts"])
        order = np.argsort(times, kind="stable")
        table, times = table.take(pa.array(order)), times[order]
        for key, start, end in _slices(times):
            work.append((key, 0, path.stem, event_type, table.slice(start, end - start)))
    flows_path = folder / "flows.parquet"
    if flows_path.is_file():
        flows = pq.read_table(flows_path)
        if flows.num_rows:
            delivery = _flow_delivery(flows, flow_config or FlowConfig())
            order = np.argsort(delivery, kind="stable")
            flows, delivery = flows.take(pa.array(order)), delivery[order]
            for key, start, end in _slices(delivery):
                work.append((key, 1, "", None, flows.slice(start, end - start)))
    work.sort(key=lambda item: (item[0], item[1], item[2]))
    firsts = [int(_ns(t["ts"] if kind == 0 else t["first_ts"]).min()) for _k, kind, _l, _e, t in work]
    if firsts:
        engine.observe_time(min(firsts))  # the first packet: start of a time-based learning period
    for _key, kind, _log, event_type, table in work:
        if kind == 0:
            engine.observe_table(event_type, table)
        else:
            engine.observe_flows(table)
    engine.finish()
    return Correlation(list(engine.alerts), dict(engine.alerts.suppressed), dict(weird.summary()))


def _address_book(devices: Sequence[dict[str, Any]]) -> dict[str, str]:
    book: dict[str, str] = {}
    for device in devices:
        if device.get("mac"):
            book.setdefault(str(device["mac"]), str(device["id"]))
        for ip in device.get("ips", ()):
            book.setdefault(str(ip), str(device["id"]))
    return book


def apply_correlation(folder: Path, result: Correlation, captures: Sequence[Path]) -> list[dict[str, Any]]:
    """Add the correlated alerts to the segment ``folder``: ``alerts.jsonl`` (every alert attributed
    to the merged devices), their evidence captures cut from ``captures`` (the workers' evidence ring
    files), ``summary.json``. Returns the new alert records."""
    devices_path = folder / "devices.json"
    devices = orjson.loads(devices_path.read_bytes()).get("devices", []) if devices_path.is_file() else []
    book = _address_book(devices)
    alerts_path = folder / "alerts.jsonl"
    records = (
        [orjson.loads(line) for line in alerts_path.read_bytes().splitlines() if line.strip()]
        if alerts_path.is_file()
        else []
    )
    fresh = [alert.to_json() for alert in result.alerts]
    have = {r["id"] for r in records}
    records += [r for r in fresh if r["id"] not in have]
    for record in records:
        record["src_device"] = book.get(str(record.get("src")))
        record["dst_device"] = book.get(str(record.get("dst")))
    records.sort(key=lambda a: (str(a.get("first_ts")), str(a.get("type")), str(a["id"])))
    tmp = alerts_path.with_name("alerts.jsonl.tmp")
    tmp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    tmp.replace(alerts_path)
    if records:
        write_evidence(folder, [EvidenceTarget.of_json(r) for r in records], list(captures))
    summary_path = folder / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        summary["alerts"] = len(records)
        summary["alerts_by_severity"] = dict(Counter(str(r.get("severity")) for r in records).most_common())
        suppressed = Counter({k: int(v) for k, v in (summary.get("alerts_suppressed") or {}).items()})
        suppressed.update(result.suppressed)
        summary["alerts_suppressed"] = dict(sorted(suppressed.items()))
        if result.weird:
            weird = Counter({k: int(v) for k, v in (summary.get("weird") or {}).items()})
            weird.update(result.weird)
            summary["weird"] = dict(weird.most_common())
            summary["weird_total"] = sum(weird.values())
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return [r for r in records if r["id"] in {f["id"] for f in fresh}]
