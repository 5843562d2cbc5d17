"""The console's FastAPI application: ``create_app(settings)``.

Start-up (the lifespan) migrates the database to the newest revision and, on a database without
users, creates the first administrator with a generated password (:func:`bootstrap`); the password
is kept on ``app.state.first_admin_password`` for ``fieldward serve`` to print once and is never
logged. Pure-ASGI middlewares wrap every response: request bodies are capped (413; the feeds upload
is streamed with its own, larger cap, :func:`feed_limit`), an API path called with a method it does
not serve answers 405 with ``Allow`` (not the web UI's catch-all), and security headers are set
(CSP ``default-src 'self'``, ``frame-ancestors 'none'``, ``nosniff``, no referrer).
The OpenAPI document is served at ``/api/v1/openapi.json``; there is no Swagger page, since it would
load scripts from a CDN and the console must work air-gapped.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fieldward import __version__
from fieldward.console import models as _console_models  # noqa: F401  (registers ingest_batches)
from fieldward.console.api.deps import CountCache
from fieldward.console.api.routes import API_PREFIX, ROUTERS
from fieldward.console.api.routes.uploads import UPLOADS_PATH, upload_limit
from fieldward.console.jobs import JobLock, RetentionJob, shared_store, upload_jobs
from fieldward.console.security import LoginLimiter, generate_password, hash_password
from fieldward.console.settings import ConsoleSettings
from fieldward.console.trust_hooks import build_trust, mount_trust
from fieldward.store.database import Database
from fieldward.store.models import AuditLog, User

__all__ = [
    "DEFAULT_MAX_FEED_BYTES",
    "FEEDS_IMPORT_PATH",
    "SECURITY_HEADERS",
    "allowed_methods",
    "bootstrap",
    "create_app",
    "feed_limit",
]

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def bootstrap(database: Database, settings: ConsoleSettings) -> str | None:
    """Migrate ``database`` and create the first administrator when there is no user at all.

    Returns that administrator's generated password (to be shown once), or None when users exist.
    """
    database.upgrade()
    with database.sessionmaker() as session:
        if int(session.scalar(select(func.count()).select_from(User)) or 0) > 0:
            return None
        password = generate_password()
        session.add(User(username=settings.first_admin, password_hash=hash_password(password), role="admin"))
        session.add(
            AuditLog(
                actor="system",
                action="user.create",
                target=settings.first_admin,
                details={"role": "admin", "reason": "first start"},
            )
        )
        try:
            session.commit()
        except IntegrityError:  # another worker created it at the same moment
            return None
        return password


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` (and ``Cache-Control: no-store`` on the API) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = str(scope.get("path", "")).startswith(API_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = dict(SECURITY_HEADERS)
                if api:
                    extra["Cache-Control"] = "no-store"
                for name, value in extra.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses request bodies above the limit with 413 before the application reads them.

    Sensor pushes (``/api/v1/ingest``) get ``settings.max_ingest_bytes``, everything else
    ``settings.max_request_bytes``. A declared ``Content-Length`` is checked first; a chunked body
    is buffered up to the limit and replayed to the application.
    """

    def __init__(self, app: ASGIApp, settings: ConsoleSettings) -> None:
        self.app = app
        self.settings = settings

    async def _too_large(self, send: Send, limit: int) -> None:
        body = orjson.dumps({"detail": f"request body larger than {limit} bytes"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if path == FEEDS_IMPORT_PATH:
            await self._streamed(scope, receive, send, feed_limit(self.settings))
            return
        if path == UPLOADS_PATH:
            await self._streamed(scope, receive, send, upload_limit(self.settings))
            return
        ingest = path.startswith(f"{API_PREFIX}/ingest")
        limit = self.settings.max_ingest_bytes if ingest else self.settings.max_request_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await self._too_large(send, limit)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _streamed(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Pass the body through as it arrives (the feeds upload: tens or hundreds of MB, which the
        multipart parser spools to disk), counting it: above ``limit`` the client gets 413 and the
        application sees a disconnect, so it stops reading and its own answer is dropped."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await self._too_large(send, limit)
                    return
        size = 0
        refused = False

        async def counted() -> Message:
            nonlocal size, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    refused = True
                    await self._too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise
            # The application failed on the body cut short (e.g. Starlette's ClientDisconnect while
            # parsing the form); the client already has its 413.


FEEDS_IMPORT_PATH = f"{API_PREFIX}/feeds/import"
"""The one path whose body is streamed and capped by :func:`feed_limit` instead of
``max_request_bytes``."""
DEFAULT_MAX_FEED_BYTES = 512 * 1024 * 1024
"""Request cap of a feeds upload (NVD yearly files are 10-50 MB gzipped, a few hundred MB plain)."""


def feed_limit(settings: ConsoleSettings) -> int:
    """The feeds upload's request cap: ``settings.max_feed_bytes`` when the settings have that field,
    else ``$FIELDWARD_MAX_FEED_BYTES``, else :data:`DEFAULT_MAX_FEED_BYTES` (512 MiB)."""
    configured = getattr(settings, "max_feed_bytes", None)
    if isinstance(configured, int) and configured > 0:
        return configured
    text = os.environ.get("FIELDWARD_MAX_FEED_BYTES", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    return DEFAULT_MAX_FEED_BYTES


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """The methods the API serves on the request's path (the web UI's catch-all GET excluded)."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**scope, "method": method})[0] is Match.FULL
            for route in routes
            if getattr(route, "include_in_schema", True)
        )
    ]


def _method_not_allowed(allowed: list[str]) -> JSONResponse:
    headers = {"Allow": ", ".join(sorted(allowed))} if allowed else None
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTP error, except that a 405 lists in ``Allow`` the methods of *every*
    route on the path (Starlette names only the first route's, e.g. GET but not POST)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    return _method_not_allowed(allowed_methods(request.app.router.routes, request.scope))


class ApiMethods:
    """405 (with ``Allow``) for an API path called with a method it does not serve.

    Without it, the web UI's catch-all ``GET /{path}`` would answer a ``GET`` on a POST-only API
    path with its JSON 404 instead of the 405 that HTTP (RFC 9110) asks for.
    """

    MAX_REMEMBERED = 4096
    """(method, root path, path) answers remembered: a list page's path repeats, so the pass over
    every route (about a fifth of an uncached list request's CPU) runs once per path and method."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        self._served: OrderedDict[tuple[str, str, str], bool] = OrderedDict()

    def _is_served(self, scope: Scope) -> bool:
        key = (str(scope.get("method", "")), str(scope.get("root_path", "")), str(scope.get("path", "")))
        served = self._served.get(key)
        if served is None:
            served = any(
                route.matches(scope)[0] is Match.FULL
                for route in self.routes
                if getattr(route, "include_in_schema", True)
            )
            self._served[key] = served
            if len(self._served) > self.MAX_REMEMBERED:  # bounded: ids in paths make new keys
                self._served.popitem(last=False)
        return served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and str(scope.get("path", "")).startswith(f"{API_PREFIX}/"):
            served = self._is_served(scope)
            if not served:  # the common case costs one pass; the Allow list only for a miss
                allowed = allowed_methods(self.routes, scope)
                if allowed and not (scope.get("method") == "HEAD" and "GET" in allowed):
                    await _method_not_allowed(allowed)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, safe for bodies that are not text: FastAPI echoes the offending ``input``, and
    raw bytes that are not UTF-8 would make its own encoder fail (a 500)."""
    assert isinstance(exc, RequestValidationError)
    lossy = {bytes: lambda data: data.decode("utf-8", "replace")}
    detail = jsonable_encoder(exc.errors(), custom_encoder=lossy)
    return JSONResponse({"detail": detail}, status_code=422)


def _document_transport_errors(app: FastAPI) -> None:
    """Document the answers every state-changing operation can give before its handler runs: 400 for
    an unparsable body (FastAPI) and 413 for an oversized one (:class:`BodyLimit`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}
        for item in document.get("paths", {}).values():
            for method, operation in item.items():
                if method not in ("post", "put", "patch", "delete"):
                    continue
                responses = operation.setdefault("responses", {})
                responses.setdefault("400", {"description": "Malformed request body", "content": error})
                responses.setdefault("413", {"description": "Request body too large", "content": error})
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    """The console application for ``settings`` (defaults: :meth:`ConsoleSettings.load`: the worker
    settings file of ``fieldward serve --workers N``, else the environment)."""
    settings = settings if settings is not None else ConsoleSettings.load()
    database = Database(settings.url())
    trust = build_trust(settings, database)  # None unless settings.trust (docs/trust/console.md)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.first_admin_password = bootstrap(database, settings)
        lock = JobLock(database.engine, "retention")  # one worker process runs it (docs/console/api.md)
        retention = RetentionJob(settings, database.sessionmaker, store=shared_store(app), lock=lock)
        retention.start()
        if trust is not None:
            trust.start()  # the alert response and (with a broker) the broker sync jobs
        try:
            yield
        finally:
            retention.stop()
            upload_jobs(app).shutdown()
            shared_store(app).close()
            if trust is not None:
                trust.close()
            database.dispose()

    app = FastAPI(
        title="FieldWard console API",
        version=__version__,
        description="Inventory, network map, alerts and sensors of FieldWard. See docs/console/api.md.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.max_feed_bytes = feed_limit(settings)
    app.state.count_cache = CountCache()
    app.state.first_admin_password = None
    attempts, window = settings.login_rate
    app.state.login_limiter = LoginLimiter(attempts, window, database=database)
    # Each domain's router on the app itself, not under one /api/v1 router: FastAPI (0.16x) matches
    # an included router lazily, twice per level (to find the route, then to run it), so a level less
    # is 50-190 µs less CPU per API request (docs/console/performance.md, seventh round). The same
    # routes in the same order: the OpenAPI document is unchanged.
    for domain in ROUTERS:
        app.include_router(domain, prefix=API_PREFIX)
    app.state.trust = None
    if trust is not None:
        mount_trust(app, trust)  # /.well-known/est, /trust, /updates: before the UI's catch-all
    if settings.ui:
        from fieldward.console.ui import mount_ui

        mount_ui(app)  # after every API router: its catch-all serves the single-page app
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    _document_transport_errors(app)
    app.add_middleware(ApiMethods, routes=app.router.routes)
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(SecurityHeaders)
    return app
