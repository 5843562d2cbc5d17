"""Columnar store benchmark: DuckDB queries of :class:`ColumnarStore` against a pyarrow.dataset peer.

    python benchmarks/bench_columnar.py [--rows N] [--days D] [--sensors S] [--repeat R] [--dir PATH]

Generates ``--rows`` synthetic flows (``FLOW_SCHEMA`` plus ``service``; default 3,000,000) spread over
``--days`` days (default 30) and ``--sensors`` sensors, adds them to a fresh store (one batch per sensor
and day, as sensors push them), then times, best of ``--repeat`` runs, in the same process on the same
files:

1. a one-day query: the flows of one device on one day (``ColumnarStore.flows``, first 1,000 rows);
2. a 30-day aggregate: flows, packets and bytes by service over every day (``ColumnarStore.flow_summary``);

and the same two questions answered by ``pyarrow.dataset`` over the same hive-partitioned directory
(partition filter on ``day`` plus a row filter; ``Table.group_by`` for the aggregate). Prints
seconds and the ratio peer / store (above 1: the store is faster). A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fieldward.decode.flows import FLOW_SCHEMA
from fieldward.store.columnar import ColumnarStore

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SERVICES = np.array(["modbus", "s7comm", "enip", "dnp3", "dns", "ntp", "mqtt", None], dtype=object)


def synthetic_flows(rows: int, day: int, seed: int) -> pa.Table:
    """``rows`` flows starting on day ``day`` (from START), 250 hosts, plausible counters."""
    rng = np.random.default_rng(seed)
    start_ns = int(START.timestamp()) * 10**9 + day * 86_400 * 10**9
    first = np.sort(start_ns + rng.integers(0, 86_400 * 10**9, rows))
    duration = rng.integers(0, 1800 * 10**9, rows)
    hosts = np.array([f"10.{i // 100}.{i % 100 // 10}.{i % 10 + 1}" for i in range(250)], dtype=object)
    orig, resp = rng.integers(0, 250, rows), rng.integers(0, 250, rows)
    pkts = rng.integers(1, 2000, (2, rows))
    columns: dict[str, pa.Array] = {
        "flow_id": pa.array(np.arange(rows, dtype=np.int64) + day * 10**8),
        "community_id": pa.array(np.full(rows, "1:AAAAAAAAAAAAAAAAAAAAAAAAAAA=", dtype=object)),
        "first_ts": pa.array(first, pa.timestamp("ns", "UTC")),
        "last_ts": pa.array(first + duration, pa.timestamp("ns", "UTC")),
        "duration_s": pa.array(duration / 1e9),
        "vlan": pa.array(rng.integers(0, 4, rows).astype(np.uint16)),
        "vlan_inner": pa.array(np.zeros(rows, np.uint16)),
        "ip_version": pa.array(np.full(rows, 4, np.uint8)),
        "proto": pa.array(np.where(rng.random(rows) < 0.7, "tcp", "udp").astype(object)),
        "ip_proto": pa.array(np.full(rows, 6, np.uint8)),
        "orig_ip": pa.array(hosts[orig]),
        "resp_ip": pa.array(hosts[resp]),
        "orig_port": pa.array(rng.integers(1024, 65535, rows).astype(np.uint16)),
        "resp_port": pa.array(rng.choice([502, 102, 44818, 20000, 53, 123, 1883], rows).astype(np.uint16)),
        "orig_mac": pa.array(np.full(rows, "02:00:00:00:00:01", dtype=object)),
        "resp_mac": pa.array(np.full(rows, "02:00:00:00:00:02", dtype=object)),
        "orig_pkts": pa.array(pkts[0]),
        "resp_pkts": pa.array(pkts[1]),
        "orig_bytes": pa.array(pkts[0] * 90),
        "resp_bytes": pa.array(pkts[1] * 110),
    }
    for name in ("orig_wire_bytes", "resp_wire_bytes", "orig_payload_bytes", "resp_payload_bytes"):
        columns[name] = pa.array(pkts[0 if name.startswith("orig") else 1] * 60)
    columns["orig_tcp_flags"] = pa.array(np.full(rows, 0x1B, np.uint16))
    columns["resp_tcp_flags"] = pa.array(np.full(rows, 0x1B, np.uint16))
    columns["history"] = pa.array(np.full(rows, "ShADadFf", dtype=object))
    columns["conn_state"] = pa.array(np.full(rows, "SF", dtype=object))
    columns["end_reason"] = pa.array(np.full(rows, "tcp_close", dtype=object))
    arrays = [columns[name].cast(FLOW_SCHEMA.field(name).type) for name in FLOW_SCHEMA.names]
    table = pa.Table.from_arrays(arrays, schema=FLOW_SCHEMA)
    return table.append_column(
        "service", pa.array(SERVICES[rng.integers(0, len(SERVICES), rows)], pa.string())
    )


def best(repeat: int, call: Callable[[], pa.Table]) -> tuple[float, pa.Table]:
    timings, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = call()
        timings.append(time.perf_counter() - began)
    assert result is not None
    return min(timings), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sensors", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to build the store (default: a temp dir)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fw-bench-columnar-", dir=args.dir))
    try:
        store = ColumnarStore(workdir / "store", retention_days=None)
        per_batch = args.rows // (args.days * args.sensors)
        began = time.perf_counter()
        for day in range(args.days):
            for sensor in range(args.sensors):
                table = synthetic_flows(per_batch, day, seed=day * 100 + sensor)
                store.add_table("flows", None, table, f"sensor-{sensor}", f"day{day}")
        added = time.perf_counter() - began
        total = per_batch * args.days * args.sensors
        size = sum(path.stat().st_size for path in store.root.rglob("*.parquet"))
        print(f"store: {total:,} flows, {args.days} days, {args.sensors} sensors, {size / 1e6:.0f} MB zstd")
        print(f"  add_table (generation included): {added:.1f} s, {total / added:,.0f} rows/s")

        day = args.days // 2
        since = START + dt.timedelta(days=day)
        until = since + dt.timedelta(days=1)
        device = "10.1.2.3"
        dataset = ds.dataset(
            store.root / "flows",
            format="parquet",
            partitioning=ds.partitioning(
                pa.schema([("day", pa.date32()), ("sensor", pa.string())]), flavor="hive"
            ),
        )

        def store_day() -> pa.Table:
            return store.flows(device_ips=[device], since=since, until=until, limit=1000)

        def peer_day() -> pa.Table:
            ts = pa.scalar(since, pa.timestamp("ns", "UTC"))
            te = pa.scalar(until, pa.timestamp("ns", "UTC"))
            expression = (
                (ds.field("day") == pa.scalar(since.date(), pa.date32()))
                & (ds.field("first_ts") >= ts)
                & (ds.field("first_ts") < te)
                & ((ds.field("orig_ip") == device) | (ds.field("resp_ip") == device))
            )
            table = dataset.to_table(filter=expression)
            return table.sort_by([("first_ts", "ascending")]).slice(0, 1000)

        def store_month() -> pa.Table:
            return store.flow_summary(["service"], limit=100)

        def peer_month() -> pa.Table:
            table = dataset.to_table(
                columns=["service", "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes"]
            )
            table = table.append_column("packets", pc.add(table["orig_pkts"], table["resp_pkts"]))
            table = table.append_column("bytes", pc.add(table["orig_bytes"], table["resp_bytes"]))
            grouped = table.group_by("service").aggregate(
                [([], "count_all"), ("packets", "sum"), ("bytes", "sum")]
            )
            return grouped.sort_by([("bytes_sum", "descending")])

        for label, ours, peer in (
            ("one-day query (1 device, 1 day)", store_day, peer_day),
            (f"{args.days}-day aggregate by service", store_month, peer_month),
        ):
            ours_s, ours_result = best(args.repeat, ours)
            peer_s, peer_result = best(args.repeat, peer)
            assert ours_result.num_rows == peer_result.num_rows, (ours_result.num_rows, peer_result.num_rows)
            print(
                f"{label}: store {ours_s * 1e3:.1f} ms, pyarrow.dataset {peer_s * 1e3:.1f} ms, "
                f"ratio peer/store {peer_s / ours_s:.2f} ({ours_result.num_rows} rows)"
            )
        # The aggregates agree.
        ours_total = pc.sum(store_month().column("bytes")).as_py()
        peer_total = pc.sum(peer_month().column("bytes_sum")).as_py()
        assert ours_total == peer_total, (ours_total, peer_total)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
