"""The Alembic migrations build exactly the schema the code declares, and start-up checks them."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sdfleet.errors import ConfigError
from sdfleet.store import SqlStore, SqlTx
from sdfleet.store.migrate import ensure_schema, head_revision, upgrade
from sdfleet.store.schema import metadata


async def test_migrations_match_the_declared_schema(store: SqlStore) -> None:
    def diff(tx: SqlTx) -> list[object]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # expression indexes cannot be reflected by SQLite
            return list(compare_metadata(MigrationContext.configure(tx.conn), metadata))

    differences = await store.read(diff)
    # SQLite cannot reflect the expression indexes (checked on their own below); nothing else may differ
    assert [
        d for d in differences if "ix_jobs_claim" not in repr(d) and "ix_jobs_tenant_claim" not in repr(d)
    ] == []


async def test_claim_order_index_exists(store: SqlStore) -> None:
    if not store.dialect.is_sqlite:
        pytest.skip("checked through SQLite's catalogue")

    def sql(tx: SqlTx) -> str:
        return str(
            tx.conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name='ix_jobs_claim'").scalar_one()
        )

    assert "stalled DESC" in await store.read(sql)


async def test_start_up_refuses_unmigrated_and_newer_schemas(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path}/a.db")
    try:
        with pytest.raises(ConfigError, match="sdfleet migrate"):
            await ensure_schema(store, migrate=False)
        await ensure_schema(store, migrate=True)
        await ensure_schema(store, migrate=False)  # at head: fine
        await store.write(lambda tx: tx.conn.exec_driver_sql("UPDATE alembic_version SET version_num='9999'"))
        with pytest.raises(ConfigError, match="newer than this sdfleet"):
            await ensure_schema(store, migrate=True)
    finally:
        await store.close()


async def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path}/b.db")
    try:
        await upgrade(store)
        await upgrade(store)
        version = await store.read(
            lambda tx: tx.conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
        )
        assert version == head_revision()
    finally:
        await store.close()
