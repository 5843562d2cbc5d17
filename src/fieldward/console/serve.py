"""``fieldward serve``: run the console with uvicorn, after printing the first admin's password once.

The database is migrated and the first administrator created *before* uvicorn starts (so the password
can be printed to stdout exactly once, and never through a logger); the application's own start-up
then finds the user and creates nothing.
"""

from __future__ import annotations

import sys
from typing import TextIO

from fieldward.console.app import bootstrap, create_app
from fieldward.console.settings import ConsoleSettings
from fieldward.store.database import Database

__all__ = ["announce_first_admin", "serve"]


def announce_first_admin(settings: ConsoleSettings, password: str, out: TextIO) -> None:
    out.write(
        f"First start: created the administrator {settings.first_admin!r} with the password\n\n"
        f"    {password}\n\n"
        "It is shown only this once; log in and change it (POST /api/v1/auth/password).\n"
    )
    out.flush()


def serve(
    settings: ConsoleSettings,
    host: str = "127.0.0.1",
    port: int = 8443,
    *,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    out: TextIO | None = None,
) -> None:
    """Migrate, create the first admin when there is no user (printing its password once), and serve
    the console on ``host:port`` until interrupted."""
    import uvicorn

    database = Database(settings.url())
    try:
        password = bootstrap(database, settings)
    finally:
        database.dispose()
    if password is not None:
        announce_first_admin(settings, password, out if out is not None else sys.stdout)
    del password
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )
