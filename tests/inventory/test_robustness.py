"""Hostile or odd event fields never stop the inventory: sources are fuzzed with hypothesis over the
real event types, and a source that raises is confined to a counted weird."""

from __future__ import annotations

import dataclasses
import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.inventory import InventoryBuilder
from fieldward.inventory.sources import ENGINEERING_REQUESTS, ROW_FILTERS, SOURCES
from fieldward.protocols.base import Event, events_table
from fieldward.protocols.registry import Registry


def event_types() -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    for entry in Registry.default(plugins=False):
        for event_type in entry.dissector.event_types:
            found[event_type.log] = event_type
    return found


TYPES = event_types()


def test_every_source_reads_a_real_event_log() -> None:
    assert set(SOURCES) <= set(TYPES)


@pytest.fixture(scope="module")
def builder() -> InventoryBuilder:
    return InventoryBuilder()


@pytest.mark.parametrize("log", sorted(SOURCES))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_events_never_raise(builder: InventoryBuilder, log: str, data: st.DataObject) -> None:
    event = data.draw(st.builds(TYPES[log]))
    before = builder.weird.total
    builder.observe_event(event)
    assert builder.weird.total == before, builder.weird.summary()


def test_a_failing_source_is_a_counted_weird_and_the_build_goes_on() -> None:
    builder = InventoryBuilder()
    broken: Any = SimpleNamespace(log="cip_identity", ts=1, flow_id=0, orig_h="10.0.0.1", resp_h="10.0.0.2")
    builder.observe_event(broken)  # no vendor_name, product_name, ... attributes
    builder.observe_event(broken)
    assert builder.weird.summary() == {"inventory_source_error": 2}
    assert builder.build().devices == []


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("freezing", [True, False])
def test_build_leaves_the_collector_as_it_found_it(enabled: bool, freezing: bool) -> None:
    """build() pauses the cyclic collector; it is left enabled or disabled as it was. What the build
    made is frozen only in a process that already freezes what it keeps (the analysis job)."""
    import gc

    builder = InventoryBuilder()
    builder.bind("00:1d:9c:00:00:01", "10.0.0.1", 1, "test")
    was = gc.isenabled()
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()
    try:
        if freezing:
            gc.freeze()
        before = gc.get_freeze_count()
        inventory = builder.build()
        assert gc.isenabled() is enabled
        if freezing:
            assert gc.get_freeze_count() > before
        else:
            assert gc.get_freeze_count() == 0
        assert [d.id for d in inventory.devices] == ["mac:00:1d:9c:00:00:01"]
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


def _event(event_type: type[Any], **values: Any) -> Any:
    """An event of ``event_type`` with every field not given set to a neutral value of its type."""
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(event_type):
        kind = str(f.type)
        if f.name in values:
            fields[f.name] = values[f.name]
        elif f.default is not dataclasses.MISSING:
            fields[f.name] = f.default
        elif "list" in kind or "tuple" in kind:
            fields[f.name] = []
        elif kind.startswith("str"):
            fields[f.name] = "x"
        elif kind.startswith("bytes"):
            fields[f.name] = b""
        elif kind.startswith("bool"):
            fields[f.name] = False
        elif kind.startswith("float"):
            fields[f.name] = 0.0
        else:
            fields[f.name] = None if "None" in kind else 0
    return event_type(**fields)


@pytest.mark.parametrize("log", sorted(ENGINEERING_REQUESTS))
def test_table_rows_filter_changes_nothing(log: str) -> None:
    """A fast-path table is filtered by its source's ``rows`` before rows become objects: the inventory
    must be the one the same events give one by one (the filter keeps every row the source acts on)."""
    event_type = TYPES[log]
    condition = ENGINEERING_REQUESTS[log]
    field, wanted = condition if condition is not None else ("is_orig", True)
    events = []
    for i, (is_orig, value) in enumerate(itertools.product((True, False), (wanted, "Other", None))):
        host = f"10.9.0.{i + 1}"
        values: dict[str, Any] = {field: value} if field != "is_orig" else {}
        events.append(
            _event(
                event_type,
                ts=1_000 + i,
                flow_id=i,
                orig_h=host,
                resp_h="10.9.1.1",
                orig_p=4000,
                resp_p=44818,
                is_orig=is_orig,
                **values,
            )
        )
    assert log in ROW_FILTERS
    by_table, by_event = InventoryBuilder(), InventoryBuilder()
    by_table.observe_table(event_type, events_table(event_type, events))
    for event in events:
        by_event.observe_event(event)
    assert by_table.events_seen == by_event.events_seen == len(events)
    # The evidence each builder recorded per device (devices themselves need packets, not only events).
    assert by_table._records == by_event._records
    marked = {t for t, r in by_table._records.items() if "ot-engineering" in r.facts.get("behaviour", {})}
    expected = {("ip", e.orig_h) for e in events if e.is_orig and getattr(e, field) == wanted}
    assert marked == expected != set()
