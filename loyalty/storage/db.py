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
import errno
import os
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from loyalty.storage.private import touch_private

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
#: Connection poolers this service can sit behind (``?pooler=`` in the URL, or LOYALTY_DB_POOLER).
POOLERS = ("pgbouncer",)


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


#: How long a request waits for a pooled connection, and for a new connection to open.
POOL_TIMEOUT_SECONDS = float(os.environ.get("LOYALTY_DB_POOL_TIMEOUT_SECONDS", "10"))
CONNECT_TIMEOUT_SECONDS = float(os.environ.get("LOYALTY_DB_CONNECT_TIMEOUT_SECONDS", "5"))
#: A pooled connection idle longer than this is pinged before it is lent (one round trip): after a
#: database restart the first request then gets a fresh connection instead of a dead one. Busy
#: connections are not pinged, so the hot path keeps its round trips (pre-ping on every checkout
#: would add one to every posting).
IDLE_PING_SECONDS = float(os.environ.get("LOYALTY_DB_IDLE_PING_SECONDS", "1.0"))


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        dbapi_connection.ping()
    except Exception as exc:
        raise DisconnectionError(f"stale pooled connection: {exc}") from exc


def outage(exc: BaseException | None) -> str | None:
    """Why the database cannot be used right now, if ``exc`` (or what caused it) says so: refused
    or lost connections, a server shutting down or starting up, too many connections, a locked
    SQLite file. None for every other error (those are bugs or bad input, not an outage)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        reason = _outage_reason(exc)
        if reason is not None:
            return reason
        # What the driver raised, or what this was raised from: not __context__, so a bug raised while
        # handling a connection error stays a bug.
        exc = getattr(exc, "orig", None) or exc.__cause__
    return None


_OUTAGE_STATES = {"57P01", "57P02", "57P03", "53300"}  # shutdown, crash, starting up, too many clients
_OUTAGE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}
_OUTAGE_SQLITE = ("database is locked", "unable to open database file", "disk i/o error")


def _outage_reason(exc: BaseException) -> str | None:
    first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return f"connection lost: {first_line}"
    if isinstance(exc, PoolTimeout):
        return "no free database connection in time"
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return f"cannot connect: {first_line}"
    if isinstance(exc, OSError) and (exc.errno in _OUTAGE_ERRNOS or "Connect call failed" in first_line):
        return f"cannot connect: {first_line}"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _OUTAGE_STATES):
        return first_line
    name = type(exc).__name__
    if name == "InternalClientError" and first_line.startswith("cannot switch to state"):
        # asyncpg's protocol is still consuming the error of a connection the server ended.
        return f"connection broken: {first_line}"
    if name == "ConnectionDoesNotExistError" or (
        name == "InterfaceError" and "connection" in first_line.lower() and "closed" in first_line.lower()
    ):
        return f"connection lost: {first_line}"
    if isinstance(exc, sqlite3.OperationalError) and first_line.lower().startswith(_OUTAGE_SQLITE):
        return first_line
    return None


def pooler(url: str | None = None) -> str | None:
    """The connection pooler between this service and PostgreSQL: the URL's ``pooler`` query
    parameter, else ``LOYALTY_DB_POOLER``, else None (a direct connection)."""
    found = make_url(database_url(url)).query.get("pooler") or os.environ.get("LOYALTY_DB_POOLER") or None
    if isinstance(found, tuple):
        raise ValueError("the database URL names its pooler more than once")
    if found is not None and found not in POOLERS:
        raise ValueError(f"unknown connection pooler {found!r}: expected one of {', '.join(POOLERS)}")
    return found


def _pooled(connect_args: dict[str, Any]) -> None:
    """Connection arguments for PgBouncer's transaction pooling (1.18 keeps no prepared statement
    across transactions): every statement is an unnamed one, parsed again where it runs.

    ``statement_cache_size=0`` makes asyncpg use the unnamed statement for ``fetch``/``execute`` (the
    ledger's raw connection) and parse it again in the very message batch that binds it, so no
    statement outlives its transaction, even an implicit one. ``prepared_statement_cache_size=0``
    stops SQLAlchemy keeping statements per connection; its ``prepare()`` then names none either
    (asyncpg names a prepared statement only while its cache is on). Unique names (SQLAlchemy's
    ``prepared_statement_name_func``) are not used: each would stay behind on whichever server
    connection ran it, since the Close asyncpg sends later may reach another one.

    No ``plan_cache_mode`` startup parameter: PgBouncer refuses unknown ones, and a statement parsed
    for each execution is planned for each execution whatever the mode says; ``auto`` then plans it
    for the actual values (a custom plan), which is what PostgreSQL's default is left to do."""
    connect_args.setdefault("statement_cache_size", 0)
    connect_args.setdefault("prepared_statement_cache_size", 0)


def create_engine(url: str | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` with the pragmas and transaction hooks this package relies on.

    Behind a connection pooler (``?pooler=pgbouncer`` in the URL, or LOYALTY_DB_POOLER=pgbouncer),
    PostgreSQL connections keep nothing across transactions (see :func:`_pooled`)."""
    url = database_url(url)
    if not url.startswith("sqlite"):
        behind = pooler(url)
        url = make_url(url).difference_update_query(["pooler"]).render_as_string(hide_password=False)
        kwargs.setdefault("pool_size", int(os.environ.get("LOYALTY_DB_POOL_SIZE", DEFAULT_POOL_SIZE)))
        kwargs.setdefault("max_overflow", 0)
        # Fail fast while the database is away (a 503 a till can retry) rather than after SQLAlchemy's
        # 30 s pool wait and asyncpg's 60 s connect timeout.
        kwargs.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("timeout", CONNECT_TIMEOUT_SECONDS)
        if behind is not None:
            _pooled(connect_args)
        else:
            # Every statement is prepared once per connection; with PostgreSQL's default ("auto") the
            # ledger's write (rows as arrays) was planned anew at every execution, because a fresh plan
            # for the actual array lengths always looks cheaper than the generic one: 1.13 ms of server
            # CPU per posting against 0.53 ms with the generic plan (benchmarks/bench_storage.py).
            connect_args.setdefault("server_settings", {}).setdefault("plan_cache_mode", PLAN_CACHE_MODE)
    # An error's message never carries the statement's values (they reach logged tracebacks): card
    # numbers, idempotency keys and members' data stay out of the logs.
    kwargs.setdefault("hide_parameters", True)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name != "sqlite":
        event.listen(engine.sync_engine.pool, "checkin", _checked_in)
        event.listen(engine.sync_engine.pool, "checkout", _ping_if_idle)
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        # A new file is created private (0600) before SQLite would create it with the umask's mode;
        # a missing folder stays an error (SQLite's "unable to open database file").
        if path and path != ":memory:" and not path.startswith("file:") and Path(path).parent.is_dir():
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
            dead = False
            try:
                yield driver
            except BaseException as exc:
                dead = outage(exc) is not None
                if dead:
                    # SQLAlchemy never saw this error (the driver raised it): drop this connection
                    # and, as SQLAlchemy does on a disconnect, the pool's others (a restart killed
                    # them all) rather than lend them again dead.
                    await conn.invalidate(exc)
                    await self.engine.dispose(close=False)
                raise
            finally:
                if not dead and driver is not None and driver.is_in_transaction():
                    await driver.execute("ROLLBACK")  # never return an open transaction

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

    async def readiness(self) -> str | None:
        """None when the database answers and its schema is at this code's latest migration, else
        what is wrong (for a readiness probe: send no traffic here until it is None)."""
        try:
            async with self.engine.connect() as conn:
                current = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalar()
        except Exception as exc:
            return outage(exc) or f"schema not readable: {(str(exc).splitlines() or ['?'])[0]}"
        head = head_revision()
        if current != head:
            return f"schema at migration {current}, this code needs {head} (run `loyalty db upgrade`)"
        return None

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


@cache
def head_revision() -> str:
    """The latest migration this code ships."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Run ``alembic upgrade`` on ``url`` (synchronously; call from a thread inside an event loop)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str | None = None, revision: str = "head") -> None:
    """:func:`upgrade` from async code: Alembic runs its own event loop, so it gets a thread."""
    import asyncio

    await asyncio.to_thread(upgrade, url, revision)
