"""Console settings: every role reads them, only an administrator changes them, each change is stored
and audited with its before and after, and forwarding targets are validated (udp/tcp/tls host:port)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from fieldward.console.api.schemas.settings import parse_target
from fieldward.console.triage_models import ConsoleSetting
from fieldward.store.models import AuditLog

from .conftest import Console

URL = "/api/v1/settings"


def _put(console: Console, body: Any, role: str = "admin") -> Any:
    return console.client.put(URL, json=body, headers=console.bearer(console.tokens[role]))


def test_defaults_changes_and_audit(any_console: Console) -> None:
    console = any_console
    for role in ("viewer", "analyst", "admin"):
        current = console.client.get(URL, headers=console.bearer(console.tokens[role]))
        assert current.status_code == 200
        assert current.json()["forwarding"]["enabled"] is False
        assert current.json()["retention_days"] == 90
    forwarding = {
        "enabled": True,
        "target": "tls://siem.example.net:6514",
        "format": "cef",
        "min_severity": "high",
    }
    changed = _put(console, {"forwarding": forwarding, "retention_days": 30})
    assert changed.status_code == 200, changed.text
    assert changed.json()["forwarding"] == forwarding
    assert changed.json()["retention_days"] == 30
    assert changed.json()["updated_by"] == "admin-user"
    viewer = console.client.get(URL, headers=console.bearer(console.tokens["viewer"])).json()
    assert viewer["forwarding"]["target"] == "tls://siem.example.net:6514"
    with console.database.session() as session:
        stored = {row.name: row.value for row in session.scalars(select(ConsoleSetting))}
        audits = list(
            session.scalars(
                select(AuditLog).where(AuditLog.action == "settings.update").order_by(AuditLog.id)
            )
        )
    assert stored == {"forwarding": forwarding, "retention_days": 30}
    assert [(a.target, a.details["before"], a.details["after"]) for a in audits] == [
        (
            "setting:forwarding",
            {"enabled": False, "target": None, "format": "cef", "min_severity": "medium"},
            forwarding,
        ),
        ("setting:retention_days", 90, 30),
    ]
    # only the part sent changes; an unchanged value writes no audit row
    assert _put(console, {"retention_days": 30}).status_code == 200
    assert _put(console, {"retention_days": 365}).json()["forwarding"] == forwarding
    with console.database.session() as session:
        count = len(list(session.scalars(select(AuditLog).where(AuditLog.action == "settings.update"))))
    assert count == 3


def test_only_admins_change_settings(console: Console) -> None:
    for role in ("viewer", "analyst"):
        assert _put(console, {"retention_days": 7}, role).status_code == 403
    read_only = console.client.put(
        URL, json={"retention_days": 7}, headers=console.bearer(console.read_tokens["admin"])
    )
    assert read_only.status_code == 403
    with console.database.session() as session:
        assert list(session.scalars(select(ConsoleSetting))) == []


@pytest.mark.parametrize(
    "target",
    [
        "http://siem:514",
        "udp://siem",
        "udp://siem:0",
        "udp://siem:99999",
        "tcp://user:secret@siem:514",
        "tcp://siem:514/path",
        "tcp://siem:514?x=1",
        "udp://:514",
        "udp://siem:514\r\nX: y",
        "udp://si em:514",
        "file:///etc/passwd",
        "siem:514",
    ],
)
def test_hostile_forwarding_targets_are_refused(console: Console, target: str) -> None:
    response = _put(console, {"forwarding": {"enabled": True, "target": target}})
    assert response.status_code == 422, target
    with pytest.raises(ValueError, match=r"target|port|host"):
        parse_target(target)


@pytest.mark.parametrize(
    "body",
    [
        {"retention_days": 0},
        {"retention_days": 100_000},
        {"retention_days": "ten"},
        {"forwarding": {"enabled": True}},
        {"forwarding": {"enabled": False, "format": "json"}},
        {"forwarding": {"enabled": False, "min_severity": "apocalyptic"}},
        {"colour": "blue"},
        {"forwarding": {"enabled": False, "target": None, "secret": "x"}},
    ],
)
def test_invalid_settings_are_a_422(console: Console, body: dict[str, Any]) -> None:
    assert _put(console, body).status_code == 422


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("udp://10.0.0.5:514", ("udp", "10.0.0.5", 514)),
        ("tcp://[2001:db8::1]:601", ("tcp", "2001:db8::1", 601)),
        ("tls://siem.example.net:6514", ("tls", "siem.example.net", 6514)),
    ],
)
def test_valid_targets(target: str, parsed: tuple[str, str, int]) -> None:
    assert parse_target(target) == parsed
