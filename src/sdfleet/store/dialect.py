"""Everything that differs between SQLite and PostgreSQL lives here, and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from sdfleet.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Dialect:
    """How to talk to one database family."""

    name: str  # "sqlite" | "postgresql"
    async_url: str

    @property
    def is_sqlite(self) -> bool:
        return self.name == "sqlite"

    def lock_for_claim(self, query: Select[Any]) -> Select[Any]:
        """Make the candidate subquery of a claim safe against concurrent claimers.

        PostgreSQL: row locks that other claimers skip. SQLite: the claim runs in an immediate
        (write-locked) transaction, so the subquery needs nothing more.
        """
        if self.is_sqlite:
            return query
        return query.with_for_update(skip_locked=True)

    def create_engines(self, pool_size: int = 10) -> tuple[AsyncEngine, AsyncEngine]:
        """Return (write engine, read engine). For SQLite the writer holds one connection and
        starts every transaction with ``BEGIN IMMEDIATE``; for PostgreSQL both are one pool."""
        if not self.is_sqlite:
            engine = create_async_engine(
                self.async_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            return engine, engine
        writer = create_async_engine(self.async_url, pool_size=1, max_overflow=0)
        reader = (
            create_async_engine(self.async_url, poolclass=NullPool)
            if ":memory:" in self.async_url
            else create_async_engine(self.async_url, pool_size=4, max_overflow=4)
        )
        _sqlite_pragmas(writer, immediate=True)
        _sqlite_pragmas(reader, immediate=False)
        return writer, reader


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy's "begin" event own transaction control
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def dialect_for(url: str) -> Dialect:
    """Pick the dialect and drivers for a database URL (``sqlite:///path`` or ``postgresql://…``)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ":memory:"
        return Dialect(
            name="sqlite",
            async_url=str(parsed.set(drivername="sqlite+aiosqlite", database=database)),
        )
    if backend in ("postgresql", "postgres"):
        return Dialect(
            name="postgresql",
            async_url=parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False),
        )
    raise ConfigError(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql://",
        field="database_url",
    )
