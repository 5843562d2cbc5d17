"""ProtocolDetector on Arrow tables: the CIP and EtherNet/IP table filters (which only spare the
objects of rows that cannot alert) give exactly the alerts of the same tables without a filter, and
the numpy grouping of replies counts what a Counter counts."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest

from fieldward.detect.engine import AlertBook, DetectionContext
from fieldward.detect.protocol import CIP_ILLEGAL_SERVICES, ProtocolDetector, _group_counts
from fieldward.detect.settings import DetectionSettings, ViolationSettings
from fieldward.protocols.base import Event, events_table
from fieldward.protocols.enip import CipHeader, EnipHeader
from fieldward.protocols.modbus import ModbusEvent

SECOND = 1_000_000_000
PAIRS = [("10.0.0.1", "10.0.1.1"), ("10.0.0.2", "10.0.1.1"), ("10.0.0.1", "10.0.1.2")]


def _base(rng: random.Random, ts: int, is_orig: bool) -> dict[str, Any]:
    orig, resp = rng.choice(PAIRS)
    return {
        "ts": ts,
        "flow_id": PAIRS.index((orig, resp)),
        "orig_h": orig,
        "orig_p": 50000,
        "resp_h": resp,
        "resp_p": 44818,
        "is_orig": is_orig,
    }


def _cip(rng: random.Random, ts: int) -> CipHeader:
    request = rng.random() < 0.5
    service = rng.choice([0x01, 0x0E, 0x4C, 0x33, *sorted(CIP_ILLEGAL_SERVICES)[:4]])
    status = None if request else rng.choice([None, 0x00, 0x00, 0x06, 0x1E, 0x05, 0x08, 0x14])
    return CipHeader(
        **_base(rng, ts, request),
        cip_sequence_count=None,
        connection_id=None,
        direction="request" if request else "response",
        cip_service_code=service if request else service | 0x80,
        cip_service=f"service {service}",
        cip_status_code=status,
        cip_status=None if status is None else f"status {status}",
        cip_extended_status_code=None,
        cip_extended_status=None,
        class_id=None,
        class_name=None,
        instance_id=None,
        attribute_id=None,
        request_path=None,
        route_path=None,
        parent_service_code=None,
        reset_type=None,
    )


def _enip(rng: random.Random, ts: int) -> EnipHeader:
    is_orig = rng.random() < 0.5
    status = 0 if is_orig else rng.choice([0, 0, 0, 1, 0x65])
    return EnipHeader(
        **_base(rng, ts, is_orig),
        enip_command_code=0x6F,
        enip_command="SendRRData",
        length=20,
        session_handle=1,
        enip_status_code=status,
        enip_status=f"status {status}",
        sender_context=b"\x00" * 8,
        options=0,
        interface_handle=0,
        timeout=0,
        cpf_item_types=[0, 0xB2],
        protocol_version=None,
        capability_flags=None,
        service_name=None,
    )


class _Unfiltered(ProtocolDetector):
    """Every CIP and EtherNet/IP row becomes an event object (what the detector did before the
    filters existed)."""

    def table_filter(self, log: str, table: pa.Table) -> pa.Array | None:
        return None if log in ("cip", "enip") else super().table_filter(log, table)


def _alerts(events: list[Event], detector_type: type[ProtocolDetector], chunk: int) -> list[dict[str, Any]]:
    violations = ViolationSettings(storm_exceptions=5, storm_window_s=30.0)
    context = DetectionContext(DetectionSettings(violations=violations))
    detector = detector_type(AlertBook(context), context)
    event_type = type(events[0])
    for start in range(0, len(events), chunk):
        detector.on_table(event_type, events_table(event_type, events[start : start + chunk]))
    detector.finish()
    return [alert.to_json() for alert in detector.alerts]


@pytest.mark.parametrize("make", [_cip, _enip])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_filtered_tables_raise_the_alerts_of_unfiltered_ones(make: Any, seed: int) -> None:
    rng = random.Random(seed)
    ts = 1_700_000_000 * SECOND
    events = []
    for _ in range(3000):
        ts += rng.randrange(SECOND // 20)
        events.append(make(rng, ts))
    for chunk in (len(events), 700):
        unfiltered = _alerts(events, _Unfiltered, chunk)
        kinds = {alert["type"] for alert in unfiltered}
        assert "protocol.exception_storm" in kinds, (
            "the traffic must alert for the comparison to mean something"
        )
        assert _alerts(events, ProtocolDetector, chunk) == unfiltered


def test_cip_filter_keeps_only_what_can_alert() -> None:
    rng = random.Random(4)
    events = [_cip(rng, i * SECOND) for i in range(500)]
    detector = ProtocolDetector(AlertBook())
    table_mask = detector.table_filter("cip", events_table(CipHeader, list[Event](events)))
    assert table_mask is not None
    mask = table_mask.to_pylist()
    expected = [
        (e.cip_service_code in CIP_ILLEGAL_SERVICES)
        if e.direction == "request"
        else (e.cip_status_code is not None and e.cip_status_code not in (0x00, 0x06, 0x1E))
        for e in events
    ]
    assert mask == expected
    assert 0 < sum(mask) < len(mask)


def test_group_counts_match_a_counter() -> None:
    rng = random.Random(5)
    rows = [(rng.choice("abc"), rng.choice("xyz"), rng.randrange(-3, 40)) for _ in range(2000)]
    clients, devices, bins = (pa.array(column) for column in zip(*rows, strict=True))
    grouped = _group_counts(clients, pa.chunked_array([devices[:700], devices[700:]]), bins)
    assert Counter({(c, d, b): n for c, d, b, n in grouped}) == Counter(rows)
    assert [b for _, _, b, _ in grouped] == sorted(b for _, _, b, _ in grouped)
    assert len(grouped) == len(set(rows))
    assert _group_counts(pa.array([], pa.string()), pa.array([], pa.string()), pa.array([], pa.int64())) == []


def _modbus(rng: random.Random, ts: int) -> ModbusEvent:
    request = rng.random() < 0.5
    code = rng.choice([3, 3, 3, 4, 6, 8, 8, 16, 0, 0x1B, 0x5A])
    if not request and rng.random() < 0.3:
        code |= 0x80
    exception = rng.choice([1, 2, 3, 12]) if code & 0x80 else None
    return ModbusEvent(
        **_base(rng, ts, request),
        tid=rng.randrange(65536),
        unit=rng.choice([1, 1, 1, 2, 0]),
        function_code=code,
        func=f"function {code}",
        pdu_type="REQ" if request else "RESP",
        len=12,
        exception_code=exception,
        exception=None if exception is None else f"exception {exception}",
        sub_function=rng.choice([0, 1, 21, 30]) if code == 8 else None,
    )


def test_modbus_table_filter_keeps_every_row_that_alerts() -> None:
    """Modbus tables (the fast path's) alert exactly as the same events one at a time: illegal and
    reserved function codes, reserved diagnostics sub-functions, undefined exception codes, unit 0."""
    rng = random.Random(6)
    ts = 1_700_000_000 * SECOND
    events = []
    for _ in range(2000):
        ts += rng.randrange(SECOND // 20)
        events.append(_modbus(rng, ts))
    context = DetectionContext(DetectionSettings())
    by_event = ProtocolDetector(AlertBook(context), context)
    for event in events:
        by_event.on_event(event)
    by_event.finish()
    expected = [alert.to_json() for alert in by_event.alerts]
    assert {"protocol.reserved_value", "protocol.illegal_function_code"} <= {a["type"] for a in expected}
    for chunk in (len(events), 300):
        context = DetectionContext(DetectionSettings())
        by_table = ProtocolDetector(AlertBook(context), context)
        for start in range(0, len(events), chunk):
            by_table.on_table(
                ModbusEvent, events_table(ModbusEvent, list[Event](events[start : start + chunk]))
            )
        by_table.finish()
        found = [alert.to_json() for alert in by_table.alerts]
        # Violations alert on the same rows. A storm's reply share is counted per table before its
        # error rows are seen, so a storm may start a few errors apart: the same pairs storm.
        assert _violations(found) == _violations(expected)
        assert _storms(found) == _storms(expected)


def _violations(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["type"] != "protocol.exception_storm"]


def _storms(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["src"], a["dst"], a["protocol"]) for a in alerts if a["type"] == "protocol.exception_storm"]
