"""Hostile or odd event fields never stop the inventory: sources are fuzzed with hypothesis over the
real event types, and a source that raises is confined to a counted weird."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldward.inventory import InventoryBuilder
from fieldward.inventory.sources import SOURCES
from fieldward.protocols.base import Event
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
