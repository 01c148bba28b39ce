"""Schema migrations (Alembic), run by ``sdfleet migrate`` and checked when a server starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sdfleet.errors import ConfigError
from sdfleet.store.sql import SqlStore

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(store: SqlStore) -> str | None:
    def _current(sync_conn: Any) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with store.writer_engine.connect() as conn:
        return await conn.run_sync(_current)


async def upgrade(store: SqlStore, revision: str = "head") -> None:
    """Bring the database schema up to ``revision``."""

    def _upgrade(sync_conn: Any) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with store.writer_engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def ensure_schema(store: SqlStore, *, migrate: bool) -> None:
    """Check the schema at start-up; migrate when allowed, refuse a schema newer than this code."""
    current = await current_revision(store)
    head = head_revision()
    if current == head:
        return
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        raise ConfigError(
            f"the database schema ({current}) is newer than this sdfleet ({head}); upgrade sdfleet "
            "before starting it against this database",
            field="database_url",
        )
    if not migrate:
        raise ConfigError(
            f"the database schema is at {current or 'nothing'}, this sdfleet needs {head}: "
            "run `sdfleet migrate` first",
            field="database_url",
        )
    await upgrade(store)
