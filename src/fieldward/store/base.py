"""The shared SQLAlchemy declarative base of every FieldWard table.

All relational tables (the vulnerability knowledge of :mod:`fieldward.store.vulndb`, the console's
models) derive from :class:`Base`, so one ``MetaData`` holds them and one Alembic history can create
and migrate them together. The naming convention gives every index and constraint a stable,
predictable name on SQLite and PostgreSQL alike, which Alembic needs to alter or drop them later.
"""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

__all__ = ["NAMING_CONVENTION", "Base"]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Index, unique, check, foreign-key and primary-key names (the convention SQLAlchemy's docs propose)."""


class Base(DeclarativeBase):
    """Declarative base of FieldWard's tables; its ``metadata`` carries the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
