"""FastAPI dependencies shared by every router: the database session, who is calling, and roles.

Conventions (docs/console/api.md, "Adding a router"):

- ``SessionDep``: a SQLAlchemy ``Session`` for the request. Nothing is committed implicitly: a handler
  that changes data calls ``session.commit()`` itself before returning (an uncommitted session is
  rolled back when the request ends).
- Every route declares its role with ``**access("viewer" | "analyst" | "admin")`` (or
  ``access("sensor")`` for the sensor push endpoints, ``access("public")`` for login). ``access``
  adds the enforcing dependency *and* the ``x-fieldward-role`` OpenAPI extension the security-matrix
  test reads, so the declaration and the enforcement cannot drift apart.
- ``CurrentUser`` / ``CurrentSensor``: the authenticated caller, for handlers that need it (audit
  rows, "own" resources). Resolving the caller enforces CSRF for cookie sessions and the ``write``
  scope for bearer tokens on state-changing methods.
- ``CountCacheDep``: recent totals of large lists (:class:`CountCache`), for the list pages.
- ``audit(session, actor, action, target, **details)`` adds the audit row of a change (committed
  with it).
- Errors are ``HTTPException`` with ``{"detail": "..."}``; :func:`errors` documents them in OpenAPI.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.to_thread
import orjson
from fastapi import Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.orm import Session

from fieldward.console.api.cache import DATA_VERSION, VERSION_STATE
from fieldward.console.api.schemas import MAX_LIMIT, ErrorPublic, ValidationErrorPublic
from fieldward.console.security import (
    SENSOR_PREFIX,
    USER_PREFIX,
    csrf_valid,
    hash_token,
)
from fieldward.console.settings import ConsoleSettings
from fieldward.store.console_models import ConsoleSetting
from fieldward.store.database import Database
from fieldward.store.models import ROLES, ApiToken, AuditLog, Sensor, User, utcnow

__all__ = [
    "ROLE_EXTENSION",
    "SESSION_COOKIE",
    "SESSION_SCOPE",
    "UNSAFE_METHODS",
    "CountCache",
    "CountCacheDep",
    "CurrentPrincipal",
    "CurrentSensor",
    "CurrentUser",
    "IdPath",
    "Paging",
    "PagingDep",
    "Principal",
    "Role",
    "SessionDep",
    "SettingsDep",
    "access",
    "audit",
    "count_cache",
    "errors",
    "json_body",
    "json_response",
    "require_role",
    "run_read",
]

T = TypeVar("T")

SESSION_COOKIE = "fieldward_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SCOPE = "session"
"""Scope marking an ``api_tokens`` row that is a browser session (created by login)."""
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ROLE_EXTENSION = "x-fieldward-role"
Role = Literal["public", "sensor", "viewer", "analyst", "admin"]


INT64_MAX = 2**63 - 1
IdPath = Annotated[int, Path(ge=1, le=INT64_MAX, description="Row id")]
"""A row id in a path; bounded so a huge number is a 422, not a database overflow."""


@dataclass(frozen=True, slots=True)
class Paging:
    limit: int
    offset: int


async def get_paging(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1, description="Rows to skip")] = 0,
) -> Paging:
    return Paging(limit=limit, offset=offset)


PagingDep = Annotated[Paging, Depends(get_paging)]


# Dependencies that neither block nor touch the database are ``async``: FastAPI runs a plain ``def``
# dependency in its thread pool, a hop that costs more than these functions themselves.


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_settings(request: Request) -> ConsoleSettings:
    settings: ConsoleSettings = request.app.state.settings
    return settings


class CountCache:
    """Recent totals of list pages, per worker process: ``count(key, compute)``.

    A list's ``total`` is a second statement over every matching row; on a large site that is most of
    a page's cost (a million alerts, 50 clients). Totals of at least ``minimum`` rows are kept for
    ``ttl`` seconds: such a total is a figure ("12,345 alerts"), not an exact state, and it is at most
    ``ttl`` old. Smaller totals are always computed, so a small site (and every test) sees exact
    figures after each change. When a kept total expires, one request recounts it while the others
    that ask for the same key meanwhile get the expired figure (at most ``ttl`` more, then they count
    too): no burst of identical counts when a busy page's total expires. Thread-safe (the routes run
    in FastAPI's thread pool); at most ``size`` keys (the oldest go first).
    """

    def __init__(self, ttl: float = 10.0, minimum: int = 1000, size: int = 4096) -> None:
        self.ttl = ttl
        self.minimum = minimum
        self.size = size
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, int]] = {}
        self._counting: set[Hashable] = set()

    def count(self, key: Hashable, compute: Callable[[], int]) -> int:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                expires, value = entry
                if expires > now or (key in self._counting and now < expires + self.ttl):
                    return value
            self._counting.add(key)
        try:
            value = compute()
        finally:
            with self._lock:
                self._counting.discard(key)
        with self._lock:
            if value >= self.minimum and self.ttl > 0:
                self._entries.pop(key, None)
                self._entries[key] = (time.monotonic() + self.ttl, value)
                while len(self._entries) > self.size:
                    self._entries.pop(next(iter(self._entries)))
            else:
                self._entries.pop(key, None)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def count_cache(request: Request) -> CountCache:
    """The application's :class:`CountCache` (``app.state.count_cache``; created when absent).

    The list pages call it directly rather than through ``Depends``: every dependency FastAPI
    solves costs a pass of its machinery per request, more than this function itself."""
    cache = getattr(request.app.state, "count_cache", None)
    if not isinstance(cache, CountCache):
        cache = CountCache()
        request.app.state.count_cache = cache
    return cache


async def get_count_cache(request: Request) -> CountCache:
    """:func:`count_cache` as a dependency."""
    return count_cache(request)


CountCacheDep = Annotated[CountCache, Depends(get_count_cache)]


JSON_MEDIA_TYPE = "application/json"
JSON_OPTIONS = orjson.OPT_UTC_Z


def json_response(content: Any) -> Response:
    """``content`` (dicts, lists, str, int, bool, None and aware UTC datetimes) encoded by orjson.

    For the hot list pages: the route builds plain dicts of the exact shape of its ``response_model``
    and returns them through this, so FastAPI neither validates each row with pydantic nor encodes it
    a second time (the ``response_model`` still documents the answer in OpenAPI). The bytes equal
    pydantic's JSON of the same values (UTC times with ``Z``, microseconds only when not zero);
    ``tests/console/test_perf_lists.py`` checks the pages against the models.
    """
    return Response(json_body(content), media_type=JSON_MEDIA_TYPE)


def json_body(content: Any) -> bytes:
    """The bytes :func:`json_response` sends (for answers kept by ``api/cache.py``)."""
    return orjson.dumps(content, option=JSON_OPTIONS)


READ_METHODS = frozenset({"GET", "HEAD"})
AUTOCOMMIT_READ = "fieldward.autocommit_read"
"""``Session.info`` key of a request's autocommit read session (PostgreSQL ``GET``)."""


def _read_engine(request: Request, database: Database) -> Engine:
    """The database's engine in autocommit mode (``app.state.read_engine``; it shares the pool)."""
    engine = getattr(request.app.state, "read_engine", None)
    if not isinstance(engine, Engine) or engine.pool is not database.engine.pool:
        engine = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        request.app.state.read_engine = engine
    return engine


async def get_session(
    request: Request, database: Annotated[Database, Depends(get_database)]
) -> AsyncIterator[Session]:
    """A session per request; handlers commit their changes explicitly.

    On PostgreSQL a ``GET`` runs in autocommit mode: no ``BEGIN`` / ``ROLLBACK`` round trips around
    statements that only read (each statement sees its own snapshot; the few writes of a ``GET``, a
    token's ``last_used`` or the day's risk snapshot, commit as they run). Such a session is opened
    and closed on the event loop: creating one does no I/O and closing it hands the connection back
    without a round trip (nothing to roll back), so a page costs no thread-pool hops for it. Other
    sessions are closed in the thread pool (their rollback is a round trip).
    """
    if request.method in READ_METHODS and database.dialect == "postgresql":
        session = Session(bind=_read_engine(request, database), expire_on_commit=False)
        session.info[AUTOCOMMIT_READ] = True
        try:
            yield session
        finally:
            session.close()
        return
    session = database.sessionmaker()
    try:
        yield session
    finally:
        await run_in_threadpool(session.close)


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[ConsoleSettings, Depends(get_settings)]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user and the credential it came with."""

    user_id: int
    username: str
    role: str
    token_id: int
    scopes: tuple[str, ...]
    via: Literal["session", "token"]

    def at_least(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _unauthorized(detail: str = "not authenticated") -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise _unauthorized("malformed Authorization header (expected 'Bearer <token>')")
    return value.strip()


def _touch(
    session: Session, token_id: int, last: dt.datetime | None, settings: ConsoleSettings, now: dt.datetime
) -> None:
    if last is None or (now - last).total_seconds() >= settings.token_touch_seconds:
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used=now))
        session.commit()


_CREDENTIAL = (
    select(
        ApiToken.id,
        ApiToken.scopes,
        ApiToken.revoked,
        ApiToken.expires,
        ApiToken.last_used,
        User.id,
        User.username,
        User.role,
        User.active,
        select(ConsoleSetting.value).where(ConsoleSetting.name == DATA_VERSION).scalar_subquery(),
    )
    .join(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)
"""The credential look-up of every request: built once (its cache key is computed once), and the
columns it needs rather than two ORM objects. It also reads the data version of the list pages'
cache (``api/cache.py``) in the same round trip, left on ``request.state.data_version``."""


READ_THREADS = 4
"""Threads of each worker process that run the hot reads: every request's credential look-up and the
list pages (:func:`run_read`)."""


def _read_limiter(request: Request) -> anyio.CapacityLimiter:
    """The application's :data:`READ_THREADS` limiter of the running event loop."""
    loop = asyncio.get_running_loop()
    entry = getattr(request.app.state, "read_limiter", None)
    if not isinstance(entry, tuple) or entry[0] is not loop:
        entry = (loop, anyio.CapacityLimiter(READ_THREADS))
        request.app.state.read_limiter = entry
    limiter: anyio.CapacityLimiter = entry[1]
    return limiter


async def run_read(request: Request, work: Callable[[], T]) -> T:
    """Run ``work`` (blocking database reads) on one of :data:`READ_THREADS` threads, in turn.

    FastAPI runs a plain ``def`` route or dependency in a pool of 40 threads. Under 50 concurrent
    clients those 40 threads take turns at the GIL every few milliseconds, so every request in a
    worker advances a little at a time and a page's latency is set by the slowest of the crowd (a
    p95 several times the median). Here at most :data:`READ_THREADS` run at once, enough to keep
    PostgreSQL busy while one thread runs Python, and the others wait in first-come order; the
    throughput is the same, the tail is not.
    """
    return await anyio.to_thread.run_sync(work, limiter=_read_limiter(request))


async def get_principal(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    """The calling user, from a bearer token (``fwt_``) or the session cookie.

    401 without a valid, unexpired, unrevoked credential of an active user; 403 for a cookie write
    without the CSRF header or a write with a read-only token. The look-up runs in :func:`run_read`.
    """
    return await run_read(request, lambda: _principal(request, session, settings))


def _principal(request: Request, session: Session, settings: ConsoleSettings) -> Principal:
    principal = _resolve_principal(request, session, settings)
    if session.info.get(AUTOCOMMIT_READ):
        # Hand the connection back (no round trip in autocommit): a request waiting for a
        # READ_THREADS turn must not hold one, or the turns' holders may wait for connections held
        # by the waiting requests. The route checks one out again when it runs.
        session.close()
    return principal


def _resolve_principal(request: Request, session: Session, settings: ConsoleSettings) -> Principal:
    secret = _bearer(request)
    via: Literal["session", "token"] = "token"
    if secret is None:
        secret = request.cookies.get(SESSION_COOKIE)
        via = "session"
        if not secret:
            raise _unauthorized()
    if not secret.startswith(USER_PREFIX) or len(secret) > 200:
        raise _unauthorized("not a user credential")
    now = utcnow()
    row = session.execute(_CREDENTIAL, {"token_hash": hash_token(secret)}).first()
    if row is None:
        raise _unauthorized("invalid credential")
    token_id, scopes, revoked, expires, last_used, user_id, username, role, active, version = row
    is_session = SESSION_SCOPE in scopes
    if (via == "session") != is_session:  # a session secret is no bearer token and vice versa
        raise _unauthorized("invalid credential")
    if revoked is not None or (expires is not None and expires <= now):
        raise _unauthorized("credential expired or revoked")
    if not active:
        raise _unauthorized("account disabled")
    if request.method in UNSAFE_METHODS:
        if via == "session" and not csrf_valid(secret, request.headers.get(CSRF_HEADER)):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing or invalid CSRF token")
        if via == "token" and "write" not in scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this token is read-only")
    _touch(session, token_id, last_used, settings, now)
    setattr(request.state, VERSION_STATE, version)
    return Principal(
        user_id=user_id,
        username=username,
        role=role,
        token_id=token_id,
        scopes=tuple(scopes),
        via=via,
    )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
CurrentUser = CurrentPrincipal


def require_role(role: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets through users of ``role`` or a higher one (403 otherwise)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.at_least(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"needs the {role} role")
        return principal

    check.__name__ = f"require_{role}"
    return check


def get_sensor(request: Request, session: SessionDep) -> Sensor:
    """The calling sensor, from its bearer token (``fws_``); 401 otherwise."""
    secret = _bearer(request)
    if secret is None:
        raise _unauthorized()
    if not secret.startswith(SENSOR_PREFIX) or len(secret) > 200:
        raise _unauthorized("not a sensor credential")
    sensor = session.scalars(select(Sensor).where(Sensor.credential_hash == hash_token(secret))).first()
    if sensor is None:
        raise _unauthorized("invalid credential")
    return sensor


CurrentSensor = Annotated[Sensor, Depends(get_sensor)]


def _public() -> None:
    return None


def access(
    role: Role, *codes: int, responses: dict[int | str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Route keyword arguments declaring and enforcing ``role``, plus the route's other documented
    error ``codes``: ``@router.get("/{id}", **access("admin", 404))``. ``responses`` adds further
    OpenAPI responses (e.g. a binary 200 ``content``), merged over the generated ones."""
    if role == "public":
        dependency: Callable[..., Any] = _public
    elif role == "sensor":
        dependency = get_sensor
    else:
        dependency = require_role(role)
    auth: tuple[int, ...] = () if role == "public" else (401,) if role == "sensor" else (401, 403)
    documented = errors(*auth, *codes)
    for code, extra in (responses or {}).items():
        documented[code] = {**documented.get(code, {}), **extra}
    return {
        "dependencies": [Depends(dependency)],
        "openapi_extra": {ROLE_EXTENSION: role},
        "responses": documented,
    }


_ERROR_TEXT = {
    400: "Bad request",
    401: "Not authenticated (no, invalid, expired or revoked credential)",
    403: "Forbidden (role too low, read-only token, or missing CSRF token)",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Invalid parameters or body",
    429: "Too many attempts; retry after the Retry-After seconds",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error status codes (all ``{"detail": ...}``)."""
    return {
        code: {
            "model": ValidationErrorPublic if code == 422 else ErrorPublic,
            "description": _ERROR_TEXT.get(code, "Error"),
        }
        for code in codes
    }


def audit(session: Session, actor: str, action: str, target: str | None = None, **details: Any) -> None:
    """Add the audit row of a change; it is committed with the change."""
    session.add(AuditLog(actor=actor[:200], action=action[:100], target=target, details=details))
