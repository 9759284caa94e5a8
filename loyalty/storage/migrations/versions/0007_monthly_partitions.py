"""monthly partitions: transactions, transaction_items, ledger_entries and events become partitioned
by month on PostgreSQL (an existing database keeps every row); SQLite is unchanged

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 15:40:00

What changes and why is in :mod:`loyalty.storage.partitions` (whose statement builders this migration
uses). Per table, in one transaction: the table is renamed aside, a partitioned table of the same
columns takes its name, month partitions are created for the months its rows span (at most
``MAX_HISTORY_MONTHS``) up to ``AHEAD_MONTHS`` after now, plus DEFAULT; the rows are copied, the
old table dropped; primary key ``(id, <month key>)``, indexes and outgoing foreign keys are
recreated; the id sequence is the same one, so new ids continue. ``transaction_items`` gains its
transaction's ``occurred_at``. Keys into the partitioned tables are dropped; the till's receipt
keeps its uniqueness through ``transaction_receipts``.

Copying holds an exclusive lock on the four tables for the whole migration: plan a maintenance
window (a million rows take seconds; see benchmarks/bench_history.py for the rate on this machine).
Downgrade is not supported on PostgreSQL (it would copy everything back): restore the backup taken
before upgrading instead.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

from alembic import op
from sqlalchemy.engine import Connection

from loyalty.storage import partitions as p

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Unique constraints dropped with the old table and not recreated as they were (see partitions).
_NOT_RECREATED = set(p.REPLACED_UNIQUES)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    now = datetime.now(UTC)
    for name, table in p.DROPPED_FOREIGN_KEYS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
    for table in p.PARTITIONED:
        _partition(bind, table, now)
    _receipts()
    op.execute(
        "CREATE INDEX ix_transactions_tenant_id_outlet_id_external_id"
        " ON transactions (tenant_id, outlet_id, external_id)"
    )
    op.execute(
        "ALTER TABLE transaction_items ADD CONSTRAINT uq_transaction_items_transaction_id_line"
        " UNIQUE (transaction_id, line, occurred_at)"
    )
    # The books stay append-only (0004): the row trigger is cloned onto every partition; TRUNCATE of
    # the parent is refused here, of one partition by the guard each partition gets when created.
    op.execute(
        "CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries"
        " FOR EACH ROW EXECUTE FUNCTION loyalty_append_only()"
    )
    op.execute(
        "CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries"
        " FOR EACH STATEMENT EXECUTE FUNCTION loyalty_append_only()"
    )
    for table in p.PARTITIONED:
        op.execute(f"ANALYZE {table}")


def _months(bind: Connection, table: str, now: datetime) -> list[tuple[int, int]]:
    """The months to create: those the rows span (bounded), through AHEAD_MONTHS after now."""
    source = "transactions" if table == "transaction_items" else f"{table}_unpartitioned"
    key = p.PARTITIONED["transactions" if table == "transaction_items" else table]
    low, _ = bind.exec_driver_sql(f"SELECT min({key}), max({key}) FROM {source}").one()
    last = p.shift(*p.month_of(now), p.AHEAD_MONTHS)
    first = min(p.month_of(low) if low is not None else last, p.month_of(now))
    first = max(first, p.shift(*last, -p.MAX_HISTORY_MONTHS))
    return list(p.months(first, last))


def _partition(bind: Connection, table: str, now: datetime) -> None:
    key = p.PARTITIONED[table]
    old = f"{table}_unpartitioned"
    indexes = bind.exec_driver_sql(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        f" WHERE x.indrelid = '{table}'::regclass AND NOT x.indisprimary ORDER BY i.relname"
    ).all()
    foreign = bind.exec_driver_sql(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        f" WHERE conrelid = '{table}'::regclass AND contype = 'f' ORDER BY conname"
    ).all()
    uniques = {
        r[0]
        for r in bind.exec_driver_sql(
            f"SELECT conname FROM pg_constraint WHERE conrelid = '{table}'::regclass AND contype = 'u'"
        ).all()
    }
    for name in uniques - _NOT_RECREATED:
        raise RuntimeError(f"{table}: unique constraint {name} has no partitioned form here")
    op.execute(f"ALTER TABLE {table} RENAME TO {old}")
    extra = ", occurred_at timestamptz NOT NULL" if table == "transaction_items" else ""
    op.execute(
        f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS{extra})"
        f" PARTITION BY RANGE ({key})"
    )
    for y, m in _months(bind, table, now):
        for sql in p.create_month_sql(table, y, m):
            op.execute(sql)
    for sql in p.create_default_sql(table):
        op.execute(sql)
    columns = [
        r[0]
        for r in bind.exec_driver_sql(
            f"SELECT attname FROM pg_attribute WHERE attrelid = '{old}'::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum"
        ).all()
    ]
    listed = ", ".join(columns)
    if table == "transaction_items":
        copied = bind.exec_driver_sql(
            f"INSERT INTO {table} ({listed}, occurred_at)"
            f" SELECT {', '.join('i.' + c for c in columns)}, t.occurred_at"
            f" FROM {old} i JOIN transactions t ON t.id = i.transaction_id"
        ).rowcount
    else:
        copied = bind.exec_driver_sql(f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {old}").rowcount
    had = bind.exec_driver_sql(f"SELECT count(*) FROM {old}").scalar()
    if copied != had:
        raise RuntimeError(f"{table}: copied {copied} rows of {had}; nothing was changed")
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY NONE")
    op.execute(f"DROP TABLE {old}")
    op.execute(f"ALTER SEQUENCE {table}_id_seq OWNED BY {table}.id")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id, {key})")
    for name, definition in indexes:
        if name not in uniques:
            op.execute(definition)
    for name, definition in foreign:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")


def _receipts() -> None:
    op.execute(
        f"CREATE TABLE {p.RECEIPTS} (tenant_id bigint NOT NULL, outlet_id bigint NOT NULL,"
        " external_id varchar(100) NOT NULL, transaction_id bigint NOT NULL,"
        " occurred_at timestamptz NOT NULL,"
        f" CONSTRAINT pk_{p.RECEIPTS} PRIMARY KEY (tenant_id, outlet_id, external_id))"
    )
    op.execute(
        f"INSERT INTO {p.RECEIPTS} (tenant_id, outlet_id, external_id, transaction_id, occurred_at)"
        " SELECT tenant_id, outlet_id, external_id, id, occurred_at FROM transactions"
    )
    op.execute(p.RECEIPT_FUNCTION)
    for sql in p.RECEIPT_TRIGGERS:
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    raise NotImplementedError(
        "0007 cannot be downgraded on PostgreSQL (it would copy every partitioned table back):"
        " restore the backup taken before the upgrade"
    )
