"""Everything that differs between SQLite and PostgreSQL lives here, and nowhere else."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, Select, String, cast, create_engine, event, func, literal
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

from sdfleet.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Dialect:
    """How to talk to one database family."""

    name: str  # "sqlite" | "postgresql"
    sync_url: str

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

    def locked(self, query: Select[Any], lock: bool) -> Select[Any]:
        """``SELECT … FOR UPDATE`` on PostgreSQL when ``lock``; SQLite's immediate transactions
        already hold the database's write lock."""
        if self.is_sqlite or not lock:
            return query
        return query.with_for_update()

    def minute_index(self, column: ColumnElement[Any], since: float) -> ColumnElement[int]:
        """Whole minutes from ``since`` to ``column`` (a time at or after ``since``). SQLite's cast
        truncates, which is the floor for non-negative values; PostgreSQL's rounds, so floor first."""
        minutes = (column - since) / 60.0
        if self.is_sqlite:
            return cast(minutes, Integer)
        return cast(func.floor(minutes), Integer)

    def least(self, *values: Any) -> Any:
        """The smallest of several values (SQLite's scalar ``min``, PostgreSQL's ``least``)."""
        return func.min(*values) if self.is_sqlite else func.least(*values)

    def json_text(self, column: Any, key: str) -> Any:
        """The text value of top-level ``key`` of a JSON text column (NULL when absent)."""
        if self.is_sqlite:
            return func.json_extract(column, "$." + json.dumps(key))
        return cast(column, JSONB).op("->>")(literal(key, String))

    def create_engines(self, pool_size: int = 10) -> tuple[Engine, Engine]:
        """Return (write engine, read engine). For SQLite the writer is one connection that starts
        every transaction with ``BEGIN IMMEDIATE``; for PostgreSQL both are one pool."""
        if not self.is_sqlite:
            engine = create_engine(
                self.sync_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            return engine, engine
        memory = make_url(self.sync_url).database in (None, "", ":memory:")
        if memory:  # tests: one shared in-memory database
            engine = create_engine(
                self.sync_url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            _sqlite_pragmas(engine, immediate=True)
            return engine, engine
        writer = create_engine(self.sync_url, pool_size=1, max_overflow=0)
        reader = create_engine(self.sync_url, pool_size=4, max_overflow=4)
        _sqlite_pragmas(writer, immediate=True)
        _sqlite_pragmas(reader, immediate=False)
        return writer, reader


def _sqlite_pragmas(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy's "begin" event own transaction control
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def dialect_for(url: str) -> Dialect:
    """Pick the dialect and driver for a database URL (``sqlite:///path`` or ``postgresql://…``)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return Dialect(name="sqlite", sync_url=str(parsed.set(drivername="sqlite")))
    if backend in ("postgresql", "postgres"):
        return Dialect(
            name="postgresql",
            sync_url=parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False),
        )
    raise ConfigError(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:/// or postgresql://",
        field="database_url",
    )
