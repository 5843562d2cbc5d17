"""The list pages' response cache (``console/api/cache.py``, docs/console/api.md "Cached list pages"):

- a repeated page is served from the worker's cache, byte for byte the same answer, with an ``ETag``;
  ``If-None-Match`` with it is a ``304`` without a body;
- the key is the endpoint, the caller's role and the validated parameters;
- every console write to devices, alerts or evidence bumps the data version in the database after its
  commit, so the next list (of any worker process on the database) is computed again and shows it:
  triage, learn, mute, a device's importance, HTTP ingestion, an evidence upload, a sensor's removal,
  a JetStream batch, a re-scored risk;
- a write outside the console is visible after ``list_cache_seconds`` at the latest;
- the cache is bounded, and a miss is computed once while other requests for it wait.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from fieldward.console.api.cache import (
    CACHE_HEADER,
    DATA_VERSION,
    CachedPage,
    ResponseCache,
    bump_data_version,
    cached_page,
)
from fieldward.console.app import create_app
from fieldward.console.jetstream_worker import Batch, BatchApplier
from fieldward.console.settings import ConsoleSettings
from fieldward.console.triage_models import ConsoleSetting
from fieldward.store.models import Alert, Device

from .conftest import BASE_URL, Console, start_console

DEVICES = "/api/v1/devices"
ALERTS = "/api/v1/alerts"


def _records(folder: Path, kind: str) -> list[dict[str, Any]]:
    if kind == "devices":
        records: list[dict[str, Any]] = json.loads((folder / "devices.json").read_text())["devices"]
        return records
    return [json.loads(line) for line in (folder / "alerts.jsonl").read_text().splitlines() if line.strip()]


def _push(console: Console, kind: str, records: list[Any]) -> None:
    response = console.client.post(
        f"/api/v1/ingest/{kind}",
        json={"batch_id": str(uuid.uuid4()), "records": records},
        headers=console.bearer(console.sensor_token),
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "applied"


def _get(console: Console, path: str, role: str = "viewer", **params: Any) -> httpx.Response:
    response: httpx.Response = console.client.get(
        path, params=params, headers=console.bearer(console.read_tokens[role])
    )
    assert response.status_code in (200, 304), response.text
    return response


def _version(console: Console) -> Any:
    with console.database.session() as session:
        return session.scalar(select(ConsoleSetting.value).where(ConsoleSetting.name == DATA_VERSION))


@pytest.fixture
def loaded(any_console: Console, demo_folder: Path) -> Console:
    """A console on each backend with the demo plant's devices and alerts pushed by its sensor."""
    alerts = _records(demo_folder, "alerts")
    _push(any_console, "devices", _records(demo_folder, "devices"))
    _push(any_console, "alerts", alerts[: len(alerts) - 2])  # two are kept for a later push
    return any_console


def _cached(console: Console, path: str, **params: Any) -> httpx.Response:
    """The page twice: computed, then from the cache (the same bytes)."""
    first = _get(console, path, **params)
    second = _get(console, path, **params)
    assert first.headers[CACHE_HEADER] == "miss"
    assert second.headers[CACHE_HEADER] == "hit"
    assert second.content == first.content
    return second


def test_a_repeated_page_is_the_same_answer_from_the_cache(loaded: Console) -> None:
    devices = _cached(loaded, DEVICES, sort="risk_score", order="desc", limit=7)
    assert len(devices.json()["items"]) == 7
    alerts = _cached(loaded, ALERTS, status="open", limit=5)
    assert alerts.json()["items"]
    assert alerts.headers["cache-control"] == "private, no-cache"
    # The key holds the validated parameters: another spelling of the same page is the same entry,
    # a parameter the page does not take makes no new one...
    same = _get(loaded, DEVICES, sort="risk_score", order="desc", limit="007", unknown="x")
    assert same.headers[CACHE_HEADER] == "hit"
    assert same.content == devices.content
    since = _get(loaded, ALERTS, since="2000-01-01T01:00:00+01:00", limit=3)
    assert since.headers[CACHE_HEADER] == "miss"
    assert _get(loaded, ALERTS, since="2000-01-01T00:00:00Z", limit=3).headers[CACHE_HEADER] == "hit"
    # ...and another page is another entry.
    assert _get(loaded, DEVICES, sort="risk_score", order="desc", limit=8).headers[CACHE_HEADER] == "miss"
    # A malformed parameter is still a 422, never a cached answer.
    bad = loaded.client.get(
        ALERTS, params={"since": "yesterday"}, headers=loaded.bearer(loaded.read_tokens["viewer"])
    )
    assert bad.status_code == 422


def test_etag_and_if_none_match(loaded: Console) -> None:
    first = _get(loaded, ALERTS, status="open", limit=5)
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    for header in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        again = loaded.client.get(
            ALERTS,
            params={"status": "open", "limit": 5},
            headers={**loaded.bearer(loaded.read_tokens["viewer"]), "If-None-Match": header},
        )
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
    other = loaded.client.get(
        ALERTS,
        params={"status": "open", "limit": 5},
        headers={**loaded.bearer(loaded.read_tokens["viewer"]), "If-None-Match": '"something-else"'},
    )
    assert other.status_code == 200
    assert other.content == first.content
    # After a change of the page the old tag no longer matches: the new answer comes with a new tag.
    alert_id = first.json()["items"][0]["id"]
    response = loaded.client.post(
        f"{ALERTS}/{alert_id}/close", headers=loaded.bearer(loaded.tokens["analyst"])
    )
    assert response.status_code == 200, response.text
    changed = loaded.client.get(
        ALERTS,
        params={"status": "open", "limit": 5},
        headers={**loaded.bearer(loaded.read_tokens["viewer"]), "If-None-Match": etag},
    )
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert alert_id not in [a["id"] for a in changed.json()["items"]]
    # A 304 costs no body even when the answer was computed again (same bytes, same tag).
    bump_data_version(loaded.database)
    recomputed = loaded.client.get(
        ALERTS,
        params={"status": "open", "limit": 5},
        headers={**loaded.bearer(loaded.read_tokens["viewer"]), "If-None-Match": changed.headers["etag"]},
    )
    assert recomputed.status_code == 304
    assert recomputed.headers[CACHE_HEADER] == "miss"


def test_roles_have_their_own_entries(loaded: Console) -> None:
    viewer = _cached(loaded, DEVICES, limit=5)
    for role in ("analyst", "admin"):
        first = _get(loaded, DEVICES, role=role, limit=5)
        assert first.headers[CACHE_HEADER] == "miss", role
        assert first.content == viewer.content  # the inventory is the same for every role today
        assert _get(loaded, DEVICES, role=role, limit=5).headers[CACHE_HEADER] == "hit"


def test_triage_is_visible_to_the_next_list(loaded: Console) -> None:
    analyst = loaded.bearer(loaded.tokens["analyst"])
    page = _cached(loaded, ALERTS, status="new", sort="id", order="asc", limit=10)
    ids = [a["id"] for a in page.json()["items"]]
    assert len(ids) >= 5
    for action, alert_id, status in (
        ("acknowledge", ids[0], "acknowledged"),
        ("close", ids[1], "closed"),
        ("learn", ids[2], "closed"),
        ("mute", ids[3], "closed"),
    ):
        response = loaded.client.post(f"{ALERTS}/{alert_id}/{action}", headers=analyst)
        assert response.status_code in (200, 201), response.text
        after = _get(loaded, ALERTS, status="new", sort="id", order="asc", limit=10)
        assert after.headers[CACHE_HEADER] == "miss", action
        assert alert_id not in [a["id"] for a in after.json()["items"]], action
        everything = _get(loaded, ALERTS, sort="id", order="asc", limit=500)
        assert {a["id"]: a["status"] for a in everything.json()["items"]}[alert_id] == status, action
    response = loaded.client.post(f"{ALERTS}/{ids[0]}/reopen", headers=analyst)
    assert response.status_code == 200, response.text
    assert ids[0] in [
        a["id"] for a in _get(loaded, ALERTS, status="new", sort="id", limit=10).json()["items"]
    ]


def test_a_device_edit_is_visible_to_the_next_list(loaded: Console) -> None:
    page = _cached(loaded, DEVICES, sort="id", limit=3)
    device = page.json()["items"][0]
    assert device["importance"] != "critical"
    response = loaded.client.patch(
        f"{DEVICES}/{device['id']}",
        json={"importance": "critical"},
        headers=loaded.bearer(loaded.tokens["analyst"]),
    )
    assert response.status_code == 200, response.text
    after = _get(loaded, DEVICES, sort="id", limit=3)
    assert after.headers[CACHE_HEADER] == "miss"
    assert after.json()["items"][0]["importance"] == "critical"


def test_ingestion_and_evidence_are_visible_to_the_next_list(loaded: Console, demo_folder: Path) -> None:
    before = _cached(loaded, ALERTS, sort="id", order="asc", limit=500).json()
    alerts = _records(demo_folder, "alerts")
    _push(loaded, "alerts", alerts[-2:])
    after = _get(loaded, ALERTS, sort="id", order="asc", limit=500).json()
    assert after["total"] == before["total"] + 2
    # Evidence: has_evidence of the alert's row changes with the upload (a file, not a column).
    assert _get(loaded, ALERTS, sort="id", order="asc", limit=500).headers[CACHE_HEADER] == "hit"
    alert_id = after["items"][0]["id"]
    assert after["items"][0]["has_evidence"] is False
    data = next((demo_folder / "evidence").glob("*.pcap")).read_bytes()
    uploaded = loaded.client.post(
        f"/api/v1/ingest/evidence/{alert_id}",
        content=data,
        headers={**loaded.bearer(loaded.sensor_token), "content-type": "application/vnd.tcpdump.pcap"},
    )
    assert uploaded.status_code == 200, uploaded.text
    row = _get(loaded, ALERTS, sort="id", order="asc", limit=500).json()["items"][0]
    assert row["id"] == alert_id
    assert row["has_evidence"] is True


def test_removing_a_sensor_empties_the_lists(loaded: Console) -> None:
    assert _cached(loaded, DEVICES, limit=5).json()["total"] > 0
    with loaded.database.session() as session:
        sensor_id = session.scalar(select(Device.sensor_id).limit(1))
    response = loaded.client.delete(
        f"/api/v1/sensors/{sensor_id}", headers=loaded.bearer(loaded.tokens["admin"])
    )
    assert response.status_code == 200, response.text
    assert _get(loaded, DEVICES, limit=5).json()["total"] == 0


def test_a_jetstream_batch_is_visible_to_the_next_list(loaded: Console, demo_folder: Path) -> None:
    before = _cached(loaded, ALERTS, limit=1).json()["total"]
    records = _records(demo_folder, "alerts")[-2:]
    batch = Batch("sensor-1", "alerts", str(uuid.uuid4()), json.dumps(records).encode(), {})
    assert BatchApplier(loaded.database).apply(batch) == "applied"
    after = _get(loaded, ALERTS, limit=1)
    assert after.headers[CACHE_HEADER] == "miss"
    assert after.json()["total"] == before + 2


def test_every_bump_is_a_new_version(any_console: Console) -> None:
    first = _version(any_console)
    bump_data_version(any_console.database)
    second = _version(any_console)
    with any_console.database.session() as session:
        bump_data_version(session)
    third = _version(any_console)
    assert len({first, second, third}) == 3
    assert second is not None
    assert third is not None


def test_another_worker_process_sees_the_write(
    any_console: Console, tmp_path: Path, demo_folder: Path
) -> None:
    """Two apps on one database (two worker processes): a triage through one invalidates the other's
    kept page (the version lives in the database, not in a process)."""
    _push(any_console, "devices", _records(demo_folder, "devices"))
    _push(any_console, "alerts", _records(demo_folder, "alerts"))
    url = any_console.database.engine.url.render_as_string(hide_password=False)
    settings = ConsoleSettings(database_url=url, data_dir=tmp_path / "other", ui=False)
    with TestClient(create_app(settings), base_url=BASE_URL) as other:
        token = any_console.bearer(any_console.read_tokens["viewer"])
        first = other.get(ALERTS, params={"status": "new", "sort": "id"}, headers=token)
        again = other.get(ALERTS, params={"status": "new", "sort": "id"}, headers=token)
        assert again.headers[CACHE_HEADER] == "hit"
        alert_id = first.json()["items"][0]["id"]
        response = any_console.client.post(
            f"{ALERTS}/{alert_id}/acknowledge", headers=any_console.bearer(any_console.tokens["analyst"])
        )
        assert response.status_code == 200, response.text
        after = other.get(ALERTS, params={"status": "new", "sort": "id"}, headers=token)
        assert after.headers[CACHE_HEADER] == "miss"
        assert alert_id not in [a["id"] for a in after.json()["items"]]


@pytest.fixture(params=["sqlite", "postgresql"])
def short_cache(request: pytest.FixtureRequest, tmp_path: Path, demo_folder: Path) -> Iterator[Console]:
    url = (
        f"sqlite:///{tmp_path / 'console.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_factory")()
    )
    for console in start_console(url, tmp_path, list_cache_seconds=0.5):
        _push(console, "devices", _records(demo_folder, "devices"))
        _push(console, "alerts", _records(demo_folder, "alerts"))
        yield console


def test_a_write_outside_the_console_shows_after_the_maximum_age(short_cache: Console) -> None:
    console = short_cache
    first = _get(console, ALERTS, status="closed")
    assert first.json()["total"] == 0
    # A writer that does not bump (SQL by hand, another program): the kept page is served meanwhile...
    with console.database.session() as session:
        session.execute(update(Alert).values(status="closed"))
    started = time.monotonic()
    kept = _get(console, ALERTS, status="closed")
    if time.monotonic() - started < 0.4:
        assert kept.headers[CACHE_HEADER] == "hit"
        assert kept.json()["total"] == 0
    # ...for list_cache_seconds at most.
    time.sleep(0.6)
    fresh = _get(console, ALERTS, status="closed")
    assert fresh.headers[CACHE_HEADER] == "miss"
    assert fresh.json()["total"] > 0


def test_the_cache_can_be_turned_off(tmp_path: Path) -> None:
    for console in start_console(f"sqlite:///{tmp_path / 'c.db'}", tmp_path, list_cache_seconds=0):
        for _ in range(2):
            response = _get(console, DEVICES)
            assert response.headers[CACHE_HEADER] == "off"
            assert response.headers["etag"]


def test_the_cache_is_bounded() -> None:
    cache = ResponseCache(max_age=60, entries=3, max_bytes=10)
    for n in range(5):
        cache.put(n, CachedPage(b"xx", f'"{n}"', "v", time.monotonic()))
    assert len(cache) == 3
    assert cache.get(0, "v") is None
    assert cache.get(4, "v") is not None
    cache.get(2, "v")  # used: the least recently used is now 3
    cache.put(5, CachedPage(b"xx", '"5"', "v", time.monotonic()))
    assert cache.get(3, "v") is None
    assert cache.get(2, "v") is not None
    cache.put(6, CachedPage(b"x" * 8, '"6"', "v", time.monotonic()))  # 10 bytes at most
    assert len(cache) == 2  # 4 and 5 went (8 + 2 + 2 bytes were too many), 2 and 6 stay
    cache.put(7, CachedPage(b"x" * 11, '"7"', "v", time.monotonic()))  # larger than the whole cache
    assert cache.get(7, "v") is None
    assert cache.get(6, "other version") is None  # and an entry of another version is dropped
    assert len(cache) == 1


def test_a_miss_is_computed_once_while_the_others_wait() -> None:
    cache = ResponseCache(max_age=60)
    computed: list[int] = []

    def compute() -> bytes:
        computed.append(1)
        return b'{"items": []}'

    async def run(_request: Any, work: Any) -> bytes:
        await asyncio.sleep(0.05)
        result: bytes = work()
        return result

    def fake_request() -> Any:
        return SimpleNamespace(
            app=SimpleNamespace(state=SimpleNamespace(response_cache=cache)),
            state=SimpleNamespace(data_version="v1"),
            headers={},
        )

    async def burst() -> list[Any]:
        return await asyncio.gather(*(cached_page(fake_request(), "k", compute, run) for _ in range(5)))

    answers = asyncio.run(burst())
    assert len(computed) == 1
    assert [a.headers[CACHE_HEADER] for a in answers].count("miss") == 1
    assert {a.body for a in answers} == {b'{"items": []}'}
