"""Storage benchmarks: posting purchases through loyalty/ against bare-driver writes, and set-based expiry.

Posting: ``BENCH_STORAGE_TX`` purchases (default 10,000) of 5 items for ``BENCH_STORAGE_MEMBERS``
members (default 1,000), posted one by one through :func:`loyalty.points.transactions.post_transaction`
(evaluation with explanation, lot, ledger entries, balance, tier check). The baseline writes the same
rows with the bare driver (sqlite3 / asyncpg), one database transaction per posting, with the
evaluations computed before the clock starts: what the writes alone cost. Reported: transactions/s
of both and the ratio loyalty/baseline (target >= 0.5).

Expiry (PostgreSQL): ``BENCH_STORAGE_LOTS`` lots (default "100000,1000000"), ten per member, expired
by one run of :func:`loyalty.ops.jobs.expire_lots`. Target: 1,000,000 lots in under 30 s.

Run either way (PostgreSQL at ``LOYALTY_TEST_PG``, default the local server as postgres; skipped with
the reason when unreachable)::

    .venv/bin/python -m pytest benchmarks/bench_storage.py --benchmark-enable -s
    .venv/bin/python benchmarks/bench_storage.py
    BENCH_STORAGE_TX=500 BENCH_STORAGE_LOTS=10000 .venv/bin/python benchmarks/bench_storage.py   # smoke run
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rules
from loyalty.admin import tenants
from loyalty.calendar import expiry_for
from loyalty.ops import jobs
from loyalty.points import transactions
from loyalty.programs import versions
from loyalty.storage.db import Database, upgrade

PG_ADMIN_URL = os.environ.get("LOYALTY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
N_TX = int(os.environ.get("BENCH_STORAGE_TX", "10000"))
N_MEMBERS = int(os.environ.get("BENCH_STORAGE_MEMBERS", "1000"))
LOT_SIZES = [int(x) for x in os.environ.get("BENCH_STORAGE_LOTS", "100000,1000000").split(",") if x]
ITEMS_PER_TX = 5
START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)

PROGRAM = """\
program: Bench Bonus
currency: EUR
timezone: Europe/Berlin
points: {expire_after_months: 24, pending_days: 14, rounding: floor}
tiers:
  qualify_on: points
  window_months: 12
  levels:
    - {name: bronze, min: 0}
    - {name: silver, min: 2000, earn_multiplier: 1.25}
    - {name: gold, min: 8000, earn_multiplier: 1.5}
rewards:
  - {code: COFFEE, name: Free coffee, cost: 300}
rules:
  - id: base
    for_each: item
    where: item.category not in ["tobacco", "giftcard"]
    earn: {per_currency_unit: 1}
  - id: organic-double
    for_each: item
    where: item.category == "organic"
    earn: {multiplier: 2}
  - id: tuesday-afternoon
    when: weekday(tx.time) == "tue" and 14 <= hour(tx.time) < 17
    earn: {multiplier: 3}
    stacking: exclusive
"""
CATEGORIES = ["food", "organic", "drinks", "household", "tobacco"]


@dataclass
class Purchase:
    member: int
    external_id: str
    at: datetime
    items: tuple[rules.Item, ...]


def _purchases(member_ids: list[int], n: int, seed: int) -> list[Purchase]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        items = tuple(
            rules.Item(
                sku=f"SKU{rng.randrange(200)}",
                unit_price=rng.randrange(50, 3000),
                quantity=rng.randint(1, 3),
                category=rng.choice(CATEGORIES),
            )
            for _ in range(ITEMS_PER_TX)
        )
        out.append(
            Purchase(rng.choice(member_ids), f"rcpt-{seed}-{i}", START + timedelta(minutes=3 * i), items)
        )
    return out


async def _world(db: Database, code: str) -> tuple[int, int, list[int]]:
    tenant = await tenants.create_tenant(
        db, code=code, name=code, card_prefix="60", now=START - timedelta(days=1)
    )
    await versions.create_version(db, tenant.id, PROGRAM, actor="bench", now=START - timedelta(days=1))
    partner = await tenants.create_partner(db, tenant.id, code="p", name="P", actor="bench", now=START)
    outlet = await tenants.create_outlet(
        db, tenant.id, partner_id=partner.id, code="o", name="O", actor="bench", now=START
    )
    from sqlalchemy import insert

    from loyalty.storage.models import Member

    async with db.write() as s:
        ids = (
            await s.scalars(
                insert(Member).returning(Member.id, sort_by_parameter_order=True),
                [
                    {
                        "tenant_id": tenant.id,
                        "available": 0,
                        "pending": 0,
                        "debt": 0,
                        "visits": 0,
                        "enrolled_at": START,
                        "tags": [],
                    }
                    for _ in range(N_MEMBERS)
                ],
            )
        ).all()
    return tenant.id, outlet.id, list(ids)


async def _post_all(db: Database, tenant_id: int, outlet_id: int, purchases: list[Purchase]) -> float:
    t0 = time.perf_counter()
    for p in purchases:
        await transactions.post_transaction(
            db,
            tenant_id,
            outlet_id=outlet_id,
            external_id=p.external_id,
            occurred_at=p.at,
            items=p.items,
            member_id=p.member,
            now=p.at,
        )
    return time.perf_counter() - t0


def _rows(tenant_id: int, outlet_id: int, version_id: int, purchases: list[Purchase]) -> list[dict[str, Any]]:
    """What a posting writes, computed ahead (the baseline measures writes only)."""
    program = rules.load_program(PROGRAM)
    out = []
    for p in purchases:
        result = rules.evaluate(
            program, rules.Transaction(time=p.at, items=p.items), rules.Member(id=str(p.member)), explain=True
        )
        out.append(
            {
                "p": p,
                "points": result.total,
                "amount": sum(i.unit_price * i.quantity for i in p.items),
                "evaluation": json.dumps(result.as_dict()),
                "item_points": [i.points for i in result.items],
                "expires": expiry_for(p.at, 24, program.zone),
                "pending_until": p.at + timedelta(days=14),
            }
        )
    return out


# --- bare-driver baselines ---------------------------------------------------------------------------

_TX_SQL = (
    "INSERT INTO transactions (tenant_id, member_id, outlet_id, external_id, channel, occurred_at, posted_at,"
    " program_version_id, amount, points, amount_refunded, points_refunded, evaluation)"
    " VALUES ({}) RETURNING id"
)
_ITEM_SQL = (
    "INSERT INTO transaction_items (tenant_id, member_id, transaction_id, line, sku, category, tags,"
    " unit_price, quantity, points, refunded_quantity) VALUES ({})"
)
#: On PostgreSQL a line carries its purchase's month (the partition key, migration 0007).
_ITEM_SQL_PG = (
    "INSERT INTO transaction_items (tenant_id, member_id, transaction_id, line, sku, category, tags,"
    " unit_price, quantity, points, refunded_quantity, occurred_at) VALUES ({})"
)
_LOT_SQL = (
    "INSERT INTO point_lots (tenant_id, member_id, transaction_id, state, earned, remaining, expired,"
    " created_at, pending_until, expires_at) VALUES ({})"
)
_ENTRY_SQL = (
    "INSERT INTO ledger_entries (tenant_id, member_id, account, amount, cause, ref_id, created_at)"
    " VALUES ({})"
)
_MEMBER_SQL = (
    "UPDATE members SET pending = pending + {0}, visits = visits + 1, last_visit_at = {1} WHERE id = {2}"
)


def _sqlite_baseline(
    path: str, tenant_id: int, outlet_id: int, version_id: int, rows: list[dict[str, Any]]
) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
        conn.execute(f"PRAGMA {pragma}")
    q = ", ".join
    ts = lambda d: d.astimezone(UTC).replace(tzinfo=None).isoformat(" ")  # noqa: E731
    t0 = time.perf_counter()
    for r in rows:
        p: Purchase = r["p"]
        conn.execute("BEGIN IMMEDIATE")
        tx_id = conn.execute(
            _TX_SQL.format(q(["?"] * 13)),
            (
                tenant_id,
                p.member,
                outlet_id,
                p.external_id,
                "till",
                ts(p.at),
                ts(p.at),
                version_id,
                r["amount"],
                r["points"],
                0,
                0,
                r["evaluation"],
            ),
        ).fetchone()[0]
        conn.executemany(
            _ITEM_SQL.format(q(["?"] * 11)),
            [
                (
                    tenant_id,
                    p.member,
                    tx_id,
                    i,
                    it.sku,
                    it.category,
                    "[]",
                    it.unit_price,
                    it.quantity,
                    r["item_points"][i],
                    0,
                )
                for i, it in enumerate(p.items)
            ],
        )
        if r["points"]:
            conn.execute(
                _LOT_SQL.format(q(["?"] * 10)),
                (
                    tenant_id,
                    p.member,
                    tx_id,
                    "pending",
                    r["points"],
                    r["points"],
                    0,
                    ts(p.at),
                    ts(r["pending_until"]),
                    ts(r["expires"]),
                ),
            )
            conn.executemany(
                _ENTRY_SQL.format(q(["?"] * 7)),
                [
                    (tenant_id, p.member, "member_pending", r["points"], "earn", tx_id, ts(p.at)),
                    (tenant_id, p.member, "program_issued", -r["points"], "earn", tx_id, ts(p.at)),
                ],
            )
        conn.execute(_MEMBER_SQL.format("?", "?", "?"), (r["points"], ts(p.at), p.member))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


async def _pg_baseline(
    dsn: str, tenant_id: int, outlet_id: int, version_id: int, rows: list[dict[str, Any]]
) -> float:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    ph = lambda n: ", ".join(f"${i}" for i in range(1, n + 1))  # noqa: E731
    tx_sql, item_sql, lot_sql = _TX_SQL.format(ph(13)), _ITEM_SQL_PG.format(ph(12)), _LOT_SQL.format(ph(10))
    entry_sql, member_sql = _ENTRY_SQL.format(ph(7)), _MEMBER_SQL.format("$1", "$2", "$3")
    t0 = time.perf_counter()
    for r in rows:
        p: Purchase = r["p"]
        async with conn.transaction():
            tx_id = await conn.fetchval(
                tx_sql,
                tenant_id,
                p.member,
                outlet_id,
                p.external_id,
                "till",
                p.at,
                p.at,
                version_id,
                r["amount"],
                r["points"],
                0,
                0,
                r["evaluation"],
            )
            await conn.executemany(
                item_sql,
                [
                    (
                        tenant_id,
                        p.member,
                        tx_id,
                        i,
                        it.sku,
                        it.category,
                        "[]",
                        it.unit_price,
                        it.quantity,
                        r["item_points"][i],
                        0,
                        p.at,
                    )
                    for i, it in enumerate(p.items)
                ],
            )
            if r["points"]:
                await conn.execute(
                    lot_sql,
                    tenant_id,
                    p.member,
                    tx_id,
                    "pending",
                    r["points"],
                    r["points"],
                    0,
                    p.at,
                    r["pending_until"],
                    r["expires"],
                )
                await conn.executemany(
                    entry_sql,
                    [
                        (tenant_id, p.member, "member_pending", r["points"], "earn", tx_id, p.at),
                        (tenant_id, p.member, "program_issued", -r["points"], "earn", tx_id, p.at),
                    ],
                )
            await conn.execute(member_sql, r["points"], p.at, p.member)
    elapsed = time.perf_counter() - t0
    await conn.close()
    return elapsed


# --- databases ---------------------------------------------------------------------------------------


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_unreachable() -> str | None:
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except Exception as exc:  # any connection failure: no PostgreSQL figures
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"
    return None


class PgDatabase:
    """A throwaway, migrated PostgreSQL database."""

    def __enter__(self) -> tuple[str, str]:
        self.name = f"loyalty_bench_{secrets.token_hex(5)}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{self.name}"'))
        base = PG_ADMIN_URL.rpartition("/")[0]
        upgrade(base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + self.name)
        return base.replace(
            "postgresql://", "postgresql+asyncpg://", 1
        ) + "/" + self.name, base + "/" + self.name

    def __exit__(self, *exc: object) -> None:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


async def _bench_posting(url: str, baseline: Any) -> dict[str, float]:
    db = Database.from_url(url)
    try:
        t_base, o_base, m_base = await _world(db, "baseline")
        version_base = (await versions.list_versions(db, t_base))[0].id
        rows = _rows(t_base, o_base, version_base, _purchases(m_base, N_TX, seed=1))
        base_s = await baseline(t_base, o_base, version_base, rows)
        t_orm, o_orm, m_orm = await _world(db, "loyalty")
        purchases = _purchases(m_orm, N_TX + WARM_UP, seed=2)
        # Steady state: some history, and the planner's statistics of it (what autovacuum keeps up to
        # date on a live database; without them PostgreSQL sums a member's tier window by scanning
        # the tenant's whole window instead of the member's index).
        await _post_all(db, t_orm, o_orm, purchases[:WARM_UP])
        await _analyze(db)
        orm_s = await _post_all(db, t_orm, o_orm, purchases[WARM_UP:])
    finally:
        await db.dispose()
    return {"baseline_tps": N_TX / base_s, "loyalty_tps": N_TX / orm_s, "ratio": base_s / orm_s}


#: Purchases posted (and the tables analyzed) before the clock starts.
WARM_UP = max(50, N_TX // 10)


async def _analyze(db: Database) -> None:
    from sqlalchemy import text

    async with db.write() as s:
        await s.execute(text("ANALYZE"))


def bench_posting_sqlite() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/bench.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade(url)

        async def baseline(*args: Any) -> float:
            return _sqlite_baseline(path, *args)

        return asyncio.run(_bench_posting(url, baseline))


def bench_posting_postgresql() -> dict[str, float]:
    with PgDatabase() as (url, dsn):

        async def baseline(*args: Any) -> float:
            return await _pg_baseline(dsn, *args)

        return asyncio.run(_bench_posting(url, baseline))


async def _bench_expiry(url: str, lots: int) -> float:
    """Seed ``lots`` available lots (ten per member) with set-based SQL, then time one expiry run."""
    from sqlalchemy import text

    db = Database.from_url(url)
    try:
        tenant_id, _, _ = await _world(db, f"expiry{lots}")
        n_members = max(1, lots // 10)
        async with db.write() as s:
            await s.execute(
                text(
                    "INSERT INTO members (tenant_id, available, pending, debt, visits, enrolled_at, tags) "
                    "SELECT :t, 100, 0, 0, 0, now(), '[]' FROM generate_series(1, :n)"
                ),
                {"t": tenant_id, "n": n_members},
            )
            await s.execute(
                text(
                    "INSERT INTO point_lots (tenant_id, member_id, state, earned, remaining, expired, created_at, "  # noqa: E501
                    "pending_until, expires_at) SELECT :t, m.id, 'available', 10, 10, 0, now(), now(), "
                    "'2025-01-01T00:00:00Z' FROM members m CROSS JOIN generate_series(1, 10) "
                    "WHERE m.tenant_id = :t AND m.available = 100"
                ),
                {"t": tenant_id},
            )
            await s.execute(text("ANALYZE point_lots"))
            await s.execute(text("ANALYZE members"))
        t0 = time.perf_counter()
        result = await jobs.expire_lots(db, tenant_id, now=datetime(2025, 6, 1, tzinfo=UTC))
        elapsed = time.perf_counter() - t0
        assert result.lots == n_members * 10, result
    finally:
        await db.dispose()
    return elapsed


def bench_expiry_postgresql(lots: int) -> float:
    with PgDatabase() as (url, _):
        return asyncio.run(_bench_expiry(url, lots))


# --- pytest entry points -----------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the script runs without pytest too
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    _FIGURES: dict[str, Any] = {}

    def _summary() -> list[str]:
        return _table(_FIGURES) if _FIGURES else []

    @pytest.fixture(scope="module")
    def figures(bench_summary: list[Any]) -> dict[str, Any]:
        bench_summary.append(_summary)
        return _FIGURES

    def _once(benchmark: Any, fn: Any, *args: Any) -> Any:
        if getattr(benchmark, "disabled", False):
            return fn(*args)
        return benchmark.pedantic(fn, args=args, rounds=1, iterations=1)

    def test_posting_sqlite(benchmark: Any, figures: dict[str, Any]) -> None:
        """Posting on SQLite keeps at least half the bare driver's rate."""
        figures["posting sqlite"] = _once(benchmark, bench_posting_sqlite)

    def test_posting_postgresql(benchmark: Any, figures: dict[str, Any]) -> None:
        """Posting on PostgreSQL keeps at least half the bare driver's rate."""
        if (reason := pg_unreachable()) is not None:
            pytest.skip(reason)
        figures["posting postgresql"] = _once(benchmark, bench_posting_postgresql)

    @pytest.mark.parametrize("lots", LOT_SIZES)
    def test_expiry_postgresql(benchmark: Any, figures: dict[str, Any], lots: int) -> None:
        """Expiring lots is set-based: a million lots in well under 30 s."""
        if (reason := pg_unreachable()) is not None:
            pytest.skip(reason)
        figures[f"expiry {lots}"] = _once(benchmark, bench_expiry_postgresql, lots)


def _table(figures: dict[str, Any]) -> list[str]:
    lines = [
        f"storage benchmark: {N_TX} purchases x {ITEMS_PER_TX} items, {N_MEMBERS} members",
        f"{'case':<22}{'baseline tx/s':>15}{'loyalty tx/s':>15}{'ratio':>8}",
    ]
    for name, value in figures.items():
        if name.startswith("posting"):
            lines.append(
                f"{name:<22}{value['baseline_tps']:>15.0f}{value['loyalty_tps']:>15.0f}{value['ratio']:>8.2f}"
            )
    for name, value in figures.items():
        if name.startswith("expiry"):
            lots = int(name.split()[1])
            lines.append(f"expiry postgresql {lots:>9,} lots: {value:6.2f} s ({lots / value:,.0f} lots/s)")
    return lines


def main() -> None:
    figures: dict[str, Any] = {"posting sqlite": bench_posting_sqlite()}
    reason = pg_unreachable()
    if reason is None:
        figures["posting postgresql"] = bench_posting_postgresql()
        for lots in LOT_SIZES:
            figures[f"expiry {lots}"] = bench_expiry_postgresql(lots)
    print("\n".join(_table(figures)))
    if reason:
        print(f"PostgreSQL skipped: {reason}")


if __name__ == "__main__":
    main()
