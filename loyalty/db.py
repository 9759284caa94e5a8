"""Engines, sessions and migrations: one :class:`Database` per process, created from a URL.

Every service runs in one database transaction opened here:

* ``db.write()`` for anything that changes rows. On SQLite it starts with ``BEGIN IMMEDIATE`` so the
  write lock is taken up front: SQLite serialises writers, and taking the lock late (on the first
  write) is how deferred transactions deadlock or fail with "database is locked" after reading.
  On PostgreSQL it is a plain READ COMMITTED transaction; services take row locks or use conditional
  updates where a race could change money-like state.
* ``db.read()`` for queries.

The ledger's units of work (:mod:`loyalty.ledger.store`) go below the ORM, on the driver's own
connection: ``db.sqlite_writer`` runs a whole unit on one thread with a synchronous ``sqlite3``
connection (no statement hops threads), ``db.driver_connection()`` lends an ``asyncpg`` connection
from the same pool as the sessions.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from loyalty.private import touch_private

DEFAULT_URL = "sqlite+aiosqlite:///loyalty.db"
#: How long a SQLite writer waits for the lock before failing (ms): longer than any single posting.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Page cache of the ledger's writer connections (KiB; SQLite's default is 2 MB): the writer updates
#: indexes all over large tables, and with the default a 1,000,000-row import slowed down threefold.
SQLITE_WRITER_CACHE_KIB = 64 * 1024
_MIGRATIONS = Path(__file__).with_name("migrations")
#: Connections each process keeps open to a server database (LOYALTY_DB_POOL_SIZE overrides). There is
#: no overflow: connections opened past the pool and closed again cost a connect and fresh prepared
#: statements each time, which under load costs more than waiting for a pooled one.
DEFAULT_POOL_SIZE = 20
#: How PostgreSQL plans the prepared statements of this service (see ``create_engine``).
PLAN_CACHE_MODE = os.environ.get("LOYALTY_PG_PLAN_CACHE_MODE", "force_generic_plan")


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``LOYALTY_DATABASE_URL``, else the embedded SQLite file."""
    return url or os.environ.get("LOYALTY_DATABASE_URL") or DEFAULT_URL


T = TypeVar("T")

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Python's sqlite3 would open transactions on its own; the "begin" hook below does it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get("loyalty_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def create_engine(url: str | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` with the pragmas and transaction hooks this package relies on."""
    url = database_url(url)
    if not url.startswith("sqlite"):
        kwargs.setdefault("pool_size", int(os.environ.get("LOYALTY_DB_POOL_SIZE", DEFAULT_POOL_SIZE)))
        kwargs.setdefault("max_overflow", 0)
        # Every statement is prepared once per connection; with PostgreSQL's default ("auto") the
        # ledger's write (rows as arrays) was planned anew at every execution, because a fresh plan
        # for the actual array lengths always looks cheaper than the generic one: 1.13 ms of server
        # CPU per posting against 0.53 ms with the generic plan (benchmarks/bench_storage.py).
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("server_settings", {}).setdefault("plan_cache_mode", PLAN_CACHE_MODE)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:" and not path.startswith("file:"):
            touch_private(Path(path))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
    return engine


class SqliteWriter:
    """Runs whole units of work on a synchronous ``sqlite3`` connection, never statement by statement.

    SQLite runs one writer at a time anyway. A small unit (a till post, a redemption) runs right on
    the calling thread when the write lock is free at that moment: no thread hop at all (~100 µs, a
    fifth of a posting, measured with ``bench_storage``). Otherwise, and for large units (an import
    batch, a job), it goes to this writer's own thread, which waits for the lock: the event loop is
    never blocked waiting for another process's write.
    """

    def __init__(self, path: str) -> None:
        if not path or path == ":memory:":
            raise ValueError("the ledger needs a SQLite file, not an in-memory database")
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._queued = 0

    def _connection(self, busy_timeout_s: float) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=busy_timeout_s, check_same_thread=False
            )
            for pragma in _SQLITE_PRAGMAS:
                conn.execute(pragma)
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            conn.execute(f"PRAGMA cache_size=-{SQLITE_WRITER_CACHE_KIB}")
            self._local.conn = conn
            self._connections.append(conn)
        return conn

    @staticmethod
    def _within(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection(SQLITE_BUSY_TIMEOUT_MS / 1000)
        conn.execute("BEGIN IMMEDIATE")
        return self._within(conn, fn)

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, here: bool = False) -> T:
        """``fn(conn)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error): on the
        calling thread when ``here`` and the lock is free now, else on the writer thread."""
        if here and not self._queued:
            conn = self._connection(0)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            else:
                return self._within(conn, fn)
        self._queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, fn)
        finally:
            self._queued -= 1

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, lambda: None)
        self._executor.shutdown(wait=True)
        for conn in self._connections:
            conn.close()
        self._connections.clear()


class Database:
    """An engine and its session factories; services receive this, open one transaction, and return."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write = async_sessionmaker(engine.execution_options(loyalty_write=True), expire_on_commit=False)
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._sqlite_writer: SqliteWriter | None = None
        #: Which database this is: per-process caches of its rows are keyed by it.
        self.scope = engine.url.render_as_string(hide_password=True)

    @property
    def sqlite_writer(self) -> SqliteWriter:
        """The ledger's writer thread (SQLite only), started on first use."""
        if self._sqlite_writer is None:
            self._sqlite_writer = SqliteWriter(make_url(str(self.engine.url)).database or "")
        return self._sqlite_writer

    @asynccontextmanager
    async def driver_connection(self) -> AsyncIterator[Any]:
        """A pooled connection of the driver itself (asyncpg), outside any SQLAlchemy transaction:
        the sessions' pool lends it. The caller manages its own transactions."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            try:
                yield driver
            finally:
                if driver is not None and driver.is_in_transaction():  # never return an open transaction
                    await driver.execute("ROLLBACK")

    @classmethod
    def from_url(cls, url: str | None = None, **kwargs: Any) -> Database:
        return cls(create_engine(url, **kwargs))

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One read-write transaction: committed when the block ends, rolled back on any exception."""
        async with self._write() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """One read-only transaction."""
        async with self._read() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
            self._sqlite_writer = None
        await self.engine.dispose()


def alembic_config(url: str | None = None) -> Any:
    """An Alembic config that finds the migrations inside this package, from any working directory."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url(url).replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Run ``alembic upgrade`` on ``url`` (synchronously; call from a thread inside an event loop)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str | None = None, revision: str = "head") -> None:
    """:func:`upgrade` from async code: Alembic runs its own event loop, so it gets a thread."""
    import asyncio

    await asyncio.to_thread(upgrade, url, revision)
