"""The Alembic migrations build exactly the schema the ORM models describe, on SQLite and PostgreSQL."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from core import migrate
from core.db import Database
from core.models import Base


async def test_migrations_match_models(blank_db_url: str) -> None:
    db = Database(blank_db_url)
    try:
        await migrate.upgrade(db.engine)
        assert await migrate.is_current(db.engine)

        def diff(conn: Connection) -> list[object]:
            mc = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(mc, Base.metadata))

        async with db.engine.connect() as conn:
            problems = await conn.run_sync(diff)
        assert problems == [], f"models and migrations differ; add a migration: {problems}"
        await migrate.upgrade(db.engine)  # idempotent
    finally:
        await db.close()


async def test_sqlite_runs_in_wal_with_busy_timeout(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        async with db.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert int((await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()) == 10_000
    finally:
        await db.close()


def test_the_head_read_from_the_scripts_is_alembics_head() -> None:
    """A start on a current schema skips alembic by comparing with script_head(): it must be alembic's head."""
    assert migrate.script_head() is not None
    assert migrate.script_head() == migrate.head_revision()


async def test_current_revision_reads_what_alembic_reads(blank_db_url: str) -> None:
    """None before the first migration, the head after; the same as alembic's MigrationContext says."""
    db = Database(blank_db_url)
    try:
        assert await migrate.current_revision(db.engine) is None
        assert not await migrate.is_current(db.engine)
        await migrate.upgrade_unless_current(db.engine, None)
        assert await migrate.current_revision(db.engine) == migrate.head_revision()

        def alembic_says(conn: Connection) -> str | None:
            return MigrationContext.configure(conn).get_current_revision()

        async with db.engine.connect() as conn:
            assert await conn.run_sync(alembic_says) == migrate.head_revision()
        await migrate.upgrade_unless_current(db.engine, migrate.head_revision())  # current: nothing to do
        assert await migrate.is_current(db.engine)
    finally:
        await db.close()
