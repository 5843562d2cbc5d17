"""schemathesis against the console's OpenAPI document (ASGI transport, the demo plant ingested):
no 500s and no response that breaks the documented schema, status codes or content types.

Authenticated as an administrator, so every operation runs past authorization. The operations that
can lock the caller out (changing or deleting users, revoking tokens, deleting sensors) are fuzzed in
a second test whose every example brings a fresh administrator token.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection

from fieldward.console.app import create_app
from fieldward.console.security import USER_PREFIX, hash_password, new_token
from fieldward.console.settings import ConsoleSettings
from fieldward.store.ingest import ingest_folder
from fieldward.store.models import ApiToken, User

from .conftest import Console, start_console

pytestmark = pytest.mark.slow  # the whole document, every router: about a minute on the 2-core machine

DESTRUCTIVE = ["users_update", "users_delete", "tokens_revoke", "sensors_delete"]
EXAMPLES = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
_PASSWORD_HASH = hash_password(uuid.uuid4().hex)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, demo_folder: Path) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("fuzz")
    for console in start_console(f"sqlite:///{tmp / 'console.db'}", tmp):
        ingest_folder(console.database, demo_folder, "plant")
        yield console


def fresh_admin(console: Console) -> str:
    """A new administrator with a read/write token (cheap: the password hash is shared)."""
    secret, digest = new_token(USER_PREFIX)
    with console.database.session() as session:
        user = User(username=f"fuzz-{uuid.uuid4().hex[:12]}", password_hash=_PASSWORD_HASH, role="admin")
        session.add(user)
        session.flush()
        session.add(ApiToken(user_id=user.id, name="fuzz", token_hash=digest, scopes=["read", "write"]))
    return secret


@schemathesis.serializer("application/vnd.tcpdump.pcap")
def _pcap(context: Any, value: Any) -> dict[str, Any]:
    """Evidence uploads are raw bytes (schemathesis knows no serializer for the pcap media type)."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    return {"data": data}


@schemathesis.serializer("application/vnd.apache.parquet")
def _parquet(context: Any, value: Any) -> dict[str, Any]:
    """Columnar pushes are raw Parquet bytes (no serializer for that media type either)."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    return {"data": data}


MULTIPART = {"feeds_import", "uploads_create"}
"""File uploads: a fuzzed ``null`` or ``false`` file part is sent as the text "null", which is a
valid (if useless) file, so the negative-data check cannot hold there; the routes' own tests cover
bad files."""


def _excluded(case: Any) -> list[Any]:
    return [negative_data_rejection] if case.operation.definition.raw.get("operationId") in MULTIPART else []


# The document of an app on a throw-away in-memory database; the cases run against ``fuzzed.app``.
schema = schemathesis.openapi.from_dict(create_app(ConsoleSettings(database_url="sqlite://")).openapi())
# FIELDWARD_FUZZ_ONLY=<regex of operation ids> narrows the run while debugging one router.
if os.environ.get("FIELDWARD_FUZZ_ONLY"):
    schema = schema.include(operation_id_regex=os.environ["FIELDWARD_FUZZ_ONLY"])


@schema.exclude(operation_id=DESTRUCTIVE).parametrize()
@EXAMPLES
def test_the_api_keeps_its_documented_promises(case: Any, fuzzed: Console) -> None:
    case.call_and_validate(
        app=fuzzed.app, headers=fuzzed.bearer(fuzzed.tokens["admin"]), excluded_checks=_excluded(case)
    )


@schema.include(operation_id=DESTRUCTIVE).parametrize()
@EXAMPLES
def test_destructive_operations_keep_their_promises(case: Any, fuzzed: Console) -> None:
    case.call_and_validate(
        app=fuzzed.app, headers=fuzzed.bearer(fresh_admin(fuzzed)), excluded_checks=_excluded(case)
    )
