"""Alembic environment of the console's database: runs the migrations on the connection that
``fieldward.store.database`` hands over (``config.attributes["connection"]``), or on the configured
``sqlalchemy.url`` (or :func:`~fieldward.store.database.default_url`) when run from the Alembic
command line.

``target_metadata`` is the shared ``Base.metadata`` with every model module imported, so
``alembic revision --autogenerate`` sees all tables. ``render_as_batch`` lets later revisions alter
tables on SQLite (copy-and-move); custom column types are rendered as their portable implementation.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from fieldward.store import console_models, models, transport_models, trust_models, vulndb
from fieldward.store.base import Base
from fieldward.store.database import default_url

target_metadata = Base.metadata
"""Every table: the console's (``models``, ``console_models``), the vulnerability knowledge
(``vulndb``) and the device plane's (``trust_models``)."""
MODEL_MODULES = (models, vulndb, console_models, trust_models, transport_models)


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Render :class:`~fieldward.store.models.UTCDateTime` as ``sa.DateTime(timezone=True)`` so that a
    revision does not depend on FieldWard's own modules."""
    if type_ == "type" and isinstance(obj, models.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        render_item=render_item,
        compare_type=True,
        **kwargs,
    )


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the SQL to a script instead of running it (``alembic upgrade --sql``)."""
    _configure(url=context.config.get_main_option("sqlalchemy.url") or default_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url") or default_url()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
