"""The columnar store on the real demo folder: two sensors over two days (the second day a copy of the
demo with every timestamp shifted by one day). Queries are checked against the same Parquet files read
directly with pyarrow; also idempotence, retention, partition pruning, schema drift, hostile input and
the empty store."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fieldward.cli import app
from fieldward.store.columnar import ColumnarStore, ColumnarStoreError, sensor_key

DAY = dt.timedelta(days=1)
SENSORS = ("plant-a", "plant-b")


def _shift(folder: Path, target: Path, by: dt.timedelta) -> Path:
    """A copy of the analysis folder's flows and events with every timestamp column moved by ``by``."""
    (target / "events").mkdir(parents=True)
    sources = [folder / "flows.parquet", *sorted((folder / "events").glob("*.parquet"))]
    for source in sources:
        table = pq.read_table(source)
        for index, column in enumerate(table.schema):
            if pa.types.is_timestamp(column.type):
                shifted = pc.add(table.column(index), pa.scalar(by, pa.duration("ns")))
                table = table.set_column(index, column.name, shifted.cast(column.type))
        pq.write_table(table, target / source.relative_to(folder))
    return target


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo analysis folder (``fieldward demo``), generated once for this module."""
    out = tmp_path_factory.mktemp("columnar-demo")
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (out / "sample-plant.pcap").unlink(missing_ok=True)
    return out


@pytest.fixture(scope="module")
def day2(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _shift(demo, tmp_path_factory.mktemp("columnar-day2") / "out", DAY)


@pytest.fixture(scope="module")
def day1_start(demo: Path) -> dt.datetime:
    first = pc.min(pq.read_table(demo / "flows.parquet").column("first_ts")).as_py()
    return dt.datetime.combine(first.date(), dt.time(), tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def filled(demo: Path, day2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the demo for two sensors on two days (built once; tests copy it to change it)."""
    root = tmp_path_factory.mktemp("columnar-store") / "store"
    store = ColumnarStore(root, retention_days=None)
    for sensor in SENSORS:
        store.add_folder(demo, sensor)
        store.add_folder(day2, sensor)
    return root


@pytest.fixture
def store(filled: Path, tmp_path: Path) -> ColumnarStore:
    root = tmp_path / "store"
    shutil.copytree(filled, root)
    return ColumnarStore(root, retention_days=None)


def _expected(folders: dict[str, list[Path]], name: str) -> pa.Table:
    """``name`` (``flows.parquet`` or ``events/<log>.parquet``) of every folder, with its sensor."""
    tables = []
    for sensor, paths in folders.items():
        for path in paths:
            table = pq.read_table(path / name)
            tables.append(table.append_column("sensor", pa.array([sensor] * len(table), pa.string())))
    return pa.concat_tables(tables, promote_options="permissive")


def _rows(table: pa.Table, keys: list[str]) -> list[dict[str, object]]:
    columns = [name for name in table.column_names if name != "day"]
    return sorted(table.select(columns).to_pylist(), key=lambda row: tuple(str(row[k]) for k in keys))


def test_folders_land_day_partitioned_and_zstd(demo: Path, day2: Path, tmp_path: Path) -> None:
    store = ColumnarStore(tmp_path / "store")
    report = store.add_folder(demo, "plant-a")
    flows = pq.read_table(demo / "flows.parquet")
    logs = sorted(path.stem for path in (demo / "events").glob("*.parquet"))
    assert report.rows["flows"] == len(flows)
    for log in logs:
        assert report.rows[f"events/{log}"] == pq.read_metadata(demo / "events" / f"{log}.parquet").num_rows
    day = pc.min(flows.column("first_ts")).as_py().date()
    assert report.days == {day}
    assert report.files_written == 1 + len(logs)
    assert not report.skipped
    written = store.root / "flows" / f"day={day}" / "sensor=plant-a" / f"{report.batch_id}.parquet"
    assert written.is_file()
    assert pq.ParquetFile(written).metadata.row_group(0).column(0).compression == "ZSTD"
    assert store.event_logs() == logs
    assert not list(store.root.rglob("*.tmp"))

    second = store.add_folder(day2, "plant-a")
    assert second.batch_id != report.batch_id
    assert second.days == {day + DAY}


def test_flows_agree_with_pyarrow(
    store: ColumnarStore, demo: Path, day2: Path, day1_start: dt.datetime
) -> None:
    expected = _expected({sensor: [demo, day2] for sensor in SENSORS}, "flows.parquet")
    everything = store.flows(limit=100_000)
    assert everything.num_rows == expected.num_rows
    keys = ["first_ts", "sensor", "flow_id"]
    assert _rows(everything, keys) == _rows(expected, keys)

    # One day, one device, one protocol.
    modbus = expected.filter(pc.equal(expected.column("service"), "modbus"))
    device = modbus.column("resp_ip")[0].as_py()
    since, until = day1_start + DAY, day1_start + 2 * DAY
    mask = pc.and_(
        pc.and_(
            pc.greater_equal(expected.column("first_ts"), pa.scalar(since, pa.timestamp("ns", "UTC"))),
            pc.less(expected.column("first_ts"), pa.scalar(until, pa.timestamp("ns", "UTC"))),
        ),
        pc.and_(
            pc.or_(
                pc.equal(expected.column("orig_ip"), device), pc.equal(expected.column("resp_ip"), device)
            ),
            pc.or_(
                pc.equal(expected.column("service"), "modbus"), pc.equal(expected.column("proto"), "modbus")
            ),
        ),
    )
    want = expected.filter(mask)
    got = store.flows(device_ips=[device], since=since, until=until, protocol="modbus", limit=10_000)
    assert 0 < got.num_rows < everything.num_rows
    assert _rows(got, keys) == _rows(want, keys)
    assert set(got.column("day").to_pylist()) == {since.date()}
    # Ordered oldest first.
    assert got.column("first_ts").to_pylist() == sorted(got.column("first_ts").to_pylist())

    # The transport works as a protocol too; a sensor filter narrows.
    udp = store.flows(protocol="udp", sensors=["plant-b"], limit=100_000)
    want_udp = expected.filter(
        pc.and_(pc.equal(expected.column("proto"), "udp"), pc.equal(expected.column("sensor"), "plant-b"))
    )
    assert _rows(udp, keys) == _rows(want_udp, keys)


def test_paging_covers_every_row_once(store: ColumnarStore) -> None:
    whole = store.flows(limit=100_000)
    pages = [store.flows(limit=97, offset=offset) for offset in range(0, whole.num_rows + 97, 97)]
    joined = pa.concat_tables(pages)
    assert joined.num_rows == whole.num_rows
    assert joined.to_pylist() == whole.to_pylist()
    assert store.flows(limit=0).num_rows == 0


def test_events_agree_with_pyarrow(
    store: ColumnarStore, demo: Path, day2: Path, day1_start: dt.datetime
) -> None:
    expected = _expected({sensor: [demo, day2] for sensor in SENSORS}, "events/modbus.parquet")
    functions = sorted(set(expected.column("func").drop_null().to_pylist()))[:2]
    client = expected.column("orig_h")[0].as_py()
    since, until = day1_start, day1_start + DAY
    ts = expected.column("ts")
    mask = pc.and_(
        pc.and_(
            pc.greater_equal(ts, pa.scalar(since, pa.timestamp("ns", "UTC"))),
            pc.less(ts, pa.scalar(until, pa.timestamp("ns", "UTC"))),
        ),
        pc.and_(
            pc.is_in(expected.column("func"), pa.array(functions)),
            pc.and_(pc.equal(expected.column("orig_h"), client), pc.equal(expected.column("is_orig"), True)),
        ),
    )
    want = expected.filter(mask)
    got = store.events(
        "modbus",
        since=since,
        until=until,
        filters={"func": functions, "orig_h": client, "is_orig": True},
        limit=100_000,
    )
    assert got.num_rows == want.num_rows > 0
    keys = ["ts", "sensor", "flow_id", "tid", "is_orig"]
    assert _rows(got, keys) == _rows(want, keys)
    # Binary and list columns come back intact.
    assert got.schema.field("data").type == pa.binary()
    # A null filter.
    nulls = store.events("modbus", filters={"exception": None}, limit=100_000)
    assert nulls.num_rows == pc.sum(pc.is_null(expected.column("exception"))).as_py()


def test_flow_summary_agrees_with_pyarrow(store: ColumnarStore, demo: Path, day2: Path) -> None:
    expected = _expected({sensor: [demo, day2] for sensor in SENSORS}, "flows.parquet")
    expected = expected.append_column(
        "all_bytes", pc.add(expected.column("orig_bytes"), expected.column("resp_bytes"))
    )
    want = expected.group_by(["sensor", "service"], use_threads=False).aggregate(
        [("flow_id", "count"), ("all_bytes", "sum"), ("first_ts", "min"), ("last_ts", "max")]
    )
    got = store.flow_summary(["sensor", "service"], limit=10_000)
    assert got.num_rows == want.num_rows
    got_rows = {
        (r["sensor"], r["service"]): (r["flows"], r["bytes"], r["first_ts"], r["last_ts"])
        for r in got.to_pylist()
    }
    want_rows = {
        (r["sensor"], r["service"]): (
            r["flow_id_count"],
            r["all_bytes_sum"],
            r["first_ts_min"],
            r["last_ts_max"],
        )
        for r in want.to_pylist()
    }
    assert got_rows == want_rows
    assert got.column("bytes").to_pylist() == sorted(got.column("bytes").to_pylist(), reverse=True)
    by_day = store.flow_summary(["day"])
    assert by_day.column("flows").to_pylist() == [expected.num_rows // 2] * 2


def test_readding_a_batch_replaces_it(store: ColumnarStore, demo: Path, day2: Path) -> None:
    before = sorted(store.root.rglob("*.parquet"))
    flows_before = store.flows(limit=100_000).num_rows
    report = store.add_folder(demo, "plant-a")
    assert report.files_written > 0
    assert sorted(store.root.rglob("*.parquet")) == before
    assert store.flows(limit=100_000).num_rows == flows_before

    # A new version of a batch that covers fewer days removes the files of the days it dropped.
    both = pa.concat_tables([pq.read_table(demo / "flows.parquet"), pq.read_table(day2 / "flows.parquet")])
    first = store.add_table("flows", None, both, "plant-c", "batch-1")
    assert len(first.days) == 2
    later = both.filter(
        pc.greater_equal(both.column("first_ts"), pc.max(both.column("first_ts")).as_py() - DAY / 2)
    )
    second = store.add_table("flows", None, later, "plant-c", "batch-1")
    assert second.files_removed == 1
    assert store.flows(sensors=["plant-c"], limit=100_000).num_rows == later.num_rows
    assert len(list(store.root.glob("flows/day=*/sensor=plant-c/batch-1.parquet"))) == 1


def test_retention_drops_old_days(store: ColumnarStore, day1_start: dt.datetime) -> None:
    assert ColumnarStore(store.root).apply_retention(day1_start + 100 * DAY).removed == ()
    keeper = ColumnarStore(store.root, retention_days=1)
    # At the end of day 2 every row of day 1 is older than a day, none of day 2's is.
    nothing = keeper.apply_retention(day1_start + 2 * DAY - dt.timedelta(seconds=1))
    assert nothing.removed == ()
    report = keeper.apply_retention(day1_start + 2 * DAY + dt.timedelta(hours=1))
    assert report.keep_from == (day1_start + DAY).date()
    assert {part.day for part in report.removed} == {day1_start.date()}
    assert {part.log for part in report.removed} == {None, *keeper.event_logs()}
    assert all(part.files == len(SENSORS) and part.bytes > 0 for part in report.removed)
    assert not list(store.root.glob(f"**/day={day1_start.date()}"))
    assert set(keeper.flows(limit=100_000).column("day").to_pylist()) == {(day1_start + DAY).date()}
    with pytest.raises(ColumnarStoreError):
        ColumnarStore(store.root, retention_days=0)


def test_a_day_limited_query_reads_only_that_day(store: ColumnarStore, day1_start: dt.datetime) -> None:
    since, until = day1_start + DAY, day1_start + 2 * DAY
    before_flows = store.flows(since=since, until=until, limit=100_000)
    before_events = store.events("modbus", since=since, until=until, limit=100_000)
    before_summary = store.flow_summary(["service"], since=since, until=until)
    assert {path.parent.parent.name for path in store.files("flows", since=since, until=until)} == {
        f"day={since.date()}"
    }
    # Turn day 1 into garbage: a query that opened any of its files would fail.
    for path in store.root.glob(f"**/day={day1_start.date()}/**/*.parquet"):
        path.write_bytes(b"not parquet at all")
    assert store.flows(since=since, until=until, limit=100_000).equals(before_flows)
    assert store.events("modbus", since=since, until=until, limit=100_000).equals(before_events)
    assert store.flow_summary(["service"], since=since, until=until).equals(before_summary)
    with pytest.raises(ColumnarStoreError):
        store.flows(limit=10)


def test_duckdb_prunes_the_day_partition_too(store: ColumnarStore, day1_start: dt.datetime) -> None:
    """The ``day`` predicate alone prunes in DuckDB (for the files the store hands it)."""
    import duckdb

    files = [str(path) for path in store.files("flows")]
    con = duckdb.connect()
    plan = con.sql(
        "EXPLAIN ANALYZE SELECT count(*) FROM read_parquet($files, hive_partitioning = true, "
        "hive_types = {'day': DATE, 'sensor': VARCHAR}) WHERE day = $day",
        params={"files": files, "day": day1_start.date()},
    ).fetchall()[0][1]
    assert f"Scanning Files: {len(files) // 2}/{len(files)}" in plan


def test_schema_drift_between_sensor_versions(store: ColumnarStore, day2: Path) -> None:
    newer = pq.read_table(day2 / "events" / "modbus.parquet")
    newer = newer.append_column("vendor_hint", pa.array(["acme"] * len(newer)))
    store.add_table("events", "modbus", newer, "plant-new", "b-1")
    both = store.events("modbus", limit=100_000)
    assert "vendor_hint" in both.column_names
    hints = pc.value_counts(both.column("vendor_hint")).to_pylist()
    assert {(h["values"], h["counts"]) for h in hints} == {
        ("acme", len(newer)),
        (None, both.num_rows - len(newer)),
    }
    only = store.events("modbus", filters={"vendor_hint": "acme"}, limit=100_000)
    assert only.num_rows == len(newer)
    assert set(only.column("sensor").to_pylist()) == {"plant-new"}
    # An older sensor drops a column: still readable.
    older = pq.read_table(day2 / "flows.parquet").drop_columns(["service"])
    store.add_table("flows", None, older, "plant-old", "b-1")
    old_report = store.add_table("flows", None, older, "plant-old", "b-1")
    assert old_report.weird == {"missing_column:service": 1}
    old_rows = store.flows(sensors=["plant-old"], limit=100_000)
    assert old_rows.num_rows == len(older)
    assert old_rows.column("service").null_count == len(older)


@pytest.mark.parametrize(
    "name", ["../x", "../../etc", "/etc/cron.d", "a/b", "..", ".", "plant 1/line A", "x" * 300]
)
def test_hostile_sensor_names_stay_inside_the_store(name: str, demo: Path, tmp_path: Path) -> None:
    store = ColumnarStore(tmp_path / "store")
    report = store.add_folder(demo, name)
    key = sensor_key(name)
    assert report.sensor == key
    assert "/" not in key
    assert key not in {".", ".."}
    root = store.root
    everything = [path.resolve() for path in tmp_path.rglob("*") if path.is_file()]
    assert everything
    assert all(path.is_relative_to(root) for path in everything)
    assert {path.parent.name for path in root.rglob("*.parquet")} == {f"sensor={key}"}
    rows = store.flows(sensors=[name], limit=100_000)
    assert rows.num_rows == pq.read_metadata(demo / "flows.parquet").num_rows
    assert set(rows.column("sensor").to_pylist()) == {key}
    assert sensor_key(name) != sensor_key(name + "/")


def test_hostile_queries_are_refused_or_harmless(store: ColumnarStore, demo: Path) -> None:
    total = store.events("modbus", limit=100_000).num_rows
    for value in ["x' OR '1'='1", "'; DROP TABLE x; --", '" OR 1=1 --', "\x00", "\\"]:
        assert store.events("modbus", filters={"orig_h": value}).num_rows == 0
        assert store.events("modbus", filters={"orig_h": [value, "' OR 1=1"]}).num_rows == 0
        assert store.flows(protocol=value).num_rows == 0
    assert store.events("modbus", limit=100_000).num_rows == total
    for column in [
        'orig_h" = orig_h OR "1',
        "orig_h; --",
        "__fw_file",
        "file_row_number",
        "no_such",
        "coils",
    ]:
        with pytest.raises(ColumnarStoreError):
            store.events("modbus", filters={column: "1"})
    for group in (["service; DROP"], ["orig_bytes"], "service", []):
        with pytest.raises(ColumnarStoreError):
            store.flow_summary(group)
    for call in (
        lambda: store.events("../modbus"),
        lambda: store.events("modbus", filters={"orig_h": {"a": 1}}),  # type: ignore[dict-item]
        lambda: store.flows(device_ips=["10.0.0.1' OR 1=1"]),
        lambda: store.flows(device_ips="10.0.0.1"),
        lambda: store.flows(limit=-1),
        lambda: store.flows(limit=10**9),
        lambda: store.flows(offset=-5),
        lambda: store.add_table("flows", None, pq.read_table(demo / "flows.parquet"), "a", "../b"),
        lambda: store.add_table("events", "../../etc", pq.read_table(demo / "flows.parquet"), "a", "b"),
        lambda: store.add_table("flows", None, pa.table({"x": [1]}), "a", "b"),
        lambda: store.add_folder(demo / "events", "a"),
        lambda: sensor_key(""),
    ):
        with pytest.raises(ColumnarStoreError):
            call()


def test_bad_rows_and_files_are_counted(demo: Path, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    shutil.copytree(demo / "events", folder / "events")
    (folder / "events" / "dns.parquet").write_bytes(b"PAR1 truncated")
    (folder / "events" / "Bad-Name.parquet").write_bytes(b"")
    shutil.copy(demo / "flows.parquet", folder / "flows.parquet")
    store = ColumnarStore(tmp_path / "store")
    report = store.add_folder(folder, "s")
    assert report.skipped == {"unreadable_file": 1, "bad_log_name": 1}
    assert "dns" not in store.event_logs()
    assert "modbus" in store.event_logs()

    table = pq.read_table(demo / "events" / "arp.parquet")
    ts = table.column("ts").to_pylist()
    ts[0] = None
    table = table.set_column(0, "ts", pa.array(ts, pa.timestamp("ns", "UTC")))
    table = table.append_column("sensor", pa.array(["spoofed"] * len(table)))
    one = store.add_table("events", "arp", table, "s", "nulls")
    assert one.skipped == {"null_timestamp": 1}
    assert one.weird == {"renamed_reserved_column:sensor": 1}
    rows = store.events("arp", sensors=["s"], filters={"sensor_field": "spoofed"}, limit=100_000)
    assert rows.num_rows == len(table) - 1
    assert set(rows.column("sensor").to_pylist()) == {"s"}


def test_naive_timestamps_and_bounds_are_utc(tmp_path: Path) -> None:
    store = ColumnarStore(tmp_path / "store")
    times = [dt.datetime(2026, 3, 1, 23, 59, 59), dt.datetime(2026, 3, 2, 0, 0, 0)]
    table = pa.table({"ts": pa.array(times, pa.timestamp("us")), "value": [1, 2]})
    report = store.add_table("events", "custom", table, "s", "b")
    assert report.days == {dt.date(2026, 3, 1), dt.date(2026, 3, 2)}
    got = store.events("custom", since=dt.datetime(2026, 3, 2), until=dt.datetime(2026, 3, 3))
    assert got.column("value").to_pylist() == [2]
    plus_one = dt.timezone(dt.timedelta(hours=1))
    got = store.events("custom", until=dt.datetime(2026, 3, 2, 1, 0, tzinfo=plus_one))
    assert got.column("value").to_pylist() == [1]


def test_an_empty_store_answers_empty(tmp_path: Path) -> None:
    store = ColumnarStore(tmp_path / "store", retention_days=7)
    assert store.event_logs() == []
    flows = store.flows(device_ips=["10.0.0.1"], since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert flows.num_rows == 0
    assert "first_ts" in flows.column_names
    assert "sensor" in flows.column_names
    assert store.events("modbus", filters={"unit": 1}).num_rows == 0
    summary = store.flow_summary(["service", "day"])
    assert summary.num_rows == 0
    assert summary.column_names[:3] == ["service", "day", "flows"]
    assert store.apply_retention(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).removed == ()
    empty = store.add_table("flows", None, _empty_flows(), "s", "b")
    assert empty.files_written == 0
    assert store.flows().num_rows == 0


def _empty_flows() -> pa.Table:
    from fieldward.decode.flows import FLOW_SCHEMA

    return pa.Table.from_batches([], schema=FLOW_SCHEMA)


def test_concurrent_queries_from_threads_agree(store: ColumnarStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    expected = store.flow_summary(["sensor", "day"])
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: store.flow_summary(["sensor", "day"]), range(12)))
    assert all(result.equals(expected) for result in results)
    store.close()
    assert store.flow_summary(["sensor", "day"]).equals(expected)


def test_the_query_engine_cannot_reach_outside_the_store(store: ColumnarStore, tmp_path: Path) -> None:
    import duckdb

    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": ["x"]}), outside)
    with store._connect() as con:
        for sql in (
            "SELECT * FROM read_parquet($path)",
            "SELECT * FROM read_csv($path)",
        ):
            with pytest.raises(duckdb.PermissionException):
                con.sql(sql, params={"path": str(outside)}).fetchall()
        with pytest.raises(duckdb.Error):
            con.execute("SET enable_external_access = true")
