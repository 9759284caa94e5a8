"""Webhook dispatch benchmark: drain a backlog of events to one endpoint, on PostgreSQL.

``BENCH_DISPATCH_EVENTS`` events (default 100,000) of ``BENCH_DISPATCH_MEMBERS`` members (default
10,000, events spread round-robin, so each member has a queue that must go out in order) are written
straight into a scratch database's outbox, with one endpoint taking every type. The receiver is a
small asyncio HTTP/1.1 server (keep-alive, answers 200) in a process of its own, and the dispatcher is
``loyalty dispatch --once`` in another, so that what is measured is that process alone: the fan-out
into deliveries, the ordered claims, signing, the requests and the writes of outcomes and attempts.

Reported: events per second (target: at least 500), the receiver's request count (at-least-once: it
may exceed the events, never fall short), and the dispatcher's resident memory sampled during the
drain, the mean of the first quarter beside that of the last (memory must stay flat: the dispatcher
holds batches, never the backlog).

Run: ``make bench-dispatch`` (PostgreSQL at ``LOYALTY_TEST_PG``); quick: ``BENCH_DISPATCH_EVENTS=10000``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_EVENTS = int(os.environ.get("BENCH_DISPATCH_EVENTS", "100000"))
N_MEMBERS = int(os.environ.get("BENCH_DISPATCH_MEMBERS", "10000"))
TARGET_PER_SECOND = 500
#: How often the dispatcher's memory is read (s).
SAMPLE_SECONDS = 0.25

MEMBERS_SQL = """
INSERT INTO members (tenant_id, tier, available, pending, debt, visits, enrolled_at, tags, revision, segment)
SELECT :tenant, NULL, 0, 0, 0, 0, :at, '[]'::jsonb, 0, '' FROM generate_series(1, :n)
"""
#: Event g belongs to member g mod N: every member's events are interleaved with everyone else's.
EVENTS_SQL = """
INSERT INTO events (tenant_id, member_id, type, version, occurred_at, data, dispatched)
SELECT :tenant, CAST(:first AS bigint) + (g % CAST(:n AS bigint)), 'points.adjusted', 1,
       CAST(:at AS timestamptz) + g * interval '1 millisecond',
       jsonb_build_object('adjustment_id', g, 'points', 10 + g % 90, 'reason', 'benchmark'), false
FROM generate_series(1, :events) g
"""


# -- the receiver (its own process) -----------------------------------------------------------------------


async def _receive(port_file: Path) -> None:
    """An HTTP/1.1 server that reads each request (headers and body) and answers 200, keep-alive."""
    count = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                count += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    count_file = port_file.with_suffix(".count")
    while True:
        await asyncio.sleep(0.5)
        count_file.write_text(str(count))


def receiver_main(port_file: str) -> None:
    try:
        import uvloop

        uvloop.run(_receive(Path(port_file)))
    except ImportError:  # pragma: no cover
        asyncio.run(_receive(Path(port_file)))


# -- the run ----------------------------------------------------------------------------------------------


async def seed(url: str, receiver_url: str) -> None:
    from sqlalchemy import text

    from loyalty.admin import tenants
    from loyalty.events import endpoints
    from loyalty.events.guard import Guard
    from loyalty.storage.db import Database

    db = Database.from_url(url)
    try:
        start = datetime.now(UTC) - timedelta(hours=1)
        t = await tenants.create_tenant(db, code="bench", name="Bench", card_prefix="7301", now=start)
        await endpoints.create_endpoint(
            db, t.id, receiver_url, actor="bench", now=start, guard=Guard(allow_private=True)
        )
        began = time.perf_counter()
        async with db.write() as s:
            await s.execute(text(MEMBERS_SQL), {"tenant": t.id, "at": start, "n": N_MEMBERS})
            first = (
                await s.execute(text("SELECT min(id) FROM members WHERE tenant_id = :t"), {"t": t.id})
            ).scalar()
            await s.execute(
                text(EVENTS_SQL),
                {"tenant": t.id, "first": first, "n": N_MEMBERS, "at": start, "events": N_EVENTS},
            )
        async with db.write() as s:
            await s.execute(text("ANALYZE"))
        print(
            f"data: {N_MEMBERS:,} members, {N_EVENTS:,} events written in {time.perf_counter() - began:.1f} s"
        )
    finally:
        await db.dispose()


async def outcome(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from loyalty.storage.db import Database

    db = Database.from_url(url)
    try:
        async with db.read() as s:
            rows = (
                await s.execute(text("SELECT state, count(*) FROM webhook_deliveries GROUP BY state"))
            ).all()
        return {state: int(n) for state, n in rows}
    finally:
        await db.dispose()


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def main() -> None:
    from benchmarks.scratch import scratch_database, unreachable
    from loyalty.storage.db import upgrade

    why = unreachable()
    if why is not None:
        print(f"dispatch benchmark skipped: {why}")
        return
    port_file = Path(f"/tmp/loyalty-bench-receiver-{os.getpid()}.port")
    receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(port_file)])
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.05)
        receiver_url = f"http://127.0.0.1:{int(port_file.read_text())}/hook"
        with scratch_database("loyalty_dispatch") as url:
            upgrade(url)
            asyncio.run(seed(url, receiver_url))
            env = {**os.environ, "LOYALTY_DATABASE_URL": url}
            began = time.perf_counter()
            dispatcher = subprocess.Popen(
                [sys.executable, "-m", "cli", "dispatch", "--once", "--allow-private"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            samples: list[int] = []
            while dispatcher.poll() is None:
                kib = rss_kib(dispatcher.pid)
                if kib is not None:
                    samples.append(kib)
                time.sleep(SAMPLE_SECONDS)
            elapsed = time.perf_counter() - began
            summary = (dispatcher.stdout.read() if dispatcher.stdout else "").strip()
            states = asyncio.run(outcome(url))
        time.sleep(0.6)
        received = int(port_file.with_suffix(".count").read_text() or 0)
    finally:
        receiver.terminate()
        receiver.wait(10)
        for f in (port_file, port_file.with_suffix(".count")):
            f.unlink(missing_ok=True)
    if dispatcher.returncode != 0:
        raise SystemExit(f"dispatcher failed ({dispatcher.returncode}): {summary}")
    rate = N_EVENTS / elapsed
    quarter = max(1, len(samples) // 4)
    first, last = statistics.mean(samples[:quarter]) / 1024, statistics.mean(samples[-quarter:]) / 1024
    print(f"dispatcher: {summary}")
    print(f"deliveries: {states}; requests received: {received:,}")
    print(
        f"postgresql dispatch {N_EVENTS:,} events in {elapsed:.1f} s (process start included):"
        f" {rate:,.0f} events/s"
        f" ({'ok' if rate >= TARGET_PER_SECOND else 'under'} target >= {TARGET_PER_SECOND}) | dispatcher RSS"
        f" first quarter {first:.0f} MiB, last quarter {last:.0f} MiB, peak {max(samples) / 1024:.0f} MiB"
        f" ({len(samples)} samples)"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--receiver":
        receiver_main(sys.argv[2])
    else:
        main()
