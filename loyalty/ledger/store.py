"""Units of work on the drivers themselves, and a booking written in one go.

A ledger operation is ``async def op(unit) -> result``: it reads through ``unit.fetch*``, describes
its effect on a :class:`~loyalty.ledger.book.Booking` and hands that to ``unit.apply`` once.
:func:`run` gives it a unit:

* **SQLite**: the whole operation runs on the database's writer thread inside ``BEGIN IMMEDIATE``,
  on a synchronous ``sqlite3`` connection. The unit's methods are coroutines that never suspend,
  so the operation's coroutine runs to its end in a single ``send``: one code path for both
  databases, and not one statement hops threads.
* **PostgreSQL, locked**: ``BEGIN``; reads that lock the member rows (``FOR UPDATE``); the booking
  as one statement; ``COMMIT``.
* **PostgreSQL, optimistic** (``run(..., optimistic=True)``): no transaction around the reads; the
  booking is one statement, its own transaction, that writes only if every member it changes still
  has the revision that was read. Otherwise it writes nothing and raises :class:`Stale`, and the
  operation runs again, locked (as it does when its reads did not agree with each other and the
  booking refused to add up). A till post is then two round trips: one read, one write. Bookings of
  concurrent optimistic units are committed in groups (:class:`GroupCommit`).
* **A merge** (rows changing owner, a member closed: ``Booking.reassigned``, ``Booking.closed``) runs
  locked only: after the booking's statement, one ``UPDATE`` per table moved, in the same transaction.

Statements below the ORM: SQLAlchemy Core through the async session cost a posting ~12 round trips
and 2.5 ms of CPU (``bench_storage``: 233 postings/s against 626 for the bare driver writing the
same rows); the driver with one write statement per booking is what reaches the bare driver's rate.
SQL shared by both databases is written with ``$n`` placeholders (SQLite reads them as ``?n``) and
the portable subset of SQL; ``FOR UPDATE`` is dropped on SQLite, where the writer lock is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from functools import cache, lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import JSON, Date, DateTime, Integer, String, Table, Text
from sqlalchemy.types import TypeEngine

from loyalty.ledger import faults
from loyalty.ledger.book import Booking, BookingError, _Update, merged
from loyalty.storage.db import Database, outage
from loyalty.storage.models import Base
from loyalty.storage.partitions import PG_ONLY_COLUMNS

T = TypeVar("T")

#: Insert order on SQLite, where foreign keys are checked row by row (PostgreSQL checks at the end
#: of the statement). Tables not listed come last.
INSERT_ORDER = (
    "members",
    "cards",
    "transactions",
    "transaction_items",
    "adjustments",
    "refunds",
    "refund_items",
    "vouchers",
    "redemptions",
    "point_lots",
    "lot_draws",
    "ledger_entries",
    "tier_history",
)
#: Upserted tables: the conflict key, and per other column whether a conflict sets it or adds to it.
UPSERTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "stamp_cards": (("tenant_id", "member_id", "card"), {"stamps": "set", "updated_at": "set"}),
    "rule_uses": (("tenant_id", "member_id", "rule_id"), {"uses": "add"}),
    "rule_day_uses": (("tenant_id", "member_id", "rule_id", "day"), {"uses": "add"}),
    "rule_budgets": (("tenant_id", "program_id", "rule_id"), {"points_used": "add"}),
}
#: What a booking changes of a member row: its id, the revision it read, and the changes.
MEMBER_CHANGE = (
    "id", "revision", "available", "pending", "debt", "visits", "last_visit_at", "tier", "tier_since",
)  # fmt: skip
#: SQLSTATE the PostgreSQL write statement raises when a member changed since it was read.
STALE_SQLSTATE = "LY409"


class Stale(Exception):
    """A member changed between the read and the write of an optimistic unit; nothing was written."""


class Duplicate(Exception):
    """A unique key of ``table`` already exists (a receipt booked twice, a key answered twice)."""

    def __init__(self, table: str, detail: str = "") -> None:
        super().__init__(f"duplicate {table}: {detail}")
        self.table = table


# --- units -----------------------------------------------------------------------------------------


class Unit:
    """What an operation may do with the database: read, take ids, and apply one booking."""

    dialect: str
    #: True when rows read are locked until the end (SQLite's writer lock, or PostgreSQL's FOR UPDATE).
    locked: bool
    #: Which database this is (its URL): what a process remembers of it is kept apart from another's.
    scope: str = ""

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; returns the number of rows it changed."""
        raise NotImplementedError

    async def next_ids(self, table: str, count: int) -> list[int]:
        """``count`` fresh ids for rows of ``table`` that others must reference before they exist."""
        raise NotImplementedError

    async def apply(self, booking: Booking) -> None:
        raise NotImplementedError

    def any_of(self, placeholder: str, kind: str = "bigint") -> str:
        """``IN`` a list bound as one parameter (pass the list through :meth:`listed`)."""
        return f"IN (SELECT value FROM json_each({placeholder}))"

    def listed(self, values: Sequence[Any]) -> Any:
        return json.dumps([sqlite_value(v) for v in values])

    @staticmethod
    def instant(value: Any) -> datetime | None:
        """A timestamp column's value as an aware UTC datetime."""
        if value is None or isinstance(value, datetime):
            return value.astimezone(UTC) if value is not None else None
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    @staticmethod
    def json(value: Any) -> Any:
        """A JSON column's value, decoded (the PostgreSQL driver decodes it already)."""
        return json.loads(value) if isinstance(value, str | bytes) else value


def _param(value: Any) -> Any:
    """A parameter for asyncpg: JSON documents travel as text; a list of scalars stays an array."""
    if isinstance(value, dict) or (
        isinstance(value, list | tuple) and any(isinstance(v, dict | list | tuple) for v in value)
    ):
        return json.dumps(value)
    return value


_AS_IS = frozenset({int, str, float, type(None)})


@lru_cache(maxsize=4096)
def _sqlite_instant(value: datetime) -> str:
    """An instant as SQLAlchemy stores it in SQLite: UTC text that compares in instant order (one
    posting writes the same few instants many times: remembered)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: every instant must be timezone-aware")
    v = value.astimezone(UTC)
    date_part = f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    return f"{date_part} {v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"


def sqlite_value(value: Any) -> Any:
    """A Python value as SQLAlchemy stores it in SQLite (UTC text instants, ISO dates, JSON text)."""
    if type(value) in _AS_IS:  # most values: one set lookup (this runs ~100 times per posting)
        return value
    if isinstance(value, datetime):
        return _sqlite_instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value) if value else ("{}" if isinstance(value, dict) else "[]")
    if isinstance(value, bool):
        return int(value)
    return value


_PLACEHOLDER = re.compile(r"\$(\d+)")
_FOR_UPDATE = re.compile(r"\s+FOR\s+UPDATE(\s+OF\s+\w+)?(\s+SKIP\s+LOCKED)?", re.IGNORECASE)


@cache
def _sqlite_sql(sql: str) -> str:
    return _FOR_UPDATE.sub("", _PLACEHOLDER.sub(r"?\1", sql))


class SqliteUnit(Unit):
    """A unit on the writer thread's ``sqlite3`` connection; its coroutines never suspend."""

    dialect = "sqlite"
    locked = True

    def __init__(self, conn: sqlite3.Connection, scope: str = "") -> None:
        self.conn = conn
        self.scope = scope
        self._next: dict[str, int] = {}

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return self.conn.execute(_sqlite_sql(sql), [sqlite_value(a) for a in args]).fetchall()

    async def execute(self, sql: str, *args: Any) -> int:
        return self.conn.execute(_sqlite_sql(sql), [sqlite_value(a) for a in args]).rowcount

    async def next_ids(self, table: str, count: int) -> list[int]:
        if table not in self._next:  # the writer lock is held: nobody else inserts meanwhile
            self._next[table] = int(
                self.conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]
            )
        first = self._next[table] + 1
        self._next[table] += count
        return list(range(first, first + count))

    async def apply(self, booking: Booking) -> None:
        try:
            _apply_sqlite(self.conn, booking)
            for sql, args in _handovers(booking):
                changed = self.conn.execute(_sqlite_sql(sql), [sqlite_value(a) for a in args]).rowcount
                if sql is _CLOSE and changed != 1:
                    raise BookingError(f"member {args[1]} is no longer active: it cannot be closed")
        except sqlite3.IntegrityError as exc:
            text = str(exc)
            if text.startswith("UNIQUE constraint failed: "):
                raise Duplicate(text.removeprefix("UNIQUE constraint failed: ").split(".")[0], text) from exc
            raise


class PgUnit(Unit):
    """A unit on an ``asyncpg`` connection, inside a transaction (locked) or not (optimistic)."""

    dialect = "postgresql"

    def __init__(self, conn: Any, *, locked: bool, scope: str = "", group: GroupCommit | None = None) -> None:
        self.conn = conn
        self.locked = locked
        self.scope = scope
        self.group = group
        self._applied = False

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return cast(list[Sequence[Any]], await self.conn.fetch(sql, *[_param(a) for a in args]))

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self.conn.execute(sql, *[_param(a) for a in args])
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    def any_of(self, placeholder: str, kind: str = "bigint") -> str:
        return f"= ANY({placeholder}::{kind}[])"

    def listed(self, values: Sequence[Any]) -> Any:
        return list(values)

    async def next_ids(self, table: str, count: int) -> list[int]:
        rows = await self.conn.fetch(
            f"SELECT nextval('{table}_id_seq') FROM generate_series(1, $1::integer)", count
        )
        return [int(r[0]) for r in rows]

    async def apply(self, booking: Booking) -> None:
        if not self.locked and self._applied:
            raise RuntimeError("an optimistic unit writes once: two statements would not be atomic")
        self._applied = True
        if not booking:
            return
        handovers = _handovers(booking)
        if handovers and not self.locked:
            raise BookingError("rows change owner only in a locked unit: one statement cannot do it")
        if self.group is not None and not self.locked:
            await self.group.write(self.conn, booking)
        else:
            await _write(self.conn, booking)
        for sql, args in handovers:
            changed = await self.execute(sql, *args)
            if sql is _CLOSE and changed != 1:
                raise BookingError(f"member {args[1]} is no longer active: it cannot be closed")


#: A merge's rows changing owner, after the booking's own statement: on PostgreSQL a row updated twice
#: by one statement keeps only one of the changes (a lot drawn by the booking and moved), so these
#: follow as statements of their own, in the locked unit's transaction.
_REASSIGN = "UPDATE {table} SET member_id = $3 WHERE tenant_id = $1 AND member_id = $2"
_CLOSE = (
    "UPDATE members SET state = 'merged', merged_into = $3, closed_at = $4, revision = revision + 1"
    " WHERE tenant_id = $1 AND id = $2 AND state = 'active'"
)


def _handovers(booking: Booking) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements that move a merge's rows to their new owner and close the merged member."""
    out: list[tuple[str, tuple[Any, ...]]] = [
        (_REASSIGN.format(table=table), (booking.tenant_id, source, target))
        for table, source, target in booking.reassigned
    ]
    out += [(_CLOSE, (booking.tenant_id, m, into, at)) for m, (at, into) in booking.closed.items()]
    return out


async def _write(conn: Any, booking: Booking) -> None:
    """A booking as one statement on an ``asyncpg`` connection; its errors in the ledger's terms."""
    sql, args = _pg_statement(booking)
    import asyncpg

    try:
        await conn.execute(sql, *args)
    except asyncpg.UniqueViolationError as exc:
        raise Duplicate(exc.table_name or "", str(exc)) from exc
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == STALE_SQLSTATE:
            raise Stale(str(exc)) from exc
        raise


class _Waiter:
    """A booking waiting for a group write, on the connection its unit read on (and holds meanwhile)."""

    __slots__ = ("booking", "conn", "done", "writer")

    def __init__(self, booking: Booking, conn: Any) -> None:
        self.booking = booking
        self.conn = conn
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: The group write running on this waiter's connection, once it was chosen to carry one.
        self.writer: asyncio.Task[None] | None = None


class GroupCommit:
    """Writes the bookings of concurrent optimistic units together (PostgreSQL): group commit.

    Most of what a till post costs PostgreSQL is per statement, not per row (a posting alone: ~1.3 ms
    of server CPU; in an import batch: ~0.2 ms). While one booking is being written, the ones that
    arrive wait; when it is done they are written as one statement, and so on: at low load nothing
    waits, under load the database does a fraction of the work per posting. Each booking keeps its own
    revision checks. If the combined statement is refused by the database (a member changed, a receipt
    sent twice: nothing was written), the group is written booking by booking, so each unit gets its
    own answer; if the connection fails, every booking of the group gets that error (whether it was
    written is then unknown, as for any write).

    A group is written on the connection of its first waiting unit, never on one more from the pool:
    a waiting unit keeps the pooled connection it read on (its locked retry needs it when the write
    finds it stale), so with as many waiting units as the pool holds, a write that asked the pool for
    one more connection waited for one that only the end of that write would free: every posting
    stalled for the pool's timeout, then failed. The unit lending its connection gets its answer only
    when the write is done with it, and if cancelled meanwhile, waits for the write before it gives the
    connection back.
    """

    #: Most bookings one combined statement holds.
    MAX_GROUP = 32

    def __init__(self) -> None:
        self._waiting: list[_Waiter] = []
        #: A booking is being written; bookings wait only while one is (and it is cleared when none waits).
        self._writing = False
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, conn: Any, booking: Booking) -> None:
        """Write ``booking`` on ``conn`` if nothing is being written, else wait for its group's write."""
        if not self._writing:
            self._writing = True
            try:
                await _write(conn, booking)
            finally:
                self._next()
            return
        waiter = _Waiter(booking, conn)
        self._waiting.append(waiter)
        try:
            await waiter.done
        except asyncio.CancelledError:
            if waiter in self._waiting:  # not taken yet: it will not be written
                self._waiting.remove(waiter)
            elif waiter.writer is not None:  # a group is written on this connection: not given back before
                await _finished(waiter.writer)
            raise

    def _next(self) -> None:
        """A write is done: the next group is written on its first waiting unit's connection."""
        while self._waiting:
            first = self._waiting.pop(0)
            if not first.done.done():  # done already: its unit was cancelled
                first.writer = self._flusher = asyncio.ensure_future(self._flush(first))
                return
        self._writing = False

    async def _flush(self, first: _Waiter) -> None:
        self._waiting.insert(0, first)
        group = self._take()  # ``first`` too, unless its unit was cancelled since
        try:
            await _write_group(first.conn, group)
        finally:
            self._next()

    def _take(self) -> list[_Waiter]:
        """The group written next: the first waiting booking and those after it that go with it in one
        statement (one tenant, no member twice, at most MAX_GROUP)."""
        group: list[_Waiter] = []
        members: set[int] = set()
        rest = []
        for waiter in self._waiting:
            booking = waiter.booking
            if waiter.done.done():  # its unit was cancelled while it waited: not written
                continue
            if (
                len(group) < self.MAX_GROUP
                and (not group or booking.tenant_id == group[0].booking.tenant_id)
                and not members & booking.members.keys()
            ):
                group.append(waiter)
                members |= booking.members.keys()
            else:
                rest.append(waiter)
        self._waiting = rest
        return group


async def _finished(task: asyncio.Task[None]) -> None:
    """Wait for ``task`` to end, whatever cancels the waiting meanwhile (the caller raises it after)."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([task])


async def _write_group(conn: Any, group: Sequence[_Waiter]) -> None:
    """Write a group's bookings on ``conn``: as one statement, or, when that is refused, booking by
    booking. Each waiter gets its answer when the connection is no longer used (one of them holds it)."""
    import asyncpg

    answers: dict[_Waiter, Exception | None] = {}
    try:
        combined = merged([w.booking for w in group]) if len(group) > 1 else None
        if combined is not None:
            try:
                await _write(conn, combined)
            except (asyncpg.PostgresError, Duplicate, Stale) as exc:
                if outage(exc) is not None:
                    raise  # the connection is gone (a restart): not a refusal
                # refused as a whole, nothing written: each booking alone, below
            else:
                answers = dict.fromkeys(group)
                return
        for waiter in group:
            try:
                await _write(conn, waiter.booking)
            except (asyncpg.PostgresError, Duplicate, Stale) as exc:
                if outage(exc) is not None:
                    raise  # every booking not yet answered gets it; its unit drops the connection
                answers[waiter] = exc
            else:
                answers[waiter] = None
    except BaseException as exc:  # the connection failed, or the write was cancelled
        error = exc if isinstance(exc, Exception) else ConnectionError("the write was cancelled")
        for waiter in group:
            answers.setdefault(waiter, error)
        if not isinstance(exc, Exception):
            raise
    finally:
        for waiter, answer in answers.items():
            if not waiter.done.done():
                if answer is None:
                    waiter.done.set_result(None)
                else:
                    waiter.done.set_exception(answer)


_groups: weakref.WeakKeyDictionary[Database, GroupCommit] = weakref.WeakKeyDictionary()


def _drive(coro: Awaitable[T]) -> T:
    """Run a coroutine that never suspends (a SQLite unit's) to its end, on the calling thread."""
    gen = coro.__await__()
    try:
        gen.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    gen.close()
    raise RuntimeError("a SQLite unit of work waited on something other than its connection")


async def run(db: Database, op: Callable[[Unit], Awaitable[T]], *, optimistic: bool = False) -> T:
    """Run the ledger operation ``op`` in one unit of work (see the module docstring). ``optimistic``
    marks a small operation on one member (a till's): on SQLite it may run on the calling thread."""
    faults.point("ledger.before_write")
    result = await _run(db, op, optimistic)
    faults.point("ledger.after_commit")
    return result


def _sqlite_unit(op: Callable[[Unit], Awaitable[T]], scope: str) -> Callable[[sqlite3.Connection], T]:
    def unit(conn: sqlite3.Connection) -> T:
        result = _drive(op(SqliteUnit(conn, scope)))
        faults.point("ledger.before_commit")
        return result

    return unit


async def _run(db: Database, op: Callable[[Unit], Awaitable[T]], optimistic: bool) -> T:
    scope = db.scope
    if db.dialect == "sqlite":
        return await db.sqlite_writer.run(_sqlite_unit(op, scope), here=optimistic)
    async with db.driver_connection() as conn:
        if optimistic:
            group = _groups.get(db)
            if group is None:
                group = _groups[db] = GroupCommit()
            try:
                return await op(PgUnit(conn, locked=False, scope=scope, group=group))
            except (Stale, BookingError):
                # Somebody changed the member in between: its reads did not agree with each other (a
                # booking that does not add up), or the write found a newer revision. Again, locked:
                # a booking error then is a real one.
                pass
        async with conn.transaction():
            result = await op(PgUnit(conn, locked=True, scope=scope))
            faults.point("ledger.before_commit")
            return result


# --- applying a booking: SQLite, statement by statement on one connection -------------------------


def _ordered(tables: Sequence[str]) -> list[str]:
    rank = {t: i for i, t in enumerate(INSERT_ORDER)}
    return sorted(tables, key=lambda t: rank.get(t, len(rank)))


@cache
def _sqlite_insert(table: str, columns: tuple[str, ...]) -> tuple[str, tuple[bool, ...]]:
    """The INSERT of a table's columns, and which columns need converting (instants, dates, JSON):
    converting only those is most of what writing a posting costs in Python."""
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    return sql, tuple(_pg_type(table, c) in ("timestamptz", "date") or _is_json(table, c) for c in columns)


def _apply_sqlite(conn: sqlite3.Connection, b: Booking) -> None:
    b.fold_new_members()
    for table in _ordered(list(b.inserts)):
        rows = b.inserts[table]
        if not rows:
            continue
        sql, convert = _sqlite_insert(table, tuple(rows[0]))
        values = [
            [sqlite_value(v) if c else v for v, c in zip(r.values(), convert, strict=True)] for r in rows
        ]
        if len(values) == 1:
            conn.execute(sql, values[0])
        else:
            conn.executemany(sql, values)
    if b.members:
        changed = 0
        for m in b.members.values():
            changed += conn.execute(
                "UPDATE members SET available = available + ?1, pending = pending + ?2, debt = debt + ?3,"
                " visits = visits + ?4,"
                " last_visit_at = CASE WHEN ?5 IS NOT NULL AND (last_visit_at IS NULL OR last_visit_at < ?5)"
                " THEN ?5 ELSE last_visit_at END,"
                " tier = COALESCE(?6, tier), tier_since = CASE WHEN ?6 IS NULL THEN tier_since ELSE ?7 END,"
                " revision = revision + 1"
                " WHERE tenant_id = ?8 AND id = ?9 AND (?10 IS NULL OR revision = ?10)",
                [
                    m.available,
                    m.pending,
                    m.debt,
                    m.visits,
                    sqlite_value(m.last_visit_at),
                    m.tier,
                    sqlite_value(m.tier_since),
                    b.tenant_id,
                    m.holder.id,
                    m.holder.revision,
                ],
            ).rowcount
        if changed != len(b.members):
            raise Stale(f"{len(b.members) - changed} member(s) changed since they were read")
    if b.lot_changes:
        found = conn.executemany(
            "UPDATE point_lots SET remaining = remaining + ?, expired = expired + ?"
            " WHERE tenant_id = ? AND member_id = ? AND id = ?",
            [
                [u.add["remaining"], u.add["expired"], b.tenant_id, u.member_id, lot_id]
                for lot_id, u in b.lot_changes.items()
            ],
        ).rowcount
        _all_there("point_lots", found, len(b.lot_changes))
    for table, changes in b.updates.items():
        sets, adds = _update_shape(table, changes)
        assignments = [f"{c} = ?" for c in sets] + [f"{c} = {c} + ?" for c in adds]
        member = _with_member(table, changes)
        found = conn.executemany(
            f"UPDATE {table} SET {', '.join(assignments)}"
            f" WHERE tenant_id = ?{' AND member_id = ?' if member else ''} AND id = ?",
            [
                [sqlite_value(u.set[c]) for c in sets]
                + [u.add[c] for c in adds]
                + [b.tenant_id, *([u.member_id] if member else []), row_id]
                for row_id, u in changes.items()
            ],
        ).rowcount
        _all_there(table, found, len(changes))
    for table, by_key in b.upserts.items():
        key, actions = UPSERTS[table]
        rows = list(by_key.values())
        columns = list(rows[0])
        on_conflict = ", ".join(
            f"{c} = excluded.{c}" if actions[c] == "set" else f"{c} = {c} + excluded.{c}"
            for c in columns
            if c in actions
        )
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {on_conflict}",
            [[sqlite_value(r[c]) for c in columns] for r in rows],
        )


def _all_there(table: str, found: int, expected: int) -> None:
    """As on PostgreSQL: a booking that changes a row that is not there is a bug, and nothing stays."""
    if found != expected:
        raise RuntimeError(f"a booking changed {expected} rows of {table}; {found} were there")


def _with_member(table: str, changes: dict[int, _Update]) -> bool:
    """Whether the updates of ``table`` name their rows' member (all of them or none: one statement)."""
    named = {u.member_id is not None for u in changes.values()}
    if len(named) > 1:
        raise ValueError(f"updates of {table} in one booking must all name their member, or none")
    return named == {True}


def _update_shape(table: str, changes: dict[int, _Update]) -> tuple[list[str], list[str]]:
    first = next(iter(changes.values()))
    sets, adds = sorted(first.set), sorted(first.add)
    for u in changes.values():
        if sorted(u.set) != sets or sorted(u.add) != adds:
            raise ValueError(f"updates of {table} in one booking must change the same columns")
    return sets, adds


# --- applying a booking: PostgreSQL, one statement ------------------------------------------------


@cache
def _table(name: str) -> Table:
    from loyalty.storage.models import load_all

    load_all()
    return Base.metadata.tables[name]


@cache
def _pg_type(table: str, column: str) -> str:
    """The array element type of a column, for ``unnest($n::type[])``; JSON travels as text."""
    if (table, column) in PG_ONLY_COLUMNS:
        return PG_ONLY_COLUMNS[table, column]
    kind: TypeEngine[Any] = _table(table).c[column].type
    impl = getattr(kind, "impl", kind)
    if isinstance(impl, JSON):
        return "text"
    if isinstance(impl, DateTime):
        return "timestamptz"
    if isinstance(impl, Date):
        return "date"
    if isinstance(impl, Integer):  # BigInteger too (a subclass); ids and amounts are 64-bit
        return "bigint"
    if isinstance(impl, String | Text):
        return "text"
    raise TypeError(f"{table}.{column}: no PostgreSQL array type for {kind!r}")


@cache
def _is_json(table: str, column: str) -> bool:
    if (table, column) in PG_ONLY_COLUMNS:
        return False
    kind = _table(table).c[column].type
    return isinstance(getattr(kind, "impl", kind), JSON)


@cache
def _json_columns(table: str, columns: tuple[str, ...]) -> tuple[bool, ...]:
    return tuple(_is_json(table, c) for c in columns)


def _arrays(table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """One array per column (JSON as text), for ``unnest``."""
    out: list[list[Any]] = []
    for i, is_json in enumerate(_json_columns(table, columns)):
        if is_json:
            out.append([None if r[i] is None else json.dumps(r[i]) for r in rows])
        else:
            out.append([r[i] for r in rows])
    return out


def _item_months(b: Booking) -> None:
    """Items carry their transaction's ``occurred_at`` on PostgreSQL, where it is their partition key
    (:mod:`loyalty.storage.partitions`); an item is always booked with its transaction."""
    items = [i for i in b.inserts.get("transaction_items", ()) if "occurred_at" not in i]
    if not items:
        return
    when = {t["id"]: t["occurred_at"] for t in b.inserts.get("transactions", ())}
    for item in items:
        if item["transaction_id"] not in when:
            raise BookingError(f"items of transaction {item['transaction_id']} booked without it")
        item["occurred_at"] = when[item["transaction_id"]]


def _pg_statement(b: Booking) -> tuple[str, list[Any]]:
    """The one statement that writes a booking: its text depends only on the booking's shape (which
    tables, which columns) and is built once per shape; the rows travel as one array per column.
    Building it anew for every posting cost ~0.4 ms of CPU, a third of a posting (cProfile)."""
    b.fold_new_members()
    _item_months(b)
    shape: list[tuple[Any, ...]] = []
    args: list[Any] = [b.tenant_id]
    for table, rows in b.inserts.items():
        if rows:
            columns = tuple(rows[0])
            shape.append(("insert", table, columns))
            args += _arrays(table, columns, [tuple(r.values()) for r in rows])
    if b.members:
        ms = list(b.members.values())
        shape.append(("members",))
        args += _arrays(
            "members",
            MEMBER_CHANGE,
            [(m.holder.id, m.holder.revision, *(getattr(m, c) for c in MEMBER_CHANGE[2:])) for m in ms],
        )
        args.append(len(ms))
    if b.lot_changes:
        shape.append(("lots",))
        args += _arrays(
            "point_lots",
            ("id", "member_id", "remaining", "expired"),
            [
                (lot_id, u.member_id, u.add["remaining"], u.add["expired"])
                for lot_id, u in b.lot_changes.items()
            ],
        )
        args.append(len(b.lot_changes))
    for table, changes in b.updates.items():
        sets, adds = _update_shape(table, changes)
        member = _with_member(table, changes)
        shape.append(("update", table, tuple(sets), tuple(adds), member))
        keys = ("id", "member_id") if member else ("id",)
        args += _arrays(
            table,
            (*keys, *sets, *adds),
            [
                ((row_id, u.member_id) if member else (row_id,))
                + tuple(u.set[c] for c in sets)
                + tuple(u.add[c] for c in adds)
                for row_id, u in changes.items()
            ],
        )
        args.append(len(changes))
    for table, by_key in b.upserts.items():
        upserted = list(by_key.values())
        columns = tuple(upserted[0])
        shape.append(("upsert", table, columns))
        args += _arrays(table, columns, [tuple(r.values()) for r in upserted])
    return _pg_sql(tuple(shape)), args


@cache
def _pg_sql(shape: tuple[tuple[Any, ...], ...]) -> str:
    """The statement of a booking of this shape: a data-modifying CTE per part, then the checks."""
    n = 1  # $1 is the tenant

    def arrays(table: str, columns: Sequence[str]) -> str:
        nonlocal n
        placeholders = []
        for c in columns:
            n += 1
            placeholders.append(f"${n}::{_pg_type(table, c)}[]")
        return f"unnest({', '.join(placeholders)}) AS u({', '.join(columns)})"

    def count() -> str:
        nonlocal n
        n += 1
        return f"${n}::bigint"

    def select_list(table: str, columns: Sequence[str]) -> str:
        return ", ".join(f"u.{c}::jsonb" if _is_json(table, c) else f"u.{c}" for c in columns)

    ctes: list[str] = []
    stale, checks = "true", []
    for part in shape:
        name = f"w{len(ctes)}"
        kind = part[0]
        if kind == "insert":
            _, table, columns = part
            source = arrays(table, columns)
            selected = select_list(table, columns)
            body = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selected} FROM {source}"
        elif kind == "members":
            source = arrays("members", MEMBER_CHANGE)
            body = (
                "UPDATE members t SET available = t.available + u.available, pending = t.pending + u.pending,"
                " debt = t.debt + u.debt, visits = t.visits + u.visits,"
                " last_visit_at = CASE WHEN u.last_visit_at IS NOT NULL AND"
                " (t.last_visit_at IS NULL OR t.last_visit_at < u.last_visit_at)"
                " THEN u.last_visit_at ELSE t.last_visit_at END,"
                " tier = COALESCE(u.tier, t.tier),"
                " tier_since = CASE WHEN u.tier IS NULL THEN t.tier_since ELSE u.tier_since END,"
                " revision = t.revision + 1"
                f" FROM {source} WHERE t.tenant_id = $1 AND t.id = u.id"
                " AND (u.revision IS NULL OR t.revision = u.revision)"
            )
            stale = f"(SELECT count(*) FROM {name}) = {count()}"
        elif kind == "lots":
            source = arrays("point_lots", ("id", "member_id", "remaining", "expired"))
            body = (
                "UPDATE point_lots t SET remaining = t.remaining + u.remaining,"
                f" expired = t.expired + u.expired FROM {source}"
                " WHERE t.tenant_id = $1 AND t.member_id = u.member_id AND t.id = u.id"
            )
            checks.append(f"(SELECT count(*) FROM {name}) = {count()}")
        elif kind == "update":
            _, table, sets, adds, member = part
            source = arrays(table, ("id", *(("member_id",) if member else ()), *sets, *adds))
            assignments = [f"{c} = u.{c}{'::jsonb' if _is_json(table, c) else ''}" for c in sets]
            assignments += [f"{c} = t.{c} + u.{c}" for c in adds]
            body = (
                f"UPDATE {table} t SET {', '.join(assignments)} FROM {source}"
                f" WHERE t.tenant_id = $1{' AND t.member_id = u.member_id' if member else ''} AND t.id = u.id"
            )
            checks.append(f"(SELECT count(*) FROM {name}) = {count()}")
        else:
            _, table, columns = part
            key, actions = UPSERTS[table]
            source = arrays(table, columns)
            on_conflict = ", ".join(
                f"{c} = excluded.{c}" if actions[c] == "set" else f"{c} = {table}.{c} + excluded.{c}"
                for c in columns
                if c in actions
            )
            body = (
                f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select_list(table, columns)}"
                f" FROM {source} ON CONFLICT ({', '.join(key)}) DO UPDATE SET {on_conflict}"
            )
        ctes.append(f"{name} AS ({body} RETURNING 1)")
    bug = " AND ".join(checks) or "true"
    return (
        f"WITH {', '.join(ctes)} SELECT loyalty_assert({stale}, '{STALE_SQLSTATE}',"
        " 'a member changed since it was read'),"
        f" loyalty_assert({bug}, 'XX000', 'a booking changed a row that is not there'),"
        " $1::bigint AS tenant"  # typed here, whether or not a part uses it
    )
