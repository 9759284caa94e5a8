"""Customer-value benchmark: the segment run over a large tenant on PostgreSQL, beside a plain count.

``BENCH_VALUE_MEMBERS`` members (default 100,000) and ``BENCH_VALUE_PURCHASES`` purchases (default
2,000,000, over two years, a few members buying much more often than most) are written straight into
a scratch database with ``INSERT ... SELECT generate_series`` (the ledger is not what is measured
here). Then, in the same run:

* **count** (the baseline): ``SELECT count(*)`` over the tenant's purchases, the least any job reading
  every purchase must do;
* **figures**: :func:`loyalty.value.figures.compute`, the grouped query with its window functions, the
  per-member arithmetic and the BG/NBD and Gamma-Gamma fits;
* **segment run**: :func:`loyalty.value.segments.run`: the figures, every member's segment, the
  figures rows and the moves written. Target: under 60 s here (issue 14).

Medians of ``BENCH_VALUE_ROUNDS`` rounds (default 3) for the count, of 1 round for the jobs (each takes
seconds). Run: ``.venv/bin/python benchmarks/bench_value.py`` (PostgreSQL at ``LOYALTY_TEST_PG``);
smoke: ``BENCH_VALUE_MEMBERS=2000 BENCH_VALUE_PURCHASES=40000``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from benchmarks.scratch import scratch_database, unreachable
from loyalty.admin import tenants
from loyalty.programs import versions
from loyalty.storage.db import Database, upgrade
from loyalty.value import figures, segments

N_MEMBERS = int(os.environ.get("BENCH_VALUE_MEMBERS", "100000"))
N_PURCHASES = int(os.environ.get("BENCH_VALUE_PURCHASES", "2000000"))
ROUNDS = int(os.environ.get("BENCH_VALUE_ROUNDS", "3"))
PROGRAM = Path(__file__).resolve().parents[1] / "examples" / "coalition.yaml"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
TARGET_SECONDS = 60.0

MEMBERS_SQL = """
INSERT INTO members (tenant_id, tier, available, pending, debt, visits, enrolled_at, tags, revision, segment)
SELECT :tenant, NULL, 0, 0, 0, 0, :enrolled, '[]'::jsonb, 0, '' FROM generate_series(1, :n)
"""
#: Purchases over two years; member m is picked with density ~ 1/sqrt(m) (a few buy very often).
PURCHASES_SQL = """
INSERT INTO transactions (tenant_id, member_id, outlet_id, external_id, channel, occurred_at, posted_at,
                          program_version_id, amount, points, amount_refunded, points_refunded, evaluation)
SELECT :tenant, CAST(:first AS bigint) + floor(CAST(:n AS bigint) * power(random(), 2))::bigint,
       :outlet, 'b' || g, 'till', at, at,
       :version, 100 + floor(random() * 4900)::bigint, 0, 0, 0, '{}'::jsonb
FROM (SELECT g, CAST(:start AS timestamptz) + random() * interval '730 days' AS at
      FROM generate_series(1, :purchases) g) s
"""


async def measure(url: str) -> dict[str, float]:
    db = Database.from_url(url)
    try:
        start = NOW - timedelta(days=730)
        t = await tenants.create_tenant(db, code="bench", name="Bench", card_prefix="7301", now=start)
        version = await versions.create_version(db, t.id, PROGRAM.read_text(), actor="bench", now=start)
        partner = await tenants.create_partner(db, t.id, code="cafe", name="Cafe", actor="bench", now=start)
        outlet = await tenants.create_outlet(
            db, t.id, partner_id=partner.id, code="cafe-1", name="Cafe 1", actor="bench", now=start
        )
        began = time.perf_counter()
        async with db.write() as s:
            await s.execute(text(MEMBERS_SQL), {"tenant": t.id, "enrolled": start, "n": N_MEMBERS})
            first = (
                await s.execute(text("SELECT min(id) FROM members WHERE tenant_id = :t"), {"t": t.id})
            ).scalar()
            await s.execute(
                text(PURCHASES_SQL),
                {
                    "tenant": t.id,
                    "first": first,
                    "n": N_MEMBERS,
                    "outlet": outlet.id,
                    "version": version.id,
                    "start": start,
                    "purchases": N_PURCHASES,
                },
            )
        async with db.write() as s:
            await s.execute(text("ANALYZE transactions"))
            await s.execute(text("ANALYZE members"))
        written = time.perf_counter() - began
        print(f"data: {N_MEMBERS:,} members, {N_PURCHASES:,} purchases written in {written:.1f} s")
        counts = []
        for _ in range(ROUNDS):
            began = time.perf_counter()
            async with db.read() as s:
                await s.execute(text("SELECT count(*) FROM transactions WHERE tenant_id = :t"), {"t": t.id})
            counts.append(time.perf_counter() - began)
        began = time.perf_counter()
        found, fit = await figures.compute(db, t.id, now=NOW)
        compute = time.perf_counter() - began
        began = time.perf_counter()
        run = await segments.run(db, t.id, now=NOW)
        whole = time.perf_counter() - began
        print(
            f"figures for {len(found):,} members; value models {'fitted' if fit else 'not fitted'};"
            f" segments: {', '.join(f'{k or chr(8212)} {v:,}' for k, v in sorted(run.sizes.items()))}"
        )
        return {"count": statistics.median(counts), "figures": compute, "run": whole}
    finally:
        await db.dispose()


def main() -> None:
    why = unreachable()
    if why is not None:
        print(f"value benchmark skipped: {why}")
        return
    with scratch_database("loyalty_value") as url:
        upgrade(url)
        r = asyncio.run(measure(url))
    print(
        f"postgresql count(*) (baseline) {r['count']:.2f} s | figures {r['figures']:.1f} s"
        f" ({r['figures'] / r['count']:.0f}x the count) | segment run {r['run']:.1f} s"
        f" ({r['run'] / r['count']:.0f}x the count; {'ok' if r['run'] < TARGET_SECONDS else 'over'} target"
        f" < {TARGET_SECONDS:.0f} s)"
    )


if __name__ == "__main__":
    main()
