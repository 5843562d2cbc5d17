"""Signed updates end to end: a real TUF repository (python-tuf metadata on disk) served by the
``tuf_router`` under uvicorn on a free port, and devices verifying with ``tuf.ngclient``.

Each attack is played against the real HTTP server by changing the files it serves (a man in the
middle or a compromised mirror can do no more): the client must refuse with the right ``kind``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldward.trust.errors import TrustError
from fieldward.trust.update_client import UpdateClient, UpdateRefusedError, in_rollout, rollout_bucket
from fieldward.trust.updates import (
    ExpiryPolicy,
    UpdateRepository,
    UpdateRepositoryError,
    tuf_router,
    update_status,
)

PASSPHRASE = b"correct horse battery staple 42"
MODEL = "SIMATIC S7-1200"


class _Swappable:
    """An ASGI app whose inner app each test replaces (one uvicorn server for the module)."""

    def __init__(self) -> None:
        self.inner: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.inner(scope, receive, send)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[_Swappable, str]]:
    app = _Swappable()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in 20 s"
        time.sleep(0.02)
    yield app, f"http://127.0.0.1:{port}/updates"
    srv.should_exit = True
    thread.join(20)
    sock.close()


@pytest.fixture
def serve(server: tuple[_Swappable, str]) -> Callable[[UpdateRepository], str]:
    def _serve(repo: UpdateRepository) -> str:
        app = FastAPI()
        app.include_router(tuf_router(repo))
        server[0].inner = app
        return server[1]

    return _serve


@pytest.fixture
def repo(tmp_path: Path) -> UpdateRepository:
    return UpdateRepository(tmp_path / "repo", PASSPHRASE)


def image(tmp_path: Path, version: str, size: int = 4096) -> Path:
    """A firmware image whose bytes depend on the version."""
    path = tmp_path / f"fw-{version}.bin"
    seed = hashlib.sha256(version.encode()).digest()
    path.write_bytes((seed * (size // len(seed) + 1))[:size])
    return path


def device(
    tmp_path: Path,
    base: str,
    root: bytes,
    device_id: str = "dev-1",
    group: str | None = "plant-a",
    *,
    channel: str = "stable",
    running: str | None = "1.0",
) -> UpdateClient:
    return UpdateClient(
        tmp_path / device_id / "tuf",
        base,
        root,
        device_id,
        group,
        MODEL,
        channel=channel,
        running_version=running,
    )


def meta(repo: UpdateRepository, name: str) -> Path:
    return repo.metadata_dir / name


# happy path -----------------------------------------------------------------------------------------


def test_device_gets_newest_verified_image_of_its_channel(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    root = repo.root_bytes()
    repo.publish(image(tmp_path, "1.0"), MODEL, "1.0", "stable")
    repo.publish(image(tmp_path, "1.2"), MODEL, "1.2", "stable", release_notes="fixes CVE-2024-0001")
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1", "stable", min_version="1.0")
    repo.publish(image(tmp_path, "2.0-beta1"), MODEL, "2.0-beta1", "beta")
    repo.publish(image(tmp_path, "9.0"), "Other PLC", "9.0", "stable")

    client = device(tmp_path, base, root)
    offer = client.check()
    assert offer is not None
    assert (offer.version, offer.channel, offer.release_notes) == ("1.2", "stable", "fixes CVE-2024-0001")
    path = client.download(offer)
    assert path.read_bytes() == image(tmp_path, "1.2").read_bytes()
    client.mark_installed(offer.version)
    assert client.check() is None  # up to date

    beta = device(tmp_path, base, root, "dev-beta", channel="beta")
    got = beta.update()
    assert got is not None
    assert got.read_bytes() == image(tmp_path, "2.0-beta1").read_bytes()

    report = client.report()
    assert report["device_id"] == "dev-1"
    assert report["running_version"] == "1.2"
    assert report["channel"] == "stable"
    assert report["last_error"] is None
    assert dt.datetime.fromisoformat(report["last_check"]) <= dt.datetime.now(dt.UTC)
    # the state survives a restart of the agent
    again = UpdateClient(tmp_path / "dev-1" / "tuf", base, root, "dev-1", "plant-a", MODEL)
    assert again.installed_version == "1.2"


def test_min_version_holds_back_devices_that_must_step_first(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    repo.publish(image(tmp_path, "1.5"), MODEL, "1.5")
    repo.publish(image(tmp_path, "2.0"), MODEL, "2.0", min_version="1.5")
    old = device(tmp_path, base, repo.root_bytes(), "dev-old", running="1.0")
    offer = old.check()
    assert offer is not None
    assert offer.version == "1.5"
    recent = device(tmp_path, base, repo.root_bytes(), "dev-recent", running="1.5")
    offer = recent.check()
    assert offer is not None
    assert offer.version == "2.0"


# staged rollout -------------------------------------------------------------------------------------


def _bucket(salt: str, device_id: str) -> int:
    """The documented rule, re-implemented here (docs/trust/updates.md)."""
    return int.from_bytes(hashlib.sha256(f"{salt}\x00{device_id}".encode()).digest()[:8], "big") % 10_000


def test_staged_rollout_by_group_list_and_percentage(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    root = repo.root_bytes()
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1")
    salt = "simatic-s7-1200/2.0"
    ids = [f"dev-c{i}" for i in range(50)]
    inside = next(d for d in ids if _bucket(salt, d) < 5000)
    outside = next(d for d in ids if _bucket(salt, d) >= 5000)
    release = repo.publish(
        image(tmp_path, "2.0"),
        MODEL,
        "2.0",
        rollout={"plant-a": 100, "plant-b": ["dev-b1"], "plant-c": 50},
    )
    assert release.rollout is not None
    assert release.rollout["groups"]["plant-c"] == {"share": 5000}

    def offered(device_id: str, group: str) -> str | None:
        offer = device(tmp_path, base, root, device_id, group).check()
        return None if offer is None else offer.version

    assert offered("dev-a1", "plant-a") == "2.0"
    assert offered("dev-b1", "plant-b") == "2.0"
    assert offered("dev-b2", "plant-b") == "1.1"  # not listed: gets the previous release
    assert offered(inside, "plant-c") == "2.0"
    assert offered(outside, "plant-c") == "1.1"
    assert offered("dev-d1", "plant-d") == "1.1"  # group not in the plan

    repo.set_rollout("stable", MODEL, "2.0", {"*": 100})
    assert offered("dev-d2", "plant-d") == "2.0"


def test_rollout_share_is_proportional_and_monotonic() -> None:
    ids = [f"device-{i}" for i in range(2000)]

    def admitted(share: int) -> set[str]:
        plan = {"salt": "m/1.0", "groups": {"g": {"share": share}}}
        return {d for d in ids if in_rollout(plan, d, "g")}

    quarter, half = admitted(2500), admitted(5000)
    assert 400 < len(quarter) < 600
    assert 900 < len(half) < 1100
    assert quarter <= half  # raising the share never drops a device
    assert admitted(0) == set()
    assert admitted(10_000) == set(ids)
    assert {d for d in ids if rollout_bucket("m/1.0", d) < 2500} == quarter
    assert in_rollout(None, "x", None)
    assert not in_rollout({"groups": {"g": {"share": 10_000}}}, "x", "g")  # no salt: malformed
    assert not in_rollout({"salt": "s", "groups": {"g": {"share": True}}}, "x", "g")


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=12,
    ),
    st.text(max_size=8),
    st.none() | st.text(max_size=5),
)
def test_in_rollout_never_crashes_on_malformed_plans(plan: Any, device_id: str, group: str | None) -> None:
    if isinstance(plan, dict):
        assert in_rollout(plan, device_id, group) in {True, False}


# attacks --------------------------------------------------------------------------------------------


def test_metadata_rollback_is_refused(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1")
    old_timestamp = meta(repo, "timestamp.json").read_bytes()
    repo.publish(image(tmp_path, "1.2"), MODEL, "1.2")
    client = device(tmp_path, base, repo.root_bytes())
    offer = client.check()
    assert offer is not None
    assert offer.version == "1.2"
    meta(repo, "timestamp.json").write_bytes(old_timestamp)  # replay the older, validly signed view
    with pytest.raises(UpdateRefusedError) as refused:
        client.check()
    assert refused.value.kind == "rollback"
    assert "timestamp" in str(refused.value)
    assert client.report()["last_error"]["kind"] == "rollback"


def test_image_rollback_below_running_version_is_refused(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    repo.publish(image(tmp_path, "2.0"), MODEL, "2.0")
    newer = device(tmp_path, base, repo.root_bytes(), "dev-new", running="3.0")
    assert newer.check() is None  # the channel's newest is older than what runs
    client = device(tmp_path, base, repo.root_bytes(), "dev-old", running="1.0")
    offer = client.check()
    assert offer is not None
    client.mark_installed("3.0")  # another path installed 3.0 meanwhile
    with pytest.raises(UpdateRefusedError) as refused:
        client.download(offer)
    assert refused.value.kind == "rollback"


def test_freeze_attack_with_expired_timestamp_is_refused_until_resigned(
    tmp_path: Path, serve: Callable[[UpdateRepository], str]
) -> None:
    now = dt.datetime.now(dt.UTC)
    clock = {"now": now - dt.timedelta(days=3)}
    repo = UpdateRepository(tmp_path / "repo", PASSPHRASE, clock=lambda: clock["now"])
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1")  # timestamp signed 3 days ago, valid 1 day
    base = serve(repo)
    client = device(tmp_path, base, repo.root_bytes())
    with pytest.raises(UpdateRefusedError) as refused:
        client.check()
    assert refused.value.kind == "freeze"
    assert "expired" in str(refused.value)

    clock["now"] = now
    version = repo.refresh_timestamp()
    assert version == repo.role_version("timestamp")
    offer = client.check()
    assert offer is not None
    assert offer.version == "1.1"


def test_mix_and_match_metadata_is_refused(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1")
    repo.publish(image(tmp_path, "1.2"), MODEL, "1.2")
    current = repo.role_version("channels/stable")
    # serve the channel's targets metadata of an earlier snapshot under the current snapshot's name
    older = meta(repo, f"{current - 1}.channels%2Fstable.json").read_bytes()
    meta(repo, f"{current}.channels%2Fstable.json").write_bytes(older)
    with pytest.raises(UpdateRefusedError) as refused:
        device(tmp_path, base, repo.root_bytes()).check()
    assert refused.value.kind == "mix-and-match"


def test_edited_rollout_in_served_metadata_is_refused(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1", rollout={"plant-a": 100})
    path = meta(repo, f"{repo.role_version('channels/stable')}.channels%2Fstable.json")
    doc = json.loads(path.read_bytes())
    for target in doc["signed"]["targets"].values():
        if target.get("custom"):
            target["custom"]["rollout"]["groups"]["plant-z"] = {"share": 10_000}
    path.write_text(json.dumps(doc))
    with pytest.raises(UpdateRefusedError) as refused:
        device(tmp_path, base, repo.root_bytes(), "dev-z", "plant-z").check()
    assert refused.value.kind in {"mix-and-match", "untrusted-signature"}


def test_tampered_image_is_refused(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    release = repo.publish(image(tmp_path, "1.1"), MODEL, "1.1")
    blob = repo.targets_dir / "stable" / "simatic-s7-1200" / "1.1" / f"{release.sha256}.fw-1.1.bin"
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF  # same length, one bit pattern changed
    blob.write_bytes(bytes(data))
    client = device(tmp_path, base, repo.root_bytes())
    offer = client.check()
    assert offer is not None
    with pytest.raises(UpdateRefusedError) as refused:
        client.download(offer)
    assert refused.value.kind == "tampered"
    assert not any(p.name.endswith("fw-1.1.bin") for p in client.download_dir.iterdir())
    assert client.report()["last_error"]["kind"] == "tampered"


@pytest.mark.parametrize("forged", ["timestamp.json", "2.root.json"])
def test_metadata_signed_by_unknown_keys_is_refused(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str], forged: str
) -> None:
    base = serve(repo)
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1")
    rogue = UpdateRepository(tmp_path / "rogue", b"attacker")
    rogue.publish(image(tmp_path, "6.6.6"), MODEL, "6.6.6")
    rogue.rotate_key("targets")  # gives the rogue repository a 2.root.json signed by its own keys
    for _ in range(3):
        rogue.refresh_timestamp()  # a higher version than the genuine one
    meta(repo, forged).write_bytes(meta(rogue, forged).read_bytes())
    with pytest.raises(UpdateRefusedError) as refused:
        device(tmp_path, base, repo.root_bytes()).check()
    assert refused.value.kind == "untrusted-signature"


# keys -----------------------------------------------------------------------------------------------


def test_key_rotation_keeps_old_clients_working(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    root_v1 = repo.root_bytes()
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1")
    seasoned = device(tmp_path, base, root_v1, "dev-seasoned")
    first = seasoned.check()
    assert first is not None
    assert first.version == "1.1"

    old_root = repo.role_keyids("root")
    old_keys = {role: repo.role_keyids(role) for role in ("targets", "snapshot", "timestamp")}
    new_root = repo.rotate_key("root")
    for role in ("targets", "snapshot", "timestamp", "channels/stable"):
        repo.rotate_key(role)
    repo.publish(image(tmp_path, "1.2"), MODEL, "1.2")

    assert repo.role_version("root") == 5
    assert new_root in repo.role_keyids("root")
    assert not set(old_root) & set(repo.role_keyids("root"))
    for role, keyids in old_keys.items():
        assert not set(keyids) & set(repo.role_keyids(role))
    # root 2 is signed by the retired root key and the new one
    signatures = json.loads(meta(repo, "2.root.json").read_bytes())["signatures"]
    assert {s["keyid"] for s in signatures} == {old_root[0], new_root}
    # retired keys are destroyed
    assert not [p for p in repo.keys_dir.iterdir() if p.name.split(".")[1] == old_root[0][:16]]

    for client in (seasoned, device(tmp_path, base, root_v1, "dev-fresh")):
        offer = client.check()
        assert offer is not None
        assert offer.version == "1.2"
        assert client.download(offer).read_bytes() == image(tmp_path, "1.2").read_bytes()

    reopened = UpdateRepository(repo.root_dir, PASSPHRASE)
    reopened.publish(image(tmp_path, "1.3"), MODEL, "1.3")
    offer = device(tmp_path, base, root_v1, "dev-later").check()
    assert offer is not None
    assert offer.version == "1.3"


def test_root_threshold_and_keys_encrypted_at_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    repo = UpdateRepository(tmp_path / "repo", PASSPHRASE, root_keys=3, root_threshold=2)
    root = json.loads(repo.root_bytes())
    assert root["signed"]["roles"]["root"]["threshold"] == 2
    assert len(root["signed"]["roles"]["root"]["keyids"]) == 3
    assert len(root["signatures"]) == 3
    assert stat.S_IMODE(os.stat(repo.keys_dir).st_mode) == 0o700
    pems = list(repo.keys_dir.glob("*.pem"))
    assert len(pems) == 3 + 3 + 2  # root x3, targets, snapshot, timestamp, two channels
    for pem in pems:
        assert pem.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    for path in repo.root_dir.rglob("*"):
        if path.is_file():
            assert PASSPHRASE not in path.read_bytes()
    assert PASSPHRASE.decode() not in caplog.text
    assert PASSPHRASE.decode() not in repr(repo)
    with pytest.raises(UpdateRepositoryError, match="wrong passphrase"):
        UpdateRepository(repo.root_dir, b"not the passphrase")
    with pytest.raises(UpdateRepositoryError):
        UpdateRepository(tmp_path / "other", b"")


def test_expiring_roles_are_resigned(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    clock = {"now": now}
    repo = UpdateRepository(tmp_path / "repo", PASSPHRASE, clock=lambda: clock["now"], expiry=ExpiryPolicy())
    before = {role: repo.role_version(role) for role in ("snapshot", "timestamp", "channels/stable")}
    clock["now"] = now + dt.timedelta(days=6)
    refreshed = repo.refresh_expiring(dt.timedelta(days=2))
    assert refreshed == ["snapshot", "timestamp"]
    assert repo.role_version("snapshot") == before["snapshot"] + 1
    assert repo.role_version("timestamp") == before["timestamp"] + 1
    assert repo.role_version("channels/stable") == before["channels/stable"]
    assert repo.refresh_expiring(dt.timedelta(hours=12)) == []  # the fresh timestamp lives a day


# repository input and the HTTP surface ---------------------------------------------------------------


def test_publish_rejects_bad_input(tmp_path: Path, repo: UpdateRepository) -> None:
    fw = image(tmp_path, "1.0")
    repo.publish(fw, MODEL, "1.0")
    with pytest.raises(UpdateRepositoryError, match="already published"):
        repo.publish(fw, MODEL, "V1.0.0")
    with pytest.raises(UpdateRepositoryError, match="no numeric release"):
        repo.publish(fw, MODEL, "latest")
    with pytest.raises(UpdateRepositoryError, match="no such channel"):
        repo.publish(fw, MODEL, "1.1", "nightly")
    with pytest.raises(UpdateRepositoryError, match="percentage"):
        repo.publish(fw, MODEL, "1.1", rollout={"plant-a": 150})
    with pytest.raises(UpdateRepositoryError, match="device ids"):
        repo.publish(fw, MODEL, "1.1", rollout={"plant-a": ["ok", 3]})
    with pytest.raises(UpdateRepositoryError, match="not a readable file"):
        repo.publish(tmp_path / "missing.bin", MODEL, "1.1")
    with pytest.raises(TrustError, match="cannot name"):
        repo.publish(fw, "///", "1.1")
    assert [r.version for r in repo.releases("stable", MODEL)] == ["1.0"]


def test_router_serves_only_repository_files(
    tmp_path: Path, repo: UpdateRepository, serve: Callable[[UpdateRepository], str]
) -> None:
    base = serve(repo)
    release = repo.publish(image(tmp_path, "1.0"), MODEL, "1.0")
    with httpx.Client(base_url=base + "/") as http:
        timestamp = http.get("metadata/timestamp.json")
        assert timestamp.status_code == 200
        assert timestamp.headers["cache-control"] == "no-cache"
        assert json.loads(timestamp.content)["signed"]["_type"] == "timestamp"
        channel = http.get("metadata/2.channels%2Fstable.json")
        assert channel.status_code == 200
        assert release.target_path in json.loads(channel.content)["signed"]["targets"]
        blob = http.get(f"targets/stable/simatic-s7-1200/1.0/{release.sha256}.fw-1.0.bin")
        assert blob.content == image(tmp_path, "1.0").read_bytes()
        for bad in (
            "metadata/1.keys.json",
            "metadata/99.root.json",
            "metadata/..%2Fkeys%2Froot.pem",
            "targets/..%2Fkeys",
            "targets/%2E%2E/keys/" + next(repo.keys_dir.iterdir()).name,
            "targets/stable/simatic-s7-1200/1.0/fw-1.0.bin",  # not hash-prefixed
        ):
            assert http.get(bad).status_code == 404, bad
    assert repo.target_file("../keys") is None
    assert repo.target_file("stable/../../repo/keys") is None


def test_update_status_for_the_risk_model(tmp_path: Path, repo: UpdateRepository) -> None:
    repo.publish(image(tmp_path, "1.0"), MODEL, "1.0")
    repo.publish(image(tmp_path, "1.1"), MODEL, "1.1")
    repo.publish(image(tmp_path, "1.2"), MODEL, "1.2", rollout={"plant-b": 100})
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=10)
    report = {"device_id": "dev-9", "running_version": "1.0", "channel": "stable"}
    status = update_status(repo, report, MODEL, group="plant-a", now=later)
    assert status.outdated
    assert status.releases_behind == 2
    assert (status.newest_version, status.newest_offered) == ("1.2", "1.1")
    assert status.days_behind == 10
    current = update_status(repo, {**report, "running_version": "1.2"}, MODEL, group="plant-a")
    assert not current.outdated
    assert current.releases_behind == 0
    assert current.days_behind is None
    unknown = update_status(repo, {**report, "running_version": None}, MODEL)
    assert unknown.outdated
    assert unknown.releases_behind == 3


def test_unreachable_repository_is_reported(tmp_path: Path, repo: UpdateRepository) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = device(tmp_path, f"http://127.0.0.1:{port}/updates", repo.root_bytes())
    with pytest.raises(UpdateRefusedError) as refused:
        client.check()
    assert refused.value.kind == "download"
    assert client.report()["last_error"]["kind"] == "download"
