"""Import benchmark: `loyalty import transactions` throughput on SQLite and PostgreSQL, as ratios.

``BENCH_IMPORT_ROWS`` purchases (default 100,000; one CSV row each, 1 to 3 of them per member per
month, 2,000 members, the coalition program) are written to a CSV file, then imported through
:func:`loyalty.importer.import_purchases` streaming the file (batches of 500 in one database
transaction each). Two baselines are measured in the same run:

* **parse**: reading the same file with :func:`loyalty.importer.read_csv` and doing nothing else;
  the import's ratio to it shows what posting costs over reading;
* **post_transaction**: the first ``BENCH_IMPORT_BASELINE`` purchases (default 5,000), already parsed,
  posted one by one through :func:`loyalty.transactions.post_transaction` (one database transaction
  each: what the till API does); the ratio import/post_transaction is what batching buys.

Run (PostgreSQL at ``LOYALTY_TEST_PG``, default the local server as postgres; skipped when unreachable)::

    .venv/bin/python benchmarks/bench_import.py
    BENCH_IMPORT_ROWS=10000 BENCH_IMPORT_BASELINE=2000 .venv/bin/python benchmarks/bench_import.py   # smoke
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loyalty import importer, members, programs, tenants, transactions
from loyalty.cards.numbers import make_card_number
from loyalty.db import Database, upgrade

PG_ADMIN_URL = os.environ.get("LOYALTY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
N_ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
N_BASELINE = int(os.environ.get("BENCH_IMPORT_BASELINE", "5000"))
N_MEMBERS = 2_000
PROGRAM = Path(__file__).resolve().parents[1] / "examples" / "coalition.yaml"
START = datetime(2024, 1, 1, tzinfo=UTC)
OUTLETS = (
    ("cafe", "cafe-1", (("LATTE", "coffee", 390), ("CAKE", "cake", 420))),
    ("bakery", "bakery-1", (("RYE", "bread", 390), ("SOURDOUGH", "organic", 480))),
    ("carwash", "wash-1", (("WASH", "carwash", 990),)),
)


def write_csv(path: Path, rows: int, prefix: str) -> None:
    rnd = random.Random(7)
    step = timedelta(days=540) / rows
    with path.open("w", encoding="utf-8") as f:
        f.write("external_id,outlet,card,occurred_at,sku,category,quantity,unit_price\n")
        for i in range(rows):
            _, outlet, products = rnd.choices(OUTLETS, weights=(55, 35, 10))[0]
            sku, category, price = rnd.choice(products)
            card = make_card_number(prefix, rnd.randrange(1, N_MEMBERS + 1))
            at = (START + step * i).isoformat()
            f.write(f"b{i},{outlet},{card},{at},{sku},{category},{rnd.randint(1, 3)},{price}\n")


async def setup(db: Database, code: str, prefix: str) -> int:
    t = await tenants.create_tenant(
        db, code=code, name=code, card_prefix=prefix, now=START - timedelta(days=1)
    )
    await programs.create_version(db, t.id, PROGRAM.read_text(), actor="bench", now=START - timedelta(days=1))
    for partner, outlet, _ in OUTLETS:
        p = await tenants.create_partner(db, t.id, code=partner, name=partner, actor="bench", now=START)
        await tenants.create_outlet(
            db, t.id, partner_id=p.id, code=outlet, name=outlet, actor="bench", now=START
        )
    return t.id


async def measure(url: str, csv_path: Path) -> dict[str, float]:
    db = Database.from_url(url)
    try:
        started = time.perf_counter()
        with csv_path.open(newline="", encoding="utf-8") as f:
            parsed = sum(1 for _ in importer.read_csv(f))
        parse = parsed / (time.perf_counter() - started)

        tenant_id = await setup(db, "bench-import", "7301")
        stream, _ = importer.open_text(csv_path)
        with stream:
            report = await importer.import_purchases(db, tenant_id, importer.read_csv(stream))
        assert report.imported == N_ROWS and not report.rejected, report

        base_tenant = await setup(db, "bench-base", "7302")
        # post_transaction needs the cards to exist: print the same serials for the baseline tenant.
        await members.issue_cards(db, base_tenant, N_MEMBERS, actor="bench", now=START)
        outlets = {o.code: o.id for o in await tenants.list_outlets(db, base_tenant)}
        with csv_path.open(newline="", encoding="utf-8") as f:
            purchases = [p for _, p in zip(range(N_BASELINE), importer.read_csv(f), strict=False)]
        started = time.perf_counter()
        for p in purchases:
            assert isinstance(p, importer.Purchase)
            await transactions.post_transaction(
                db,
                base_tenant,
                outlet_id=outlets[p.outlet],
                external_id=p.external_id,
                occurred_at=p.occurred_at,
                items=p.items,
                now=p.occurred_at,
                card_number="7302" + p.card[4:-1] + _check("7302" + p.card[4:-1]),
                channel="import",
            )
        single = len(purchases) / (time.perf_counter() - started)
    finally:
        await db.dispose()
    return {"import": report.per_second, "parse": parse, "post_transaction": single}


def _check(payload: str) -> str:
    from loyalty.cards.numbers import luhn_check_digit

    return luhn_check_digit(payload)


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro):  # type: ignore[no-untyped-def]
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def report(name: str, r: dict[str, float]) -> None:
    print(
        f"{name:<10} import {r['import']:>8,.0f} rows/s | parse only {r['parse']:>9,.0f} rows/s "
        f"(import/parse {r['import'] / r['parse']:.3f}) | post_transaction one by one "
        f"{r['post_transaction']:>6,.0f}/s (import/post_transaction "
        f"{r['import'] / r['post_transaction']:.2f})"
    )


def main() -> None:
    print(f"{N_ROWS:,} rows, {N_MEMBERS:,} members; baseline post_transaction on {N_BASELINE:,} purchases")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "history.csv"
        write_csv(csv_path, N_ROWS, "7301")
        print(f"file: {csv_path.stat().st_size / 1e6:.1f} MB")
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        report("sqlite", _run(measure(url, csv_path)))
        try:
            asyncio.run(_pg("SELECT 1"))
        except Exception as exc:  # no PostgreSQL here: report SQLite only
            print(f"postgresql skipped: {type(exc).__name__}: {exc}")
            return
        name = f"loyalty_bench_{secrets.token_hex(4)}"
        asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
        try:
            pg_url = (
                PG_ADMIN_URL.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
            )
            upgrade(pg_url)
            report("postgresql", _run(measure(pg_url, csv_path)))
        finally:
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
