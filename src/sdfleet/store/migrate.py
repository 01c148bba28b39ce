"""Schema migrations (Alembic), run by ``sdfleet migrate`` and checked when a server starts."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sdfleet.errors import ConfigError
from sdfleet.store.sql import SqlStore
from sdfleet.store.tx import SqlTx

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
    return await store.write(lambda tx: MigrationContext.configure(tx.conn).get_current_revision())


async def upgrade(store: SqlStore, revision: str = "head") -> None:
    """Bring the database schema up to ``revision``."""

    def _upgrade(tx: SqlTx) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = tx.conn
        command.upgrade(cfg, revision)

    await store.write(_upgrade)


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
