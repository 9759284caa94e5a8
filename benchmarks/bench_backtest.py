"""Backtest speed: replaying stored transactions against a draft, on SQLite and on PostgreSQL.

Each database gets a fresh schema seeded with ``BENCH_BACKTEST_N`` purchases (default 50,000): 5-line
baskets from a 200-product catalogue, about 1,000 members, 12 outlets of 3 partners, spread over a
year, about 2% of them partly refunded, each stored with the evaluation (explanation included) that
posting would have written. Rows are bulk-inserted with SQLAlchemy Core, not posted one by one.

Two contenders per database, timed in the same run:

* ``stream`` (the baseline): the bare loop that reads the same pages of transactions and items the
  backtest reads, and does nothing with them;
* ``backtest``: :func:`loyalty.programs.backtest.backtest` of a draft that doubles a rule and raises a tier.

The summary prints transactions/s and backtest/stream (what evaluating costs on top of reading);
the target (issue 5) is 20,000 transactions/s or more. Run with
``.venv/bin/python -m pytest benchmarks/bench_backtest.py --benchmark-enable -s``; PostgreSQL
(``LOYALTY_TEST_PG``, default the local server as postgres) is skipped with the reason when unreachable.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

import rules
from benchmarks.scratch import scratch_database, unreachable
from loyalty.admin import tenants
from loyalty.programs import backtest, versions
from loyalty.storage.db import Database, upgrade
from loyalty.storage.models import Member, Transaction, TransactionItem

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")

N = int(os.environ.get("BENCH_BACKTEST_N", "50000"))
MEMBERS = 1_000
LINES = 5
TARGET = 20_000
START = datetime(2025, 1, 1, tzinfo=UTC)
END = START + timedelta(days=365)
#: Rows per bulk insert statement.
CHUNK = 5_000

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
    - {name: silver, min: 1000, earn_multiplier: 1.25}
    - {name: gold, min: 5000, earn_multiplier: 1.5}
rewards:
  - {code: COFFEE, name: Free coffee, cost: 300}
  - {code: FREE-WASH, name: Free wash}
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
  - id: win-back
    when: member.days_since_last_visit > 90
    earn: {points: 200}
    limit: {per_member: 1}
  - id: car-wash-stamps
    for_each: item
    where: item.sku == "WASH"
    stamp: {card: wash, count: item.quantity, reward_at: 10, reward: FREE-WASH}
"""
DRAFT = PROGRAM.replace("earn: {multiplier: 2}", "earn: {multiplier: 4}").replace("min: 5000", "min: 4000")

CATEGORIES = ("food", "food", "food", "organic", "drinks", "household", "tobacco", "giftcard")


@dataclass(frozen=True)
class Seeded:
    url: str
    tenant_id: int
    transactions: int


# ---------------------------------------------------------------------------------------------------
# Seeding


def _catalogue(rng: random.Random) -> list[tuple[str, str, int]]:
    items = [(f"SKU{i:03d}", rng.choice(CATEGORIES), rng.randrange(49, 2_999)) for i in range(199)]
    return [*items, ("WASH", "services", 900)]


async def _seed(url: str, n: int) -> Seeded:
    rng = random.Random(20250101)
    db = Database.from_url(url)
    try:
        tenant = await tenants.create_tenant(db, code="bench", name="Bench", card_prefix="60", now=START)
        version = await versions.create_version(db, tenant.id, PROGRAM, actor="bench", now=START)
        compiled = rules.compile_program(versions.check(PROGRAM))
        outlets = []
        for p in range(3):
            partner = await tenants.create_partner(
                db, tenant.id, code=f"p{p}", name=f"Partner {p}", actor="bench", now=START
            )
            for o in range(4):
                view = await tenants.create_outlet(
                    db,
                    tenant.id,
                    partner_id=partner.id,
                    code=f"p{p}o{o}",
                    name=f"Outlet {p}.{o}",
                    actor="bench",
                    now=START,
                )
                outlets.append((view.id, rules.Outlet(id=view.code, partner=partner.code)))
        async with db.write() as s:
            new_members = insert(Member).returning(Member.id, sort_by_parameter_order=True)
            member_ids = list(
                (
                    await s.scalars(
                        new_members,
                        [
                            {
                                "tenant_id": tenant.id,
                                "tier": None,
                                "available": 0,
                                "pending": 0,
                                "debt": 0,
                                "visits": 0,
                                "enrolled_at": START - timedelta(days=rng.randrange(1, 700)),
                                "tags": [],
                            }
                            for _ in range(MEMBERS)
                        ],
                    )
                ).all()
            )
        tier_of = {m: rng.choice(("bronze", "bronze", "bronze", "silver", "gold")) for m in member_ids}
        last_visit: dict[int, datetime] = {}
        catalogue = _catalogue(rng)
        span = (END - START).total_seconds()
        times = sorted(START + timedelta(seconds=rng.random() * span) for _ in range(n))
        txs: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        async with db.write() as s:
            conn = await s.connection()
            for tx_id, at in enumerate(times, start=1):
                member_id = rng.choice(member_ids)
                outlet_id, outlet = rng.choice(outlets)
                basket = tuple(
                    rules.Item(
                        sku=sku, unit_price=price, quantity=rng.choice((1, 1, 1, 2, 3)), category=category
                    )
                    for sku, category, price in rng.sample(catalogue, LINES)
                )
                member = rules.Member(
                    id=str(member_id), tier=tier_of[member_id], last_visit_at=last_visit.get(member_id)
                )
                result = compiled.evaluate(
                    rules.Transaction(time=at, items=basket), member, outlet, now=at, explain=True
                )
                last_visit[member_id] = at
                refund_line = LINES - 1 if rng.random() < 0.02 else None
                amount = sum(i.unit_price * i.quantity for i in basket)
                refunded = basket[refund_line] if refund_line is not None else None
                txs.append(
                    {
                        "id": tx_id,
                        "tenant_id": tenant.id,
                        "member_id": member_id,
                        "outlet_id": outlet_id,
                        "external_id": f"r{tx_id}",
                        "channel": "till",
                        "occurred_at": at,
                        "posted_at": at,
                        "program_version_id": version.id,
                        "amount": amount,
                        "points": result.total,
                        "amount_refunded": refunded.unit_price * refunded.quantity if refunded else 0,
                        "points_refunded": result.items[refund_line].points if refund_line is not None else 0,
                        "evaluation": result.as_dict(),
                    }
                )
                lines += [
                    {
                        "tenant_id": tenant.id,
                        "member_id": member_id,
                        "transaction_id": tx_id,
                        "line": i,
                        "sku": it.sku,
                        "category": it.category,
                        "tags": [],
                        "unit_price": it.unit_price,
                        "quantity": it.quantity,
                        "points": result.items[i].points,
                        "refunded_quantity": it.quantity if i == refund_line else 0,
                    }
                    for i, it in enumerate(basket)
                ]
                if len(txs) >= CHUNK:
                    await conn.execute(insert(Transaction), txs)
                    await conn.execute(insert(TransactionItem), lines)
                    txs, lines = [], []
            if txs:
                await conn.execute(insert(Transaction), txs)
                await conn.execute(insert(TransactionItem), lines)
        if db.is_postgresql:
            async with db.engine.connect() as plain:
                conn = await plain.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE transactions")
                await conn.exec_driver_sql("VACUUM ANALYZE transaction_items")
        else:
            async with db.write() as s:
                await (await s.connection()).exec_driver_sql("ANALYZE")
        return Seeded(url, tenant.id, n)
    finally:
        await db.dispose()


# ---------------------------------------------------------------------------------------------------
# Contenders


async def _stream(db: Database, tenant_id: int) -> int:
    """The baseline: the backtest's own page and item queries, rows read and dropped."""
    count = 0
    async with db.read() as session:
        conn = await session.connection()
        pages = backtest._pages(conn, backtest._TX_COLUMNS, tenant_id, START, END, backtest.BATCH_SIZE)
        async for rows in pages:
            items = await conn.execute(backtest._items_of_page(tenant_id, rows))
            for _ in items:
                pass
            count += len(rows)
    return count


async def _backtest(db: Database, tenant_id: int, draft: rules.CheckedProgram) -> backtest.BacktestReport:
    return await backtest.backtest(db, tenant_id, draft, since=START, until=END)


# ---------------------------------------------------------------------------------------------------
# Fixtures


def _pg_database() -> Iterator[str]:
    why = unreachable()
    if why is not None:
        pytest.skip(why)
    with scratch_database() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('bench') / 'bench.db'}"])
    else:
        urls = _pg_database()
    url = next(urls)
    upgrade(url)
    started = time.perf_counter()
    seeded = asyncio.run(_seed(url, N))
    print(f"\n[{request.param}] seeded {N:,} purchases in {time.perf_counter() - started:.1f} s")
    yield seeded
    for _ in urls:  # runs the PostgreSQL generator's cleanup
        pass


@pytest.fixture(scope="module")
def figures(bench_summary: list[Callable[[], list[str]]]) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    bench_summary.append(lambda: _summary(found))
    return found


def _kind(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def _time(benchmark: Any, run: Callable[[Database], Any], url: str) -> tuple[Any, float]:
    """Run ``run`` once per round on a warm engine; returns the last result and the best wall time."""
    with asyncio.Runner() as runner:
        db = Database.from_url(url)
        best = [float("inf")]
        out: list[Any] = [None]

        def once() -> None:
            started = time.perf_counter()
            out[0] = runner.run(run(db))
            best[0] = min(best[0], time.perf_counter() - started)

        runner.run(_stream(db, -1))  # open the pool's connection before timing
        benchmark.pedantic(once, rounds=3, iterations=1, warmup_rounds=0)
        runner.run(db.dispose())
    return out[0], best[0]


# ---------------------------------------------------------------------------------------------------
# Benchmarks


def test_stream(benchmark: Any, seeded: Seeded, figures: dict[tuple[str, str], float]) -> None:
    """The baseline reads every stored purchase and its lines in the period, page by page."""
    benchmark.group = f"backtest {N:,} purchases: {_kind(seeded.url)}"
    count, seconds = _time(benchmark, lambda db: _stream(db, seeded.tenant_id), seeded.url)
    assert count == seeded.transactions
    figures[_kind(seeded.url), "stream"] = seconds


def test_backtest(benchmark: Any, seeded: Seeded, figures: dict[tuple[str, str], float]) -> None:
    """The backtest replays every stored purchase against a draft and finds the doubled rule's cost."""
    benchmark.group = f"backtest {N:,} purchases: {_kind(seeded.url)}"
    draft = versions.check(DRAFT)
    report, seconds = _time(benchmark, lambda db: _backtest(db, seeded.tenant_id, draft), seeded.url)
    assert report.transactions + report.fully_refunded == seeded.transactions
    assert report.partly_refunded > 0
    by_rule = {r.rule: r for r in report.rules}
    assert by_rule["organic-double"].difference > 0 and by_rule["base"].difference == 0
    assert report.difference > 0 and report.members_changed > 0
    figures[_kind(seeded.url), "backtest"] = seconds
    print(
        f"\n[{_kind(seeded.url)}] backtest: {report.transactions_per_second:,.0f} purchases/s, "
        f"cost difference {report.difference:+,} points ({(report.difference_share or 0):+.1%}), "
        f"{report.members_changed} members' points and {report.tier_changes} members' tiers change"
    )


def _summary(found: dict[tuple[str, str], float]) -> list[str]:
    if not found:
        return []
    lines = [f"Backtest of {N:,} stored 5-line purchases (best of 3; ratio against streaming the same rows):"]
    for kind in ("sqlite", "postgresql"):
        stream, replay = found.get((kind, "stream")), found.get((kind, "backtest"))
        parts = [f"  {kind:<10}"]
        if stream:
            parts.append(f"stream {N / stream:>9,.0f} tx/s")
        if replay:
            verdict = "ok" if N / replay >= TARGET else "MISSED"
            parts.append(f"backtest {N / replay:>9,.0f} tx/s (target >= {TARGET:,}: {verdict})")
        if stream and replay:
            parts.append(f"backtest/stream {replay / stream:.2f}x the time")
        if len(parts) > 1:
            lines.append("   ".join(parts))
    return lines
