"""Every endpoint of the OpenAPI document declares its role and refuses callers below it.

The operations are enumerated from ``app.openapi()``, so a router added later (alerts, feeds, ...) is
covered without touching this file: an anonymous caller gets 401; a caller one role too low gets 403
(for ``viewer`` endpoints: a sensor credential, 401); a read-only token and a cookie without the CSRF
header cannot change anything (403); the sensor push endpoints refuse user credentials.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fieldward.console.api.deps import ROLE_EXTENSION

from .conftest import PASSWORD, Console

ROLES = ("public", "sensor", "viewer", "analyst", "admin")
PUBLIC = {"auth_login"}
BELOW = {"analyst": "viewer", "admin": "analyst"}
SAMPLE_PATH_VALUES = {"kind": "devices"}


def _operations(console: Console) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in console.app.openapi()["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                found.append((method.upper(), path, operation))
    return found


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH_VALUES.get(m.group(1), "1"), path)


def _call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    body = {} if method in {"POST", "PUT", "PATCH"} else None
    return client.request(method, _url(path), json=body, headers=headers or {}).status_code


def test_every_operation_declares_a_role_an_id_and_its_answers(console: Console) -> None:
    operations = _operations(console)
    assert len(operations) >= 17
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    for method, path, operation in operations:
        where = f"{method} {path}"
        assert operation.get(ROLE_EXTENSION) in ROLES, f"{where} declares no role"
        assert re.fullmatch(r"[a-z]+_[a-z_]+", operation["operationId"]), where
        domain = path.split("/")[3]
        assert operation["operationId"].split("_")[0] == domain, where
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert success, where
        assert "schema" in operation["responses"][success[0]]["content"]["application/json"], where
        if operation[ROLE_EXTENSION] != "public":
            assert "401" in operation["responses"], where
        if operation[ROLE_EXTENSION] in {"viewer", "analyst", "admin"}:
            assert "403" in operation["responses"], where
    assert {op["operationId"] for _, _, op in operations if op[ROLE_EXTENSION] == "public"} == PUBLIC


def test_anonymous_callers_are_refused_everywhere(console: Console) -> None:
    client = console.new_client()
    refused = {}
    for method, path, operation in _operations(console):
        if operation[ROLE_EXTENSION] == "public":
            continue
        refused[f"{method} {path}"] = _call(client, method, path)
    assert refused
    assert set(refused.values()) == {401}, refused


def test_callers_below_the_role_are_refused(console: Console) -> None:
    client = console.new_client()
    answers = {}
    for method, path, operation in _operations(console):
        role = operation[ROLE_EXTENSION]
        if role == "public":
            continue
        if role == "sensor":
            answers[f"{method} {path}"] = (
                _call(client, method, path, console.bearer(console.tokens["admin"])),
                401,
            )
        elif role == "viewer":
            answers[f"{method} {path}"] = (
                _call(client, method, path, console.bearer(console.sensor_token)),
                401,
            )
        else:
            token = console.tokens[BELOW[role]]
            answers[f"{method} {path}"] = (_call(client, method, path, console.bearer(token)), 403)
    wrong = {where: got for where, (got, expected) in answers.items() if got != expected}
    assert answers
    assert wrong == {}


def test_read_only_tokens_and_cookies_without_csrf_cannot_change_anything(console: Console) -> None:
    client = console.new_client()
    console.login(client, "admin-user", PASSWORD)
    bearer = console.new_client()
    answers = {}
    for method, path, operation in _operations(console):
        if method == "GET" or operation[ROLE_EXTENSION] in {"public", "sensor"}:
            continue
        read_only = _call(bearer, method, path, console.bearer(console.read_tokens["admin"]))
        without_csrf = _call(client, method, path)
        answers[f"{method} {path}"] = (read_only, without_csrf)
    assert answers
    assert set(answers.values()) == {(403, 403)}, answers


@pytest.mark.parametrize("role", ["viewer", "analyst", "admin"])
def test_reads_are_open_to_every_role_that_may_read_them(console: Console, role: str) -> None:
    """The positive side of the matrix: a caller at the role gets past authorization on every GET."""
    client = console.new_client()
    rank = ("viewer", "analyst", "admin").index(role)
    for method, path, operation in _operations(console):
        declared = operation[ROLE_EXTENSION]
        if method != "GET" or declared not in ("viewer", "analyst", "admin"):
            continue
        status = _call(client, method, path, console.bearer(console.tokens[role]))
        if ("viewer", "analyst", "admin").index(declared) <= rank:
            assert status in (200, 404), f"{role} GET {path}: {status}"
        else:
            assert status == 403, f"{role} GET {path}: {status}"
