"""Import benchmark: `loyalty import transactions` throughput on SQLite and PostgreSQL, as ratios.

``BENCH_IMPORT_ROWS`` purchases (default 100,000; one CSV row each, 2,000 members over 18 months,
the coalition program) are written to a CSV file, then imported through
:func:`loyalty.ops.importer.import_purchases` streaming the file (batch posting: each batch replayed in
memory and written as one booking). Measured in the same run, on the same database:

* **replay** (the baseline): :func:`loyalty.programs.backtest.backtest` of the imported purchases against the
  same program: reading stored purchases and evaluating them again, with nothing written. Target:
  import >= 0.5 of it (issue 11).
* **post one by one**: the first ``BENCH_IMPORT_BASELINE`` purchases (default 5,000) posted through
  :func:`loyalty.points.posting.post_transaction`, one unit of work each (what a till does): what
  batching buys.

Peak memory: the growth of the process's peak RSS (VmHWM) over its RSS before the import; the
1,000,000-row run is ``make soak`` (``BENCH_IMPORT_ROWS=1000000``, target growth < 200 MB).

Run (PostgreSQL at ``LOYALTY_TEST_PG``, default the local server as postgres; skipped when unreachable)::

    .venv/bin/python benchmarks/bench_import.py
    BENCH_IMPORT_ROWS=10000 BENCH_IMPORT_BASELINE=1000 .venv/bin/python benchmarks/bench_import.py   # smoke
    BENCH_IMPORT_DATABASES=sqlite .venv/bin/python benchmarks/bench_import.py
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scratch import scratch_database, unreachable
from loyalty.admin import tenants
from loyalty.cards.numbers import luhn_check_digit, make_card_number
from loyalty.members import membership
from loyalty.ops import importer
from loyalty.points import posting
from loyalty.programs import backtest, versions
from loyalty.storage.db import Database, upgrade

N_ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
N_BASELINE = int(os.environ.get("BENCH_IMPORT_BASELINE", "5000"))
DATABASES = os.environ.get("BENCH_IMPORT_DATABASES", "sqlite,postgresql").split(",")
N_MEMBERS = 2_000
PROGRAM = Path(__file__).resolve().parents[1] / "examples" / "coalition.yaml"
START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 540
OUTLETS = (
    ("cafe", "cafe-1", (("LATTE", "coffee", 390), ("CAKE", "cake", 420))),
    ("bakery", "bakery-1", (("RYE", "bread", 390), ("SOURDOUGH", "organic", 480))),
    ("carwash", "wash-1", (("WASH", "carwash", 990),)),
)
TARGET = 0.5


def write_csv(path: Path, rows: int, prefix: str) -> None:
    rnd = random.Random(7)
    step = timedelta(days=DAYS) / rows
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
    await versions.create_version(db, t.id, PROGRAM.read_text(), actor="bench", now=START - timedelta(days=1))
    for partner, outlet, _ in OUTLETS:
        p = await tenants.create_partner(db, t.id, code=partner, name=partner, actor="bench", now=START)
        await tenants.create_outlet(
            db, t.id, partner_id=p.id, code=outlet, name=outlet, actor="bench", now=START
        )
    return t.id


def rss_kib(field: str) -> int:
    """A line of /proc/self/status in KiB (VmRSS now, VmHWM the peak so far); 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def measure(url: str, csv_path: Path) -> dict[str, float]:
    db = Database.from_url(url)
    try:
        tenant_id = await setup(db, "bench-import", "7301")
        rss_before = rss_kib("VmRSS")
        stream = importer.open_text(csv_path)
        with stream:
            report = await importer.import_purchases(db, tenant_id, importer.read_csv(stream))
        growth_mb = (rss_kib("VmHWM") - rss_before) / 1024
        assert report.imported == N_ROWS and not report.rejected, report

        draft = versions.check(PROGRAM.read_text())
        started = time.perf_counter()
        replayed = await backtest.backtest(
            db, tenant_id, draft, since=START, until=START + timedelta(days=DAYS + 1)
        )
        replay = replayed.transactions / (time.perf_counter() - started)
        assert replayed.transactions == N_ROWS, replayed.transactions

        base_tenant = await setup(db, "bench-base", "7302")
        await membership.issue_cards(db, base_tenant, N_MEMBERS, actor="bench", now=START)
        outlets = {o.code: o.id for o in await tenants.list_outlets(db, base_tenant)}
        with csv_path.open(newline="", encoding="utf-8") as f:
            purchases = [p for _, p in zip(range(N_BASELINE), importer.read_csv(f), strict=False)]
        started = time.perf_counter()
        for p in purchases:
            assert isinstance(p, importer.Purchase)
            serial = "7302" + p.card[4:-1]
            await posting.post_transaction(
                db,
                base_tenant,
                outlet_id=outlets[p.outlet],
                external_id=p.external_id,
                occurred_at=p.occurred_at,
                items=p.items,
                now=p.occurred_at,
                card_number=serial + luhn_check_digit(serial),
                channel="import",
            )
        single = len(purchases) / (time.perf_counter() - started)
    finally:
        await db.dispose()
    return {"import": report.per_second, "replay": replay, "single": single, "growth_mb": growth_mb}


def _run(coro):  # type: ignore[no-untyped-def]
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def report(name: str, r: dict[str, float]) -> None:
    ratio = r["import"] / r["replay"]
    print(
        f"{name:<10} import {r['import']:>7,.0f} purchases/s"
        f" | backtest replay (baseline) {r['replay']:>7,.0f}/s"
        f" | import/replay {ratio:.2f} ({'ok' if ratio >= TARGET else 'below'} target >= {TARGET})"
        f" | posted one by one {r['single']:>6,.0f}/s (import {r['import'] / r['single']:.1f}x)"
        f" | peak RSS growth {r['growth_mb']:,.0f} MB"
    )


def main() -> None:
    print(
        f"import benchmark: {N_ROWS:,} purchases of {N_MEMBERS:,} members; "
        f"one-by-one posting on the first {N_BASELINE:,}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "history.csv"
        write_csv(csv_path, N_ROWS, "7301")
        print(f"file: {csv_path.stat().st_size / 1e6:.1f} MB")
        if "sqlite" in DATABASES:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            report("sqlite", _run(measure(url, csv_path)))
        if "postgresql" not in DATABASES:
            return
        why = unreachable()
        if why is not None:  # no PostgreSQL here: report SQLite only
            print(f"postgresql skipped: {why}")
            return
        with scratch_database() as pg_url:
            upgrade(pg_url)
            report("postgresql", _run(measure(pg_url, csv_path)))


if __name__ == "__main__":
    main()
