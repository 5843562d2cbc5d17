"""The packaged Alembic history builds exactly the models' schema, on SQLite and PostgreSQL, from any
working directory; the database URL and SQLite pragmas are configured as documented."""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from fieldward.store import console_models, models, trust_models, vulndb
from fieldward.store.base import Base
from fieldward.store.database import MIGRATIONS, Database, DatabaseError, data_dir, default_url

from .test_models import pg_url

__all__ = ["pg_url"]

EXPECTED_TABLES = {
    "sensors",
    "devices",
    "device_attributes",
    "communications",
    "alerts",
    "alert_events",
    "alert_comments",
    "vulnerability_findings",
    "config_findings",
    "device_risks",
    "users",
    "api_tokens",
    "audit_log",
    "trust_groups",
    "trust_devices",
    "trust_enrollment_tokens",
    "trust_certificates",
    "upload_jobs",
}


@pytest.fixture(params=["sqlite", "postgresql"])
def blank(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database (no tables) on each backend."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'blank.db'}")
    else:
        database = Database(request.getfixturevalue("pg_url"))
        database.downgrade("base")
    try:
        yield database
    finally:
        if request.param == "postgresql":
            database.upgrade()  # leave the shared module database migrated
        database.dispose()


def _diffs(database: Database) -> list[object]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_models_cover_the_console_and_vulnerability_tables() -> None:
    assert set(Base.metadata.tables) >= EXPECTED_TABLES
    assert {table.name for table in vulndb.TABLES} <= set(Base.metadata.tables)
    assert models.Device.__table__.metadata is Base.metadata
    assert console_models.IngestBatch.__table__.metadata is Base.metadata
    assert trust_models.TrustCertificate.__table__.metadata is Base.metadata


def test_upgrade_builds_exactly_the_models_schema(blank: Database) -> None:
    assert blank.current_revision() is None
    blank.upgrade()
    assert blank.current_revision() == blank.head_revision() is not None
    assert set(inspect(blank.engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    assert _diffs(blank) == []


def test_the_comparison_sees_a_schema_that_drifted(blank: Database) -> None:
    blank.upgrade()
    with blank.engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_alerts_status_last_ts"))
    diffs = _diffs(blank)
    assert any(d[0] == "add_index" and d[1].name == "ix_alerts_status_last_ts" for d in diffs), diffs  # type: ignore[index]
    with blank.engine.begin() as connection:
        connection.execute(text("CREATE INDEX ix_alerts_status_last_ts ON alerts (status, last_ts)"))


def test_downgrade_to_base_removes_every_table_and_upgrade_is_repeatable(blank: Database) -> None:
    blank.upgrade()
    blank.upgrade()  # already at head: nothing to do
    blank.downgrade("base")
    assert set(inspect(blank.engine).get_table_names()) <= {"alembic_version"}
    blank.upgrade()
    assert _diffs(blank) == []


def test_upgrade_needs_no_alembic_ini(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    database.upgrade()
    assert database.current_revision() == database.head_revision()
    assert not (elsewhere / "alembic.ini").exists()
    database.dispose()


def test_the_migrations_ship_inside_the_package() -> None:
    package = importlib.resources.files("fieldward.store.migrations")
    assert package.joinpath("env.py").is_file()
    assert package.joinpath("script.py.mako").is_file()
    revisions = [p.name for p in package.joinpath("versions").iterdir() if p.name.endswith(".py")]
    assert any(name[0].isdigit() for name in revisions), revisions
    assert Path(str(package)) == MIGRATIONS


def test_default_url_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("FIELDWARD_DATABASE_URL", "FIELDWARD_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "fieldward"
    assert (
        default_url() == f"sqlite:///{tmp_path / 'home' / '.local' / 'share' / 'fieldward' / 'fieldward.db'}"
    )
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "fieldward"
    monkeypatch.setenv("FIELDWARD_HOME", str(tmp_path / "fw"))
    assert default_url() == f"sqlite:///{tmp_path / 'fw' / 'fieldward.db'}"
    monkeypatch.setenv("FIELDWARD_DATABASE_URL", "postgresql+psycopg://u@db.example/fieldward")
    assert default_url() == "postgresql+psycopg://u@db.example/fieldward"


def test_the_default_database_is_created_under_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FIELDWARD_DATABASE_URL", raising=False)
    monkeypatch.setenv("FIELDWARD_HOME", str(tmp_path / "new" / "dir"))
    database = Database()
    database.upgrade()
    assert (tmp_path / "new" / "dir" / "fieldward.db").is_file()
    database.dispose()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'p.db'}")
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
    database.dispose()
    memory = Database("sqlite://")
    memory.upgrade()
    with memory.engine.connect() as connection:  # one shared in-memory database across connections
        assert "devices" in inspect(connection).get_table_names()
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


@pytest.mark.parametrize("url", ["not a url", "nosuchdialect://x/y"])
def test_bad_urls_are_a_clear_error(url: str) -> None:
    with pytest.raises(DatabaseError):
        Database(url)


def test_repr_hides_the_password() -> None:
    database = Database("postgresql+psycopg://alice:s3cret@127.0.0.1:1/db")
    assert "s3cret" not in repr(database)
    database.dispose()
