"""Security tests run on SQLite only: roles are checked in the core and request authentication at the edge,
neither depends on the database (the adapters' own suites run both databases)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'tocsin.db'}"
