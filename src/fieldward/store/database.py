"""Opening the console's database: the URL, the engine, sessions and Alembic migrations.

``Database(url)`` wraps one SQLAlchemy engine and its session factory. SQLite (the default, a file
under the data directory) gets the pragmas a multi-reader console needs: WAL journal, enforced
foreign keys and a busy timeout; PostgreSQL is used as configured (``postgresql+psycopg://...``).
``upgrade()`` runs the Alembic history shipped inside the package (``store/migrations``), configured
in code, so an installed FieldWard migrates its database without an ``alembic.ini`` in the working
directory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from fieldward.errors import FieldWardError

__all__ = [
    "MIGRATIONS",
    "Database",
    "DatabaseError",
    "alembic_config",
    "data_dir",
    "default_url",
    "json_loads",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
"""The Alembic script directory, shipped inside the package."""
SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite writer waits for another one before giving up."""
PG_POOL_SIZE = 10
PG_MAX_OVERFLOW = 20
"""PostgreSQL connections kept per process, and how many more a burst may open: 30 serve the 25
concurrent requests a worker gets from 50 clients over 2 workers, without queueing for a connection."""
IDLE_PING_SECONDS = 10.0
"""A pooled PostgreSQL connection idle for longer is pinged before use (see :func:`_ping_if_idle`)."""


class DatabaseError(FieldWardError):
    """The database URL is unusable or the database cannot be opened or migrated."""


def data_dir() -> Path:
    """Where FieldWard keeps its data: ``$FIELDWARD_HOME``, else ``$XDG_DATA_HOME/fieldward``, else
    ``~/.local/share/fieldward``."""
    home = os.environ.get("FIELDWARD_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg).expanduser() / "fieldward"
    return Path.home() / ".local" / "share" / "fieldward"


def default_url() -> str:
    """``$FIELDWARD_DATABASE_URL``, else a SQLite file ``fieldward.db`` in :func:`data_dir`."""
    url = os.environ.get("FIELDWARD_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{data_dir() / 'fieldward.db'}"


def alembic_config(connection: Any = None, url: str | None = None) -> Any:
    """An Alembic ``Config`` for the packaged migrations, bound to ``connection`` (or ``url``).

    Typed ``Any`` so that importing this module does not need Alembic until a migration runs.
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # ConfigParser interpolates '%': a password with '%' in the URL must survive.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["configure_logger"] = False
    return config


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any, *, memory: bool) -> None:
    cursor = dbapi_connection.cursor()
    try:
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
    finally:
        cursor.close()


def _mark_idle(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Any:
    """A pool ``checkout`` listener: ping a connection that sat idle longer than
    :data:`IDLE_PING_SECONDS`; a dead one is replaced (``DisconnectionError`` makes the pool retry).

    SQLAlchemy's ``pool_pre_ping`` pings on *every* checkout, a round trip per request; a connection
    used a moment ago is alive, and one that waited through a database restart is the one to check.
    A connection that dies while in use still fails that statement, after which SQLAlchemy discards
    the pool's connections of that generation.
    """

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("idle connection is gone") from exc

    return checkout


_DIGITS_AS_ONES = bytes.maketrans(b"0123456789", b"1111111111")
_LONG_DIGIT_RUN = b"1" * 19
"""19 digits in a row (after :data:`_DIGITS_AS_ONES`): where an integer orjson may read as a float can
be (it does so, silently, below -2**63 and above 2**64 - 1: 19 digits after a minus, 20 without).
Digits in a string or a long fraction also match: harmless, such text is read by ``json``. One
``translate`` and one substring search: about 1 ms per MB (a regular expression took 40)."""


def json_loads(text: str | bytes) -> Any:
    """Parse JSON with orjson (3-4 times faster than ``json``), and with ``json`` where orjson would
    differ: text holding an integer that may not fit 64 bits (orjson would return a float) or text
    orjson refuses (``NaN``, a lone surrogate). Same values as ``json.loads``; errors are ``json``'s
    ``ValueError``."""
    if isinstance(text, str):
        data = text.encode("utf-8", "surrogatepass")
    elif isinstance(text, bytes | bytearray):
        data = bytes(text)
    else:  # json's TypeError (SQLAlchemy's SQLite JSON type relies on it for numbers it stored)
        return json.loads(text)
    if _LONG_DIGIT_RUN not in data.translate(_DIGITS_AS_ONES):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


class Database:
    """One database: its engine, a session factory and its migrations.

    url: a SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://user@host/db``); None means
    :func:`default_url`. A SQLite file's directory is created when missing.
    """

    def __init__(self, url: str | URL | None = None, *, echo: bool = False) -> None:
        try:
            self.url: URL = make_url(url if url is not None else default_url())
        except Exception as exc:  # an ArgumentError for a malformed string
            raise DatabaseError(f"not a database URL: {exc}") from None
        kwargs: dict[str, Any] = {"echo": echo, "json_deserializer": json_loads}
        backend = self.url.get_backend_name()
        if backend == "sqlite":
            database = self.url.database or ""
            memory = database in ("", ":memory:") or database.startswith("file::memory:")
            if memory:
                # One in-memory database shared by every session of this engine.
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            else:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        elif backend == "postgresql":
            kwargs.update(pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW)
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except Exception as exc:  # an unknown dialect or missing driver
            raise DatabaseError(
                f"cannot use {self.url.render_as_string(hide_password=True)}: {exc}"
            ) from None
        if backend == "sqlite":
            event.listen(
                self.engine,
                "connect",
                lambda conn, record: _set_sqlite_pragmas(conn, record, memory=memory),
            )
        elif backend == "postgresql":
            event.listen(self.engine, "checkin", _mark_idle)
            event.listen(self.engine, "checkout", _ping_if_idle(self.engine))
        self.sessionmaker: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed when the block ends, rolled back on an exception."""
        with self.sessionmaker() as session, session.begin():
            yield session

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to ``revision`` (the newest by default) with the packaged Alembic history."""
        from alembic import command

        with self.engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        with self.engine.begin() as connection:
            command.downgrade(alembic_config(connection), revision)

    def current_revision(self) -> str | None:
        """The Alembic revision the database is at (None for an empty database)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            revision: str | None = MigrationContext.configure(connection).get_current_revision()
            return revision

    def head_revision(self) -> str | None:
        """The newest revision of the packaged history."""
        from alembic.script import ScriptDirectory

        head: str | None = ScriptDirectory.from_config(alembic_config()).get_current_head()
        return head

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.dispose()
