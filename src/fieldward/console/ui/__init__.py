"""The console's web UI: static assets served by FieldWard itself (air-gapped, no CDN, no build step).

The UI is a single-page application of plain ES modules and CSS in ``ui/static/``; it talks only to
the REST API under ``/api/v1`` (and reads ``/openapi.json`` to find which endpoints exist).
:func:`mount_ui` adds to an application, after its API routers:

- ``/assets/<build>/...``: the files of ``static/`` (:class:`AssetFiles`). ``<build>`` is a hash of
  their content, so a response can be cached for a year (``immutable``) and an upgrade still reaches
  every browser: ``index.html`` names the new build.
- every other ``GET`` outside ``/api/`` (``/``, ``/devices/12``, ...): ``index.html`` (the SPA's
  client-side router takes it from there), ``Cache-Control: no-cache``.

Every UI response carries a strict Content-Security-Policy (``default-src 'self'``, no inline script
or style), ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
``Referrer-Policy: no-referrer``. Security of the data itself (every network-sourced string is
rendered as text) is the JavaScript's job; see docs/console/ui.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["ASSET_CACHE", "CSP", "STATIC_DIR", "AssetFiles", "asset_build", "mount_ui", "security_headers"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
"""The UI's files (index.html, css/, js/, img/)."""

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
"""Content-Security-Policy of every UI response: only FieldWard's own files, no inline code."""

ASSET_CACHE: Final = "public, max-age=31536000, immutable"
"""Assets live under a content-hashed path, so they never change under the same URL."""

_ASSET_PLACEHOLDER: Final = "%ASSETS%"
_ROOT_PLACEHOLDER: Final = "%ROOT%"


def security_headers() -> dict[str, str]:
    """The headers every UI response carries."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def asset_build(directory: Path = STATIC_DIR) -> str:
    """A short hash of every asset's path and content: the cache-busting part of asset URLs."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class AssetFiles(StaticFiles):
    """``StaticFiles`` with long-lived cache headers and the UI's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = ASSET_CACHE
        for name, value in security_headers().items():
            response.headers.setdefault(name, value)
        return response


def _is_api(path: str) -> bool:
    first = path.lstrip("/").split("/", 1)[0]
    return first in ("api", "assets", "openapi.json", "docs", "redoc")


def mount_ui(app: FastAPI, directory: Path = STATIC_DIR) -> str:
    """Serve the web UI from ``app``; call it after every API router is included.

    Returns the asset build id. Paths under ``/api/`` that no router matched stay JSON 404s.
    """
    index_template = (directory / "index.html").read_text(encoding="utf-8")
    build = asset_build(directory)
    app.mount(f"/assets/{build}", AssetFiles(directory=directory), name="ui-assets")

    def index(request: Request) -> Response:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        html = index_template.replace(_ASSET_PLACEHOLDER, f"{root}/assets/{build}").replace(
            _ROOT_PLACEHOLDER, root
        )
        headers = security_headers()
        headers["Cache-Control"] = "no-cache"
        return HTMLResponse(html, headers=headers)

    async def spa(request: Request, path: str = "") -> Response:
        if _is_api(path) or "." in path.rsplit("/", 1)[-1]:
            # An unknown API path or a file that is not an asset: a real 404, never the SPA shell.
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return index(request)

    app.add_api_route("/", spa, methods=["GET"], include_in_schema=False, name="ui_index")
    app.add_api_route("/{path:path}", spa, methods=["GET"], include_in_schema=False, name="ui_spa")
    return build
