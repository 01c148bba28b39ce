"""The one SQL implementation of the job store, for SQLite and PostgreSQL (SQLAlchemy Core).

:class:`SqlStore` owns the engines, the connections and the threads they run in; it hands each
use case a transaction (:class:`sdfleet.store.tx.SqlTx`, whose methods are the statements).
Schema migrations run through :mod:`sdfleet.store.migrate`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy import literal, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from sdfleet.errors import ServiceUnavailable
from sdfleet.store.dialect import dialect_for
from sdfleet.store.tx import SqlTx

T = TypeVar("T")


class SqlStore:
    """The job store on SQLAlchemy Core: SQLite (embedded) or PostgreSQL (scale-out), chosen by URL.

    Use cases run as plain functions of a :class:`SqlTx` in the store's own threads, one thread hop
    per transaction: ``await store.write(fn)`` / ``await store.read(fn)``. (SQLAlchemy's async
    layer costs one hop per statement — measured here at about 20× the cost of a statement.)
    SQLite writes go through one writer thread and connection (``BEGIN IMMEDIATE``); reads use a
    small pool and never block writers (WAL).
    """

    def __init__(self, url: str, *, pool_size: int = 10):
        self.url = url
        self.dialect = dialect_for(url)
        if self.dialect.is_sqlite:
            db = make_url(self.dialect.sync_url).database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        self._writer, self._reader = self.dialect.create_engines(pool_size)
        writers = 1 if self.dialect.is_sqlite else pool_size
        self._write_pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="db-write")
        self._read_pool = ThreadPoolExecutor(
            max_workers=4 if self.dialect.is_sqlite else pool_size, thread_name_prefix="db-read"
        )

    @property
    def writer_engine(self) -> Engine:
        return self._writer

    def _run_write(self, fn: Callable[[SqlTx], T]) -> T:
        try:
            with self._writer.begin() as conn:
                return fn(SqlTx(conn, self.dialect))
        except OperationalError as exc:
            raise ServiceUnavailable(f"database unavailable: {exc.orig}") from exc

    def _run_read(self, fn: Callable[[SqlTx], T]) -> T:
        try:
            with self._reader.connect() as conn:
                return fn(SqlTx(conn, self.dialect))
        except OperationalError as exc:
            raise ServiceUnavailable(f"database unavailable: {exc.orig}") from exc

    async def write(self, fn: Callable[[SqlTx], T]) -> T:
        """Run ``fn`` in one read-write transaction; commits when it returns, rolls back on error."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_pool, self._run_write, fn)

    async def read(self, fn: Callable[[SqlTx], T]) -> T:
        """Run ``fn`` in a read-only transaction (never blocks writers)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._run_read, fn)

    async def ping(self) -> None:
        await self.read(lambda tx: tx.conn.execute(select(literal(1))).scalar_one())

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._write_pool, self._writer.dispose)
        if self._reader is not self._writer:
            await loop.run_in_executor(self._read_pool, self._reader.dispose)
        self._write_pool.shutdown(wait=False)
        self._read_pool.shutdown(wait=False)
