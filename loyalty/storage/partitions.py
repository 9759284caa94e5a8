"""Monthly partitions of the big append-only tables on PostgreSQL (SQLite keeps plain tables).

Years of history make ``transactions``, ``transaction_items``, ``ledger_entries`` and ``events`` the
largest tables by far, and everything that reads them in bulk reads a time range: a month's report,
a tier window, a partner's settlement, a retention cut. Declarative RANGE partitioning by month lets
PostgreSQL read only the months a query names (pruning) and lets retention drop a whole month of
detail at once instead of deleting row by row.

What partitioning costs, and how the schema pays it (migration 0007 builds this on an existing
database; the models keep describing the logical schema, which SQLite has exactly):

* **Keys.** A partitioned table's primary key and unique constraints must include the partition key,
  so the primary keys become ``(id, <key>)``. Ids still come from the table's own sequence (the
  same one as before the migration, so new ids continue the old ones); no writer supplies ids of its
  own, so ``id`` stays unique in practice, and ``loyalty audit`` checks it. A line's
  ``(transaction_id, line)`` becomes ``(transaction_id, line, occurred_at)``: the same guarantee,
  since a line's month is its purchase's.
* **The till's receipt.** ``(tenant_id, outlet_id, external_id)`` must stay unique across all months:
  a receipt sent again with another ``occurred_at`` (a till whose clock jumped) must still be refused.
  It cannot include the month, so it moves to a small unpartitioned table, ``transaction_receipts``,
  filled by a trigger on ``transactions`` for every writer (the ledger, the importer, a psql session):
  a second receipt raises the same unique violation, named after ``transactions`` and its old
  constraint, so the writers' duplicate handling is unchanged.
* **Foreign keys into partitioned tables** must reference a unique key, i.e. include the month, and
  PostgreSQL checks such a key against the one partition the row was in: a row moved to another
  partition (a DEFAULT split, below) breaks it even though the row is still in the table. So every
  key into the partitioned tables is dropped: items, lots, refunds, redemptions and vouchers to
  their transaction, webhook deliveries to their event. Only the ledger writer and the dispatcher
  write these rows, and ``loyalty audit`` reports orphans (an item also when its copied month is not
  its transaction's). ``transaction_items`` carries its transaction's ``occurred_at`` (PostgreSQL
  only; the ledger writer fills it from the transaction row of the same booking) as its partition
  key, so a month of basket lines is a month of purchases.
* **DEFAULT partitions** take any row no month partition takes (a far-future or far-past instant), so
  an insert never fails for want of a partition. :func:`ensure` creates months ahead (the migration
  and ``loyalty jobs run all`` call it); when it creates a month that already has rows in DEFAULT, it
  moves them into the new partition in the same transaction (see :func:`_split`).

Partition bounds are UTC months: one partition serves every tenant whatever its time zone, so a
report over a local month reads that month's partition and, for the hour or two of offset, its
neighbour's.

This module runs DDL and catalog queries only; which partitions retention may drop is decided
above it (:mod:`loyalty.privacy.retention`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Partitioned table -> partition key column.
PARTITIONED: dict[str, str] = {
    "transactions": "occurred_at",
    "transaction_items": "occurred_at",
    "ledger_entries": "created_at",
    "events": "occurred_at",
}
#: A month: (year, month), UTC.
Month = tuple[int, int]
#: The books: never detached or dropped by retention.
BOOKS = ("transactions", "ledger_entries")
#: Detail: retention may drop whole months of these.
DETAIL = ("transaction_items", "events")
#: Months created ahead of the current one (by the migration, ``loyalty db partitions`` and the jobs):
#: a quarter, so a missed nightly run never sends a month's rows to DEFAULT.
AHEAD_MONTHS = 3
#: Most month partitions the migration creates behind the newest month of existing data (20 years);
#: older rows (a far-past instant) stay in DEFAULT rather than making hundreds of empty partitions.
MAX_HISTORY_MONTHS = 240
#: How long partition DDL waits for a lock before giving up: it needs a moment of exclusive access
#: to the parent table, and every till statement queues behind a waiting DDL statement, so it waits
#: briefly and tries again (LOCK_ATTEMPTS times) rather than stall the tills for long.
LOCK_TIMEOUT = "1s"
LOCK_ATTEMPTS = 5
#: PostgreSQL's "lock not available" (a lock_timeout ran out).
_LOCK_NOT_AVAILABLE = "55P03"
#: Columns that exist on PostgreSQL only (the models describe the SQLite schema): their array type.
PG_ONLY_COLUMNS: dict[tuple[str, str], str] = {("transaction_items", "occurred_at"): "timestamptz"}
#: Indexes that exist on PostgreSQL only: the receipt lookup, now that its unique constraint moved.
PG_ONLY_INDEXES = ("ix_transactions_tenant_id_outlet_id_external_id",)
#: The unpartitioned table that keeps a till's receipt unique across months.
RECEIPTS = "transaction_receipts"
#: Foreign keys into partitioned tables that migration 0007 dropped (name, referring table).
DROPPED_FOREIGN_KEYS = (
    ("fk_transaction_items_transaction_id_transactions", "transaction_items"),
    ("fk_point_lots_transaction_id_transactions", "point_lots"),
    ("fk_refunds_transaction_id_transactions", "refunds"),
    ("fk_redemptions_transaction_id_transactions", "redemptions"),
    ("fk_vouchers_transaction_id_transactions", "vouchers"),
    ("fk_webhook_deliveries_event_id_events", "webhook_deliveries"),
)
#: Unique constraints of the models that hold differently on partitioned tables (see the docstring).
REPLACED_UNIQUES = (
    "uq_transactions_tenant_id_outlet_id_external_id",  # transaction_receipts
    "uq_transactions_tenant_id_member_id_id",  # (id) comes from a sequence; nothing refers to it
    "uq_transaction_items_transaction_id_line",  # now (transaction_id, line, occurred_at)
)

_MONTH = re.compile(r"^(?P<table>\w+)_p(?P<year>\d{4})_(?P<month>\d{2})$")

RECEIPT_FUNCTION = f"""
CREATE OR REPLACE FUNCTION loyalty_transaction_receipt() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM {RECEIPTS} WHERE tenant_id = OLD.tenant_id AND outlet_id = OLD.outlet_id
            AND external_id = OLD.external_id AND transaction_id = OLD.id;
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION USING ERRCODE = 'LY002',
            MESSAGE = 'a transaction''s tenant, outlet and receipt id never change';
    END IF;
    INSERT INTO {RECEIPTS} (tenant_id, outlet_id, external_id, transaction_id, occurred_at)
    VALUES (NEW.tenant_id, NEW.outlet_id, NEW.external_id, NEW.id, NEW.occurred_at)
    ON CONFLICT (tenant_id, outlet_id, external_id) DO NOTHING;
    -- A row moving between partitions (a DEFAULT split) is the same transaction: its receipt stands.
    IF NOT FOUND AND NOT EXISTS (
        SELECT 1 FROM {RECEIPTS} WHERE tenant_id = NEW.tenant_id AND outlet_id = NEW.outlet_id
            AND external_id = NEW.external_id AND transaction_id = NEW.id) THEN
        RAISE EXCEPTION USING ERRCODE = 'unique_violation', TABLE = 'transactions',
            CONSTRAINT = 'uq_transactions_tenant_id_outlet_id_external_id',
            MESSAGE = 'duplicate key value violates unique constraint'
                      ' "uq_transactions_tenant_id_outlet_id_external_id"',
            DETAIL = format('Key (tenant_id, outlet_id, external_id)=(%s, %s, %s) already exists.',
                            NEW.tenant_id, NEW.outlet_id, NEW.external_id);
    END IF;
    RETURN NEW;
END
$$
"""
RECEIPT_TRIGGERS = (
    "CREATE TRIGGER transactions_receipt BEFORE INSERT OR DELETE ON transactions"
    " FOR EACH ROW EXECUTE FUNCTION loyalty_transaction_receipt()",
    "CREATE TRIGGER transactions_receipt_fixed BEFORE UPDATE OF tenant_id, outlet_id, external_id"
    " ON transactions FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id"
    " OR OLD.outlet_id IS DISTINCT FROM NEW.outlet_id OR OLD.external_id IS DISTINCT FROM NEW.external_id)"
    " EXECUTE FUNCTION loyalty_transaction_receipt()",
)


# --- months and names -------------------------------------------------------------------------------


def month_of(instant: datetime) -> tuple[int, int]:
    """The UTC month an instant falls in (the partition it goes to)."""
    at = instant.astimezone(UTC)
    return at.year, at.month


def shift(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


def bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """The UTC instants a month partition holds: ``[start, end)``."""
    return datetime(year, month, 1, tzinfo=UTC), datetime(*shift(year, month, 1), 1, tzinfo=UTC)


def months(first: tuple[int, int], last: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Every month from ``first`` to ``last``, both included."""
    y, m = first
    while (y, m) <= last:
        yield y, m
        y, m = shift(y, m, 1)


def partition_name(table: str, year: int, month: int) -> str:
    return f"{table}_p{year:04d}_{month:02d}"


def default_name(table: str) -> str:
    return f"{table}_default"


def parse_name(name: str) -> tuple[str, int, int] | None:
    """(table, year, month) of a month partition's name, None for anything else."""
    found = _MONTH.match(name)
    if found is None or found["table"] not in PARTITIONED:
        return None
    return found["table"], int(found["year"]), int(found["month"])


def _literal(instant: datetime) -> str:
    return f"'{instant.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')}+00'"


def create_month_sql(table: str, year: int, month: int) -> list[str]:
    """The statements that create one month partition (the truncate guard of the books with it:
    a statement trigger on the parent does not fire for a TRUNCATE of one partition)."""
    start, end = bounds(year, month)
    name = partition_name(table, year, month)
    out = [
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table}"
        f" FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
    ]
    out += _truncate_guard(table, name)
    return out


def create_default_sql(table: str) -> list[str]:
    name = default_name(table)
    return [f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} DEFAULT", *_truncate_guard(table, name)]


def _truncate_guard(table: str, name: str) -> list[str]:
    if table != "ledger_entries":
        return []
    return [
        f"DROP TRIGGER IF EXISTS {name}_no_truncate ON {name}",
        f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name}"
        " FOR EACH STATEMENT EXECUTE FUNCTION loyalty_append_only()",
    ]


# --- the catalog ------------------------------------------------------------------------------------

_LIST = """
SELECT p.relname AS parent, c.relname AS partition, pg_get_expr(c.relpartbound, c.oid) AS bound,
       c.reltuples::bigint AS estimate
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
JOIN pg_namespace n ON n.oid = p.relnamespace
WHERE n.nspname = current_schema() AND p.relname = ANY($1::text[])
ORDER BY p.relname, c.relname"""


@dataclass(frozen=True, slots=True)
class Partition:
    table: str
    name: str
    #: The month it holds, None for DEFAULT.
    month: tuple[int, int] | None
    #: The planner's row estimate (-1: never analysed).
    estimate: int

    @property
    def range(self) -> tuple[datetime, datetime] | None:
        return None if self.month is None else bounds(*self.month)


async def is_partitioned(conn: Any, table: str = "ledger_entries") -> bool:
    """Whether ``table`` is partitioned here (PostgreSQL after migration 0007)."""
    kind = await conn.fetchval(
        "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relname = $1",
        table,
    )
    return bool(kind == "p")


async def partitions(conn: Any, tables: Sequence[str] = tuple(PARTITIONED)) -> list[Partition]:
    """The partitions of ``tables`` (an ``asyncpg`` connection), months in order, DEFAULT first."""
    out = []
    for row in await conn.fetch(_LIST, list(tables)):
        parsed = parse_name(row["partition"])
        month = (parsed[1], parsed[2]) if parsed is not None and parsed[0] == row["parent"] else None
        if month is None and row["bound"] != "DEFAULT":
            raise RuntimeError(f"partition {row['partition']} of {row['parent']} is not named by its month")
        out.append(Partition(row["parent"], row["partition"], month, int(row["estimate"])))
    return out


# --- ensure: months ahead, DEFAULT split --------------------------------------------------------------


@dataclass(slots=True)
class Ensured:
    """What :func:`ensure` did: partitions created, and rows moved out of DEFAULT into them."""

    created: list[str] = field(default_factory=list)
    #: partition -> rows moved into it from DEFAULT.
    moved: dict[str, int] = field(default_factory=dict)


async def ensure(
    conn: Any,
    *,
    now: datetime,
    ahead: int = AHEAD_MONTHS,
    since: datetime | None = None,
    tables: Sequence[str] = tuple(PARTITIONED),
) -> Ensured:
    """Make sure every partitioned table has a partition for each month from ``since`` (default: the
    current month) to ``ahead`` months after ``now``, and a DEFAULT. Idempotent. A month whose rows
    already sit in DEFAULT is split out of it (:func:`_split`). Each table is its own transaction."""
    if not 0 <= ahead <= 120:
        raise ValueError("ahead must be 0 to 120 months")
    done = Ensured()
    first = month_of(since or now)
    last = shift(*month_of(now), ahead)
    for table in tables:
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                await _ensure_table(conn, table, first, last, done)
                break
            except Exception as exc:
                if getattr(exc, "sqlstate", None) != _LOCK_NOT_AVAILABLE or attempt == LOCK_ATTEMPTS:
                    raise
    return done


async def _ensure_table(conn: Any, table: str, first: Month, last: Month, done: Ensured) -> None:
    """One table's months from ``first`` to ``last``, and every month whose rows sit in DEFAULT (an
    import of old history lands there when its months were never created), in one transaction."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        have = {p.month for p in await partitions(conn, [table])}
        if None not in have:
            for sql in create_default_sql(table):
                await conn.execute(sql)
        wanted = set(months(first, last)) | await _months_in_default(conn, table, last)
        for y, m in sorted(wanted):
            if (y, m) in have:
                continue
            moved = await _split(conn, table, y, m)
            done.created.append(partition_name(table, y, m))
            if moved:
                done.moved[partition_name(table, y, m)] = moved


async def _months_in_default(conn: Any, table: str, last: Month) -> set[Month]:
    """The months (UTC) of rows waiting in ``table``'s DEFAULT partition, from MAX_HISTORY_MONTHS
    before ``last`` through ``last``: rows further out stay there (a far-past or far-future instant
    should not make hundreds of empty months). DEFAULT is small when the months exist, so this reads
    little; when an import filled it, this is what moves the rows out."""
    key = PARTITIONED[table]
    start, _ = bounds(*shift(*last, -MAX_HISTORY_MONTHS))
    _, end = bounds(*last)
    rows = await conn.fetch(
        f"SELECT DISTINCT CAST(EXTRACT(YEAR FROM {key} AT TIME ZONE 'UTC') AS integer) AS y,"
        f" CAST(EXTRACT(MONTH FROM {key} AT TIME ZONE 'UTC') AS integer) AS m"
        f" FROM {default_name(table)} WHERE {key} >= $1 AND {key} < $2",
        start,
        end,
    )
    return {(r["y"], r["m"]) for r in rows}


async def _split(conn: Any, table: str, year: int, month: int) -> int:
    """Create the month's partition; rows of that month already in DEFAULT move into it. Returns how
    many moved.

    PostgreSQL refuses a new partition while DEFAULT holds rows of its range, so the month is built
    as a table of its own, DEFAULT's rows of the month move into it (one statement), and it is
    attached. Keys that refer to the moved rows (items to their transaction) are checked at commit,
    when the rows are in the parent again. The books' append-only guard is set aside on DEFAULT for
    this one statement, inside the transaction (the rows are moved, not changed); the receipts the
    delete took along are written again.
    """
    name, default = partition_name(table, year, month), default_name(table)
    key = PARTITIONED[table]
    start, end = bounds(year, month)
    waiting = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {default} WHERE {key} >= $1 AND {key} < $2)", start, end
    )
    if not waiting:
        for sql in create_month_sql(table, year, month):
            await conn.execute(sql)
        return 0
    await conn.execute("SET CONSTRAINTS ALL DEFERRED")
    await conn.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    guarded = table == "ledger_entries"
    if guarded:  # the rows are moved, not changed: the books' guard stands aside for this one statement
        await conn.execute(f"ALTER TABLE {default} DISABLE TRIGGER ledger_entries_append_only")
    status = await conn.execute(
        f"WITH moved AS (DELETE FROM {default} WHERE {key} >= $1 AND {key} < $2 RETURNING *)"
        f" INSERT INTO {name} SELECT * FROM moved",
        start,
        end,
    )
    if guarded:
        await conn.execute(f"ALTER TABLE {default} ENABLE TRIGGER ledger_entries_append_only")
    if table == "transactions":  # the delete took their receipts along: the same purchases, again
        await conn.execute(
            f"INSERT INTO {RECEIPTS} (tenant_id, outlet_id, external_id, transaction_id, occurred_at)"
            f" SELECT tenant_id, outlet_id, external_id, id, occurred_at FROM {name}"
        )
    await conn.execute(
        f"ALTER TABLE {table} ATTACH PARTITION {name}"
        f" FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
    )
    for sql in _truncate_guard(table, name):
        await conn.execute(sql)
    return int(status.rsplit(" ", 1)[-1])


# --- retention: detach and drop ------------------------------------------------------------------------


async def drop(
    conn: Any,
    partition: Partition,
    *,
    detach_only: bool = False,
    guard: tuple[Any, ...] | None = None,
    before: Sequence[tuple[Any, ...]] = (),
) -> bool:
    """Detach a month partition of a detail table from its parent and drop it (or keep it as a table of
    its own, ``detach_only``, for an operator to archive), in one transaction: first the partition is
    locked, then ``guard`` (a statement and its arguments) must give nothing (0, false or null; else
    nothing happens and the answer is False), then ``before`` runs. The books are refused."""
    if partition.table not in DETAIL or partition.month is None:
        raise ValueError(f"{partition.name}: only month partitions of {', '.join(DETAIL)} are dropped")
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        await conn.execute(f"LOCK TABLE {partition.name} IN ACCESS EXCLUSIVE MODE")
        if guard is not None and await conn.fetchval(*guard):
            return False
        for statement in before:
            await conn.execute(*statement)
        await conn.execute(f"ALTER TABLE {partition.table} DETACH PARTITION {partition.name}")
        if not detach_only:
            await conn.execute(f"DROP TABLE {partition.name}")
    return True


# --- pruning, as the planner sees it -------------------------------------------------------------------


async def scanned(conn: Any, sql: str, *args: Any) -> dict[str, list[str]]:
    """Which partitions PostgreSQL would read to run ``sql`` with ``args`` (``EXPLAIN``, nothing is
    run): parent table -> partition names, for every partitioned table in the plan. With a generic
    plan the months not needed are removed when execution starts, so they do not appear either."""
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    found: dict[str, set[str]] = {}
    owners = {p.name: p.table for p in await partitions(conn)}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            relation = node.get("Relation Name")
            if relation in owners and node.get("Node Type") != "ModifyTable":
                found.setdefault(owners[relation], set()).add(relation)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(plan) if isinstance(plan, str) else plan)
    return {table: sorted(names) for table, names in found.items()}


# --- alembic: what the models do not describe -----------------------------------------------------------


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """For Alembic's comparison of the models with a database: leave out the partitions, the receipts
    table and the keys partitioning replaced (see the module docstring); everything else is compared."""
    if type_ == "table":
        partition = parse_name(name or "") is not None or name in {default_name(t) for t in PARTITIONED}
        return name != RECEIPTS and not partition
    table = getattr(getattr(obj, "table", None), "name", None)
    if type_ in ("unique_constraint", "index") and name in (*REPLACED_UNIQUES, *PG_ONLY_INDEXES):
        return False
    if type_ == "foreign_key_constraint" and name in {n for n, _ in DROPPED_FOREIGN_KEYS}:
        return False
    return not (type_ == "column" and (table, name) in PG_ONLY_COLUMNS)
