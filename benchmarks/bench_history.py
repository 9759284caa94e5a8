"""History benchmark: the monthly report and the expiry job over years of ledger, partitioned by month.

On a throwaway PostgreSQL database migrated to head (the four big tables partitioned by month, see
:mod:`loyalty.storage.partitions`), ``BENCH_HISTORY_ROWS`` ledger entries (default 10,000,000) are
generated in SQL with ``generate_series``: half as many purchases spread evenly over
``BENCH_HISTORY_MONTHS`` months (default 36) and one member in a hundred, one lot per purchase and
its two ``earn`` entries. Lots that expired before the last month are already expired; the members'
balances equal their lots. Then, after ANALYZE:

* **monthly report**: :func:`loyalty.ops.reports.movements` for one month a year back, the median of
  ``BENCH_HISTORY_RUNS`` runs (default 5);
* **expiry job**: :func:`loyalty.ops.jobs.expire_lots` as of the start of a month, each run one month
  later than the one before (a run expires that month's lots; the same month again would find
  nothing), the median of the runs;
* **pruning**: the partitions PostgreSQL reads for each (EXPLAIN of the statements they really ran),
  and the report's plan;
* **baseline** (``BENCH_HISTORY_BASELINE=0`` skips it): the report's statement on an unpartitioned copy
  of ``ledger_entries`` with the same index, in the same run. The expiry job reads ``point_lots``,
  which is not partitioned: it has no unpartitioned counterpart to compare with.

Target: each < 5 s. Run::

    .venv/bin/python benchmarks/bench_history.py
    BENCH_HISTORY_ROWS=1000000 .venv/bin/python benchmarks/bench_history.py   # smaller
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scratch import scratch_database, unreachable
from loyalty.admin import tenants
from loyalty.ops import jobs, reports
from loyalty.programs import versions
from loyalty.storage import partitions
from loyalty.storage.db import Database, upgrade

ROWS = int(os.environ.get("BENCH_HISTORY_ROWS", "10000000"))
MONTHS = int(os.environ.get("BENCH_HISTORY_MONTHS", "36"))
RUNS = int(os.environ.get("BENCH_HISTORY_RUNS", "5"))
BASELINE = os.environ.get("BENCH_HISTORY_BASELINE", "1") != "0"
#: Each run must stay under this (issue 16).
TARGET_SECONDS = 5.0
#: Purchases per member over the whole history.
PURCHASES_PER_MEMBER = 50

PROGRAM = """\
program: History Bonus
currency: EUR
timezone: UTC
points: {expire_after_months: 12, pending_days: 14, rounding: floor}
rules:
  - id: base
    for_each: item
    where: item.category != "tobacco"
    earn: {per_currency_unit: 1}
"""


def _month_index(at: datetime) -> int:
    return at.year * 12 + at.month - 1


def _month(index: int) -> datetime:
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


async def _setup(db: Database, first: datetime) -> tuple[int, int, int]:
    tenant = await tenants.create_tenant(db, code="hist", name="History", card_prefix="60", now=first)
    version = await versions.create_version(db, tenant.id, PROGRAM, actor="bench", now=first)
    partner = await tenants.create_partner(db, tenant.id, code="p", name="P", actor="bench", now=first)
    outlet = await tenants.create_outlet(
        db, tenant.id, partner_id=partner.id, code="o", name="O", actor="bench", now=first
    )
    return tenant.id, outlet.id, version.id


async def _generate(
    conn: Any, tenant: int, outlet: int, version: int, first: datetime, now: datetime
) -> None:
    """Purchases, lots and entries in SQL. Triggers and key checks stand aside for the bulk load (the
    session's replication role: the benchmark connects as a superuser); the receipts the trigger
    would have written are written at once afterwards (as migration 0007 does)."""
    purchases = ROWS // 2
    members = max(100, purchases // PURCHASES_PER_MEMBER)
    span = (now - first).total_seconds()
    expired_before = _month(_month_index(now) - 1)
    steps = [
        (
            "members",
            "INSERT INTO members (tenant_id, available, pending, debt, visits, enrolled_at, tags)"
            " SELECT $1, 0, 0, 0, 0, $2, '[]' FROM generate_series(1, $3)",
            (tenant, first, members),
        ),
        # Generated rows are right by construction: no trigger or key check per row while loading.
        ("bulk load mode", "SET session_replication_role = replica", ()),
        (
            "transactions",
            "INSERT INTO transactions (tenant_id, member_id, outlet_id, external_id, channel, occurred_at,"
            " posted_at, program_version_id, amount, points, amount_refunded, points_refunded, evaluation)"
            " SELECT $1, m0 + i % $3, $4, 'r' || i, 'till', t, t, $5, 1000 + i % 4000, 10 + i % 40, 0, 0,"
            " '{}' FROM (SELECT i, $6::timestamptz + (i - 1) * ($7 / $2) * interval '1 second' AS t,"
            " (SELECT min(id) FROM members WHERE tenant_id = $1) AS m0"
            " FROM generate_series(1, $2) i) s",
            (tenant, purchases, members, outlet, version, first, span),
        ),
        (
            "receipts",
            "INSERT INTO transaction_receipts SELECT tenant_id, outlet_id, external_id, id, occurred_at"
            " FROM transactions WHERE tenant_id = $1",
            (tenant,),
        ),
        (
            "lots",
            "INSERT INTO point_lots (tenant_id, member_id, transaction_id, state, earned, remaining, expired,"
            " created_at, pending_until, expires_at)"
            " SELECT tenant_id, member_id, id, CASE WHEN e <= $2 THEN 'expired' ELSE 'available' END,"
            " points, CASE WHEN e <= $2 THEN 0 ELSE points END, CASE WHEN e <= $2 THEN points ELSE 0 END,"
            " occurred_at, occurred_at + interval '14 days', e"
            " FROM (SELECT *, date_trunc('month', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
            " + interval '13 months' AS e FROM transactions WHERE tenant_id = $1) t",
            (tenant, expired_before),
        ),
        (
            "ledger entries",
            "INSERT INTO ledger_entries (tenant_id, member_id, account, amount, cause, ref_id, created_at)"
            " SELECT t.tenant_id, t.member_id, a.account, a.sign * t.points, 'earn', t.id, t.occurred_at"
            " FROM transactions t CROSS JOIN (VALUES ('member_available', 1), ('program_issued', -1))"
            " AS a(account, sign) WHERE t.tenant_id = $1",
            (tenant,),
        ),
        (
            "balances",
            "UPDATE members m SET available = l.a FROM (SELECT member_id, sum(remaining) AS a"
            " FROM point_lots WHERE tenant_id = $1 AND state = 'available' GROUP BY member_id) l"
            " WHERE m.tenant_id = $1 AND m.id = l.member_id",
            (tenant,),
        ),
        ("normal mode", "SET session_replication_role = DEFAULT", ()),
        ("analyze", "ANALYZE", ()),
    ]
    total = time.perf_counter()
    for what, sql, args in steps:
        started = time.perf_counter()
        status = await conn.execute(sql, *args)
        print(f"  {what}: {status} in {time.perf_counter() - started:.1f} s", flush=True)
    took = time.perf_counter() - total
    print(
        f"generated {ROWS:,} ledger entries, {purchases:,} purchases and lots, {members:,} members over"
        f" {MONTHS} months in {took:.1f} s ({took / (ROWS / 1e6):.1f} s per million entries)"
    )


def _median(samples: list[float]) -> str:
    return f"median {statistics.median(samples):.3f} s of {len(samples)} runs (min {min(samples):.3f} s)"


async def _captured(db: Database, call: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements ``call`` sends through SQLAlchemy (the reports) or a ledger unit (the jobs)."""
    from sqlalchemy import event

    from loyalty.ledger import store

    seen: list[tuple[str, tuple[Any, ...]]] = []

    def listen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        seen.append((sql, tuple(params or ())))

    fetch, execute = store.PgUnit.fetch, store.PgUnit.execute

    async def fetch_(self: Any, sql: str, *args: Any) -> Any:
        seen.append((sql, args))
        return await fetch(self, sql, *args)

    async def execute_(self: Any, sql: str, *args: Any) -> int:
        seen.append((sql, args))
        return await execute(self, sql, *args)

    event.listen(db.engine.sync_engine, "before_cursor_execute", listen)
    store.PgUnit.fetch, store.PgUnit.execute = fetch_, execute_  # type: ignore[method-assign]
    try:
        await call()
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listen)
        store.PgUnit.fetch, store.PgUnit.execute = fetch, execute  # type: ignore[method-assign]
    return seen


async def _pruning(db: Database, statements: list[tuple[str, tuple[Any, ...]]]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    async with db.driver_connection() as conn:
        for sql, args in statements:
            for table, names in (await partitions.scanned(conn, sql, *args)).items():
                out.setdefault(table, set()).update(names)
    return {t: sorted(n) for t, n in out.items()}


async def _bench(url: str) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    first = _month(_month_index(now) - MONTHS + 1)
    await asyncio.to_thread(upgrade, url)
    db = Database.from_url(url)
    try:
        async with db.driver_connection() as conn:
            await partitions.ensure(conn, now=now, since=first)
        tenant, outlet, version = await _setup(db, first)
        async with db.driver_connection() as conn:
            await _generate(conn, tenant, outlet, version, first, now)
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE c.relkind = 'r'"
            )
        print(f"{count} partitions (of the 4 tables, DEFAULT included)")

        month = _month(_month_index(now) - 12)
        report_times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            moves = await reports.movements(db, tenant, since=month, months=1, now=now)
            report_times.append(time.perf_counter() - started)
        print(f"monthly report {month:%Y-%m} (issued {moves[0].issued:,}): {_median(report_times)}")
        report_sql = [
            s
            for s in await _captured(
                db, lambda: reports.movements(db, tenant, since=month, months=1, now=now)
            )
            if "ledger_entries" in s[0]
        ]
        print(f"  partitions read: {await _pruning(db, report_sql)}")
        async with db.driver_connection() as conn:
            sql, args = report_sql[0]
            plan = await conn.fetch(f"EXPLAIN {sql}", *args)
            for row in plan:
                print(f"  | {row[0]}")
            if BASELINE:
                started = time.perf_counter()
                await conn.execute("CREATE TABLE ledger_flat AS SELECT * FROM ledger_entries")
                await conn.execute("CREATE INDEX ON ledger_flat (tenant_id, created_at)")
                await conn.execute("ANALYZE ledger_flat")
                print(f"  baseline copy made in {time.perf_counter() - started:.1f} s")
                flat_sql = sql.replace("ledger_entries", "ledger_flat")
                flat = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    await conn.fetch(flat_sql, *args)
                    flat.append(time.perf_counter() - started)
                print(f"  same statement, unpartitioned copy: {_median(flat)}")
                part = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    await conn.fetch(sql, *args)
                    part.append(time.perf_counter() - started)
                ratio = statistics.median(flat) / statistics.median(part)
                print(
                    f"  same statement, partitioned: {_median(part)}; unpartitioned/partitioned {ratio:.2f}"
                )

        expiry_times, expired = [], []
        for i in range(RUNS):
            as_of = _month(_month_index(now) + i)
            started = time.perf_counter()
            result = await jobs.expire_lots(db, tenant, now=as_of)
            expiry_times.append(time.perf_counter() - started)
            expired.append(result.lots)
        print(f"expiry job, one month each (lots expired {expired}): {_median(expiry_times)}")
        expiry_sql = await _captured(
            db, lambda: jobs.expire_lots(db, tenant, now=_month(_month_index(now) + RUNS))
        )
        print(f"  partitions read: {await _pruning(db, expiry_sql) or 'none (it reads point_lots only)'}")
        worst = max(statistics.median(report_times), statistics.median(expiry_times))
        verdict = "meets" if worst < TARGET_SECONDS else "MISSES"
        print(f"{verdict} the target: each < {TARGET_SECONDS:.0f} s")
    finally:
        await db.dispose()


def main() -> None:
    reason = unreachable()
    if reason is not None:
        print(f"skipped: {reason}")
        return
    with scratch_database("loyalty_bench_history") as url:
        asyncio.run(_bench(url))


if __name__ == "__main__":
    main()
