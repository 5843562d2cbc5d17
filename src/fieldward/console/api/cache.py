"""Server-side cache of the list pages, valid while the data they were computed from is unchanged.

The inventory (``GET /devices``) and the alert queue (``GET /alerts``) are what the UI polls: under
50 analysts' browsers most requests repeat a page another request computed a moment ago. Each worker
process keeps the answers (:class:`ResponseCache`, bounded LRU), keyed by the endpoint, the caller's
role and the *validated* query parameters (so ``?limit=050`` and ``?limit=50`` share an entry, and a
made-up parameter does not make a new one), and serves one only while

- the **data version** is the one it was computed under: ``console_settings`` row
  :data:`DATA_VERSION`, a random value every console writer of devices, alerts or evidence replaces
  in its own short transaction *after* its commit (:func:`bump_data_version`), and which every
  request reads in the same statement as its credential (``deps._CREDENTIAL``: no extra round
  trip); in the database, so a write through one worker process invalidates the others;
- and it is younger than ``ConsoleSettings.list_cache_seconds`` (2 s): the safety net for writers
  outside the console (``fieldward ingest`` into the same database, SQL by hand).

Why this is never stale for a client's own write: the writer's bump is committed before its
response is sent, so any request the client sends afterwards reads the new version; an entry is
tagged with the version its request read *before* running the page's SQL, so an entry carrying
the new version was computed from data that includes the write. A miss is computed once per key
and version by a worker: requests that ask for it meanwhile wait for that computation (no burst of
identical queries after each invalidation).

Every answer carries a strong ``ETag`` (a digest of its bytes) and ``Cache-Control: private,
no-cache`` (the browser revalidates every time); a request whose ``If-None-Match`` names the current
``ETag`` gets ``304 Not Modified`` without a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from fieldward.console.settings import ConsoleSettings
from fieldward.store.console_models import ConsoleSetting
from fieldward.store.database import Database
from fieldward.store.models import utcnow

__all__ = [
    "CACHE_HEADER",
    "DATA_VERSION",
    "NOT_MODIFIED",
    "CachedPage",
    "ResponseCache",
    "bump_data_version",
    "cached_page",
    "response_cache",
]

DATA_VERSION = "data_version"
"""Name of the ``console_settings`` row holding the data version (a random hex string)."""
DATA_VERSION_ACTOR = "console"
VERSION_STATE = "data_version"
"""``request.state`` attribute where the credential look-up leaves the data version it read."""
CACHE_HEADER = "X-FieldWard-Cache"
"""Response header: ``hit`` (served from the cache), ``miss`` (computed) or ``off``."""
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the If-None-Match request header names the current ETag (no body)"}
}
"""OpenAPI ``responses`` of a cached list page (``access(..., responses=NOT_MODIFIED)``)."""
JSON_MEDIA_TYPE = "application/json"
CACHE_CONTROL = "private, no-cache"


def _upsert(dialect: str) -> Any:
    value = uuid.uuid4().hex
    now = utcnow()
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(ConsoleSetting).values(
        name=DATA_VERSION, value=value, updated_by=DATA_VERSION_ACTOR, updated=now
    )
    return statement.on_conflict_do_update(
        index_elements=[ConsoleSetting.name],
        set_={"value": statement.excluded.value, "updated": statement.excluded.updated},
    )


def bump_data_version(target: Session | Database | Engine) -> None:
    """Mark the console's data changed: the list pages' cached answers are no longer served.

    Call it *after* the commit of a write to devices, alerts or evidence, before answering. With a
    ``Session`` (committed, nothing pending) the bump is that session's own next short transaction;
    with a ``Database`` or ``Engine`` a transaction of its own. One upsert of one row: writers never
    read the old value, so concurrent bumps only queue on the row lock for a moment.
    """
    if isinstance(target, Session):
        bind = target.get_bind()
        target.execute(_upsert(bind.dialect.name))
        target.commit()
        return
    engine = target.engine if isinstance(target, Database) else target
    with engine.begin() as connection:
        connection.execute(_upsert(engine.dialect.name))


@dataclass(frozen=True, slots=True)
class CachedPage:
    """One kept answer: its bytes, strong ETag, the data version it was computed under and when."""

    body: bytes
    etag: str
    version: Any
    created: float


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


class ResponseCache:
    """Answers of the list pages per worker process: at most ``entries`` keys and ``max_bytes`` of
    bodies (least recently used go first), each served for ``max_age`` seconds at most and only under
    the data version it was computed with. ``max_age`` 0 turns the cache off."""

    def __init__(self, max_age: float = 2.0, entries: int = 512, max_bytes: int = 64 << 20) -> None:
        self.max_age = max_age
        self.entries = entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._pages: OrderedDict[Hashable, CachedPage] = OrderedDict()
        self._bytes = 0
        self._pending: dict[tuple[Hashable, Any], asyncio.Future[CachedPage | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.max_age > 0 and self.entries > 0

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, key: Hashable, version: Any) -> CachedPage | None:
        """The kept answer of ``key`` when it was computed under ``version`` and is fresh enough."""
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                return None
            if page.version != version or time.monotonic() - page.created >= self.max_age:
                self._drop(key)
                return None
            self._pages.move_to_end(key)
            return page

    def put(self, key: Hashable, page: CachedPage) -> None:
        size = len(page.body)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._pages:
                self._drop(key)
            self._pages[key] = page
            self._bytes += size
            while len(self._pages) > self.entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._pages)))

    def _drop(self, key: Hashable) -> None:
        page = self._pages.pop(key, None)
        if page is not None:
            self._bytes -= len(page.body)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._bytes = 0


def response_cache(request: Request) -> ResponseCache:
    """The application's :class:`ResponseCache` (``app.state.response_cache``; created from the
    settings when absent)."""
    cache = getattr(request.app.state, "response_cache", None)
    if not isinstance(cache, ResponseCache):
        settings = getattr(request.app.state, "settings", None)
        if isinstance(settings, ConsoleSettings):
            cache = ResponseCache(
                settings.list_cache_seconds, settings.list_cache_entries, settings.list_cache_bytes
            )
        else:
            cache = ResponseCache()
        request.app.state.response_cache = cache
    return cache


def _matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` (a list of entity tags, weak or strong, or ``*``) names ``etag``."""
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _answer(request: Request, page: CachedPage, state: str) -> Response:
    headers = {"ETag": page.etag, "Cache-Control": CACHE_CONTROL, CACHE_HEADER: state}
    if _matches(request.headers.get("if-none-match"), page.etag):
        return Response(status_code=304, headers=headers)
    return Response(page.body, media_type=JSON_MEDIA_TYPE, headers=headers)


async def cached_page(
    request: Request,
    key: Hashable,
    compute: Callable[[], bytes],
    run: Callable[[Request, Callable[[], bytes]], Any],
) -> Response:
    """The answer of a list page: from the cache when ``key`` was computed under the data version this
    request read (``request.state.data_version``, set by the credential look-up), else computed by
    ``await run(request, compute)`` (the JSON bytes) and kept.

    A request without a data version (no credential look-up ran) is computed and not kept.
    """
    cache = response_cache(request)
    if not cache.enabled or not hasattr(request.state, VERSION_STATE):
        body: bytes = await run(request, compute)
        return _answer(request, CachedPage(body, etag_of(body), None, 0.0), "off")
    version = getattr(request.state, VERSION_STATE)
    page = cache.get(key, version)
    if page is not None:
        cache.hits += 1
        return _answer(request, page, "hit")
    pending = cache._pending.get((key, version))
    if pending is not None:
        shared = await asyncio.shield(pending)
        if shared is not None:
            cache.hits += 1
            return _answer(request, shared, "hit")
    cache.misses += 1
    future: asyncio.Future[CachedPage | None] = asyncio.get_running_loop().create_future()
    cache._pending[(key, version)] = future
    computed: CachedPage | None = None
    started = time.monotonic()  # the age counts from before the SQL ran
    try:
        body = await run(request, compute)
        computed = CachedPage(body, etag_of(body), version, started)
        cache.put(key, computed)
    finally:
        # The waiters recompute themselves when this computation failed (None).
        future.set_result(computed)
        if cache._pending.get((key, version)) is future:
            del cache._pending[(key, version)]
    return _answer(request, computed, "miss")
