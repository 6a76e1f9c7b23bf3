"""Apply Alembic migrations (on start and via `tocsin db upgrade`) and report whether the schema is current.

alembic (with mako and pygments, ~12 MB resident) is imported only when there is something to migrate:
a start on a schema already at the head reads the version row with plain SQL and compares it with the head
named in migrations/versions (script_head), and never loads alembic."""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(migrations.__file__).parent
MIGRATE_LOCK_ID = 0x70C5_1A0E
"""PostgreSQL advisory lock serializing migrations across processes (next to the audit chain's lock id)."""
VERSION_TABLE = "alembic_version"


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The head as alembic computes it (the authority; script_head must agree, a test checks it)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _literal(tree: ast.Module, name: str) -> object:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name
                and node.value is not None):
            return ast.literal_eval(node.value)
    raise ValueError(f"no literal {name}")


@cache
def script_head() -> str | None:
    """The single head revision of migrations/versions, read from the scripts' `revision` and
    `down_revision` literals without importing alembic or the scripts; None when that is not one plain
    head (branches, merges, anything unexpected): callers then ask alembic."""
    revisions: set[str] = set()
    parents: set[str] = set()
    try:
        for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            revision, down = _literal(tree, "revision"), _literal(tree, "down_revision")
            if not isinstance(revision, str) or not (down is None or isinstance(down, str)):
                return None
            revisions.add(revision)
            if down is not None:
                parents.add(down)
    except (OSError, SyntaxError, ValueError):
        return None
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    from alembic import command

    def run(conn: Connection) -> None:
        command.upgrade(alembic_config(conn), revision)

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several `tocsin run` starting at once on one database: one migrates, the others wait here
            # and then find the schema current (instead of racing on CREATE TABLE).
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_ID})
        await conn.run_sync(run)


async def upgrade_unless_current(engine: AsyncEngine, current: str | None) -> None:
    """upgrade() to the head, unless `current` (the database's revision, read just before) already is
    the head: then nothing is imported or run."""
    if current is None or current != script_head():
        await upgrade(engine)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision (None: no schema yet), as alembic's MigrationContext reports it; read with
    plain SQL, and through alembic only when the version table holds more than one row (its error)."""
    def run(conn: Connection) -> str | None:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        rows = [r[0] for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]
        if len(rows) <= 1:
            return rows[0] if rows else None
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(run)


async def is_current(engine: AsyncEngine) -> bool:
    return await current_revision(engine) == (script_head() or head_revision())
