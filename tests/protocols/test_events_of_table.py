"""``events_of_table`` turns event tables back into the very objects ``events_table`` was made of."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import pyarrow as pa
import pytest

from fieldward.protocols.base import Event, events_of_table, events_table
from fieldward.protocols.enip import CipHeader


def _cip(i: int, path: str | None) -> CipHeader:
    return CipHeader(
        ts=1_700_000_000_000_000_000 + i,
        flow_id=i,
        orig_h="10.0.0.1",
        orig_p=40000 + i,
        resp_h="10.0.0.2",
        resp_p=44818,
        is_orig=i % 2 == 0,
        cip_sequence_count=None if i % 3 else i,
        connection_id=None,
        direction="request",
        cip_service_code=0x4C,
        cip_service="Read Tag",
        cip_status_code=None,
        cip_status=None,
        cip_extended_status_code=None,
        cip_extended_status=None,
        class_id=None,
        class_name=None,
        instance_id=i,
        attribute_id=None,
        request_path=path,
        route_path=None,
        parent_service_code=None,
        reset_type=None,
    )


def test_round_trip_of_a_slotted_event_type() -> None:
    events: list[Event] = [_cip(i, f"symbol:T{i}" if i % 2 else None) for i in range(50)]
    back = events_of_table(CipHeader, events_table(CipHeader, events))
    assert back == events
    assert [type(e) for e in back] == [CipHeader] * 50
    with pytest.raises(AttributeError):
        back[0].ts = 7  # type: ignore[misc]  # still frozen


def test_columns_in_another_order_and_an_empty_table() -> None:
    events: list[Event] = [_cip(i, "p") for i in range(3)]
    table = events_table(CipHeader, events)
    names = list(reversed(table.column_names))
    assert events_of_table(CipHeader, table.select(names)) == events
    assert events_of_table(CipHeader, table.slice(0, 0)) == []


@dataclass(frozen=True, kw_only=True)
class Plain(Event):  # no slots, a default and a __post_init__ check: built through __init__
    log: ClassVar[str] = "plain"
    value: int
    label: str = "none"

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


def test_event_types_without_slots_go_through_init() -> None:
    base = {f.name: None for f in fields(Event)} | {"ts": 5, "flow_id": 1, "is_orig": True}
    events: list[Event] = [Plain(**base, value=v, label=str(v)) for v in range(4)]  # type: ignore[arg-type]
    table = events_table(Plain, events)
    assert events_of_table(Plain, table) == events
    broken = table.set_column(table.column_names.index("value"), "value", pa.array([1, -1, 2, 3]))
    with pytest.raises(ValueError, match="negative"):
        events_of_table(Plain, broken)
    assert events_of_table(Plain, table.drop_columns(["label"]))[2] == Plain(**base, value=2)  # type: ignore[arg-type]
