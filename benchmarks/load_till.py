"""Till load test: a real server on loopback, PostgreSQL, a realistic till mix, and two baselines.

For each worker count (default 1 and 2) the same uvicorn command line (uvloop, httptools, log level
warning) serves, one after the other:

* ``ping``: the bare Litestar JSON endpoint of ``benchmarks/baseline_app.py`` (``GET /ping``);
* ``insert``: the baseline that decodes the till's basket (``api.schemas.PostTransactionRequest``)
  and does one raw asyncpg INSERT (``POST /baskets``);
* ``till``: the loyalty API (``api.app:create_app``). Each connection is one till of its own outlet
  with its own cashier key and runs sessions back to back: scan a card (``POST /v1/till/lookup``),
  post a 5-item basket (``POST /v1/till/transactions``, unique receipt id and Idempotency-Key), and in
  about one session in ten redeem a reward (``POST /v1/till/redemptions``).
* ``post``: the same API, posts only (a till that posts the scanned card's basket at once): the
  posting path against the one-insert baseline on equal terms, request for request.
* ``bare``: ``post`` on a server started with ``LOYALTY_OUTBOX=off`` (postings write no events): what
  the outbox costs a posting is ``post`` over ``bare`` (issue 15: within 10%).
* ``hosts`` (not run by default; ``make bench-hosts``): ``post`` on one server with 2 workers, then on
  two servers with 1 worker each on two ports (two hosts, as it were), the generator's connections
  split between them; all behind one PgBouncer in transaction pooling (LOYALTY_BENCH_PGBOUNCER, else
  the one ``deploy/pgbouncer/start.sh`` starts or finds) and one Redis (LOYALTY_BENCH_REDIS, default
  ``redis://127.0.0.1:6379/14``). Reported: the two servers' summed posts/s over the one server's
  (issue 16: >= 0.9), two rounds each in the order A-B-B-A after one unmeasured pass (a drift over
  the run weighs on both alike); then, on two fresh 1-worker servers
  with ``LOYALTY_RATE_LIMIT=20``, a burst of 100 lookups with one key split over both, and how many
  were accepted (a limit shared through Redis lets ~20 through, limits per process up to 40).

The load generator is closed-loop (``--concurrency`` keep-alive HTTP/1.1 connections, each waiting
for its answer before the next request), hand-rolled on ``asyncio`` streams under uvloop because it
shares the machine's cores with the server and PostgreSQL. Every scenario warms up for
``WARMUP_SECONDS``, then counts requests that start and end inside a window of ``--duration``
seconds. Reported: requests/s per endpoint, p50/p99 latency, non-2xx answers (a 409
insufficient-points on a redemption is expected and counted apart), the CPU the generator and the
server used, and the machine's busy share (other users of the machine show up there).

The database is created fresh (and dropped at the end, also on errors or Ctrl-C); it holds one
tenant with examples/kaffeehaus.yaml published, one outlet and cashier key per connection, and
``--cards`` activated cards with ``SEED_POINTS`` available points each, scanned as signed card URLs.

    .venv/bin/python benchmarks/load_till.py                      # 1 and 2 workers, 10 s per scenario
    .venv/bin/python benchmarks/load_till.py --duration 15 --workers 2 --concurrency 24
    .venv/bin/python benchmarks/load_till.py --scenarios till --workers 1 --verbose   # pid for py-spy
    .venv/bin/python benchmarks/load_till.py --scenarios hosts                    # PgBouncer + Redis

Targets (issue 5): till posts >= 1,200/s with p99 < 25 ms with 2 workers on PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets as pysecrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from benchmarks.baseline_app import SCRATCH_DDL  # noqa: E402
from loyalty.admin import access, tenants  # noqa: E402
from loyalty.cards.qr import card_url  # noqa: E402
from loyalty.cards.secrets import init_secrets, load_secrets  # noqa: E402
from loyalty.cards.tokens import sign_token  # noqa: E402
from loyalty.members import lookup, membership  # noqa: E402
from loyalty.points import adjustments, posting  # noqa: E402
from loyalty.programs import versions  # noqa: E402
from loyalty.storage.db import Database, upgrade  # noqa: E402
from rules import Item  # noqa: E402

PG_ADMIN_URL = os.environ.get("LOYALTY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
HOST = "127.0.0.1"
PROGRAM = (ROOT / "examples" / "kaffeehaus.yaml").read_text()
SCENARIOS = ("ping", "insert", "till", "post", "bare", "hosts")
#: What runs without ``--scenarios``: ``hosts`` needs PgBouncer and Redis (``make bench-hosts``).
DEFAULT_SCENARIOS = ("ping", "insert", "till", "post", "bare")
#: The program's public_base_url: what the card QR codes hold before the token.
BASE_URL = "https://bonus.example.com"
T = TypeVar("T")

#: Longest measuring window per scenario (s): a benchmark, not a soak test.
MAX_DURATION = 300
#: Most connections (tills) the generator opens.
MAX_CONCURRENCY = 256
#: Most cards seeded (each is an activation and an adjustment while seeding).
MAX_CARDS = 20_000
#: Requests before the window opens: pools fill, statements compile, both workers get traffic.
WARMUP_SECONDS = 2.0
#: How long a server may take to answer its first request.
STARTUP_TIMEOUT = 30.0
#: Slack after the window before a scenario is abandoned as hung (s).
HANG_SLACK = 30.0
#: Available points per seeded member: three 300-point coffees, so some redemptions hit 409.
SEED_POINTS = 900
#: One session in this many also redeems a reward.
REDEEM_EVERY = 10
#: Items per basket.
BASKET_ITEMS = 5
#: Rate limit given to the server (per key per worker per second): far above what a till sends.
RATE_LIMIT = 1_000_000
#: Concurrent domain calls while seeding.
SEED_CONCURRENCY = 8
#: Scenario ``hosts``: the Redis database both servers share (rate limits, verified keys).
HOSTS_REDIS_URL = os.environ.get("LOYALTY_BENCH_REDIS", "redis://127.0.0.1:6379/14")
#: Scenario ``hosts``: posts/s of two 1-worker servers over one 2-worker server (issue 16).
HOSTS_TARGET = 0.9
#: Rate-limit check of ``hosts``: the per-key limit (requests per second), the burst sent with one key
#: over both servers, and the connections it uses (half on each server).
LIMIT_CHECK = 20
LIMIT_BURST = 5 * LIMIT_CHECK
LIMIT_CONNECTIONS = 10

#: (sku, category, unit price in cents, weight): a café, a bakery and the odd car wash.
MENU = [
    ("LATTE", "coffee", 420, 10),
    ("ESPRESSO", "coffee", 260, 8),
    ("CAPPUCCINO", "coffee", 390, 8),
    ("CROISSANT", "bakery", 240, 8),
    ("SOURDOUGH", "bakery", 480, 4),
    ("OAT-MILK", "organic", 290, 4),
    ("APPLE-JUICE", "organic", 330, 4),
    ("CHEESECAKE", "cake", 450, 5),
    ("NEWSPAPER", "press", 320, 2),
    ("CIGARETTES", "tobacco", 850, 1),
    ("WASH", "carwash", 1290, 1),
]


# --- seeding ----------------------------------------------------------------------------------------


@dataclass
class World:
    keys: list[str]
    codes: list[str]


async def _bounded(n: int, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
    gate = asyncio.Semaphore(n)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def seed(url: str, secrets_file: Path, tills: int, n_cards: int) -> World:
    """The tenant, program, outlets, keys and activated cards, built through the domain services."""
    db = Database.from_url(url, pool_size=SEED_CONCURRENCY)
    try:
        now = datetime.now(UTC)
        t = await tenants.create_tenant(db, code="bench", name="Bench", card_prefix="6012", now=now)
        draft = await versions.save_draft(db, t.id, PROGRAM, actor="bench", now=now)
        await versions.publish(db, t.id, draft.id, actor="bench", now=now, valid_from=now)
        partner = await tenants.create_partner(db, t.id, code="cafe", name="Café", actor="bench", now=now)
        keys = []
        for i in range(tills):
            outlet = await tenants.create_outlet(
                db, t.id, partner_id=partner.id, code=f"cafe-{i}", name=f"Café {i}", actor="bench", now=now
            )
            key = await access.create_key(
                db, t.id, role="cashier", name=f"till {i}", actor="bench", now=now, outlet_id=outlet.id
            )
            keys.append(key.secret)
        numbers = await membership.issue_cards(db, t.id, n_cards, actor="bench", now=now)
        ids = await lookup.card_ids(db, t.id, numbers)
        now = datetime.now(UTC)
        views = await _bounded(
            SEED_CONCURRENCY, [partial(membership.resolve_card, db, t.id, n, now=now) for n in numbers]
        )
        await _bounded(
            SEED_CONCURRENCY,
            [
                partial(
                    adjustments.adjust,
                    db,
                    t.id,
                    v.id,
                    SEED_POINTS,
                    reason="bench seed",
                    actor="bench",
                    now=now,
                )
                for v in views
            ],
        )
        # One earlier purchase per member (history to read), then the planner's statistics of it, as
        # autovacuum keeps them on a live database.
        first_outlet = (await tenants.list_outlets(db, t.id))[0].id
        await _bounded(
            SEED_CONCURRENCY,
            [
                partial(
                    posting.post_transaction,
                    db,
                    t.id,
                    outlet_id=first_outlet,
                    external_id=f"seed-{v.id}",
                    occurred_at=now,
                    items=(Item("LATTE", 420, 1, "coffee"),),
                    member_id=v.id,
                    now=now,
                    explain=False,
                )
                for v in views
            ],
        )
        ring = load_secrets(secrets_file).ring(t.id)
        codes = [card_url(BASE_URL, sign_token(ring, ids[n], now=now)) for n in numbers]
        async with db.write() as s:
            await s.execute(text("ANALYZE"))
        return World(keys, codes)
    finally:
        await db.dispose()


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database() -> Iterator[tuple[str, str]]:
    """A new, migrated database with the scratch table: (SQLAlchemy URL, asyncpg DSN); dropped after."""
    name = f"loyalty_load_{pysecrets.token_hex(4)}"
    base = PG_ADMIN_URL.rpartition("/")[0]
    dsn = f"{base}/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        upgrade(url)

        async def scratch() -> None:
            import asyncpg

            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(SCRATCH_DDL)
            finally:
                await conn.close()

        asyncio.run(scratch())
        yield url, dsn
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- server -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, fields after the command name) of every process in /proc; nothing where there is none."""
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    text = Path(entry.path, "stat").read_text()
                    yield (
                        int(entry.name),
                        [text[text.index("(") + 1 : text.rindex(")")], *text.rpartition(")")[2].split()],
                    )


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds used so far by the generator, the servers' processes, PostgreSQL's and PgBouncer's,
    and the machine's busy and total jiffies (other users of the machine show up in the machine's
    share)."""

    generator: float
    server: float
    postgres: float
    pgbouncer: float
    busy: int
    total: int

    @classmethod
    def take(cls, server_pgids: Collection[int]) -> CpuMark:
        tick = os.sysconf("SC_CLK_TCK")
        server = postgres = pgbouncer = 0.0
        for _pid, f in _proc_stats():
            with contextlib.suppress(IndexError, ValueError):
                used = (int(f[12]) + int(f[13])) / tick
                if int(f[3]) in server_pgids:
                    server += used
                elif f[0] == "postgres":
                    postgres += used
                elif f[0] == "pgbouncer":
                    pgbouncer += used
        busy = total = 0
        with contextlib.suppress(OSError, ValueError):
            cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            total = sum(cpu)
            busy = total - cpu[3] - (cpu[4] if len(cpu) > 4 else 0)
        return cls(time.process_time(), server, postgres, pgbouncer, busy, total)


class Server:
    """``uvicorn --factory <app> --workers N`` in its own process group, stopped with the group."""

    def __init__(self, app: str, workers: int, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.log = log
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            app,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={
                    **os.environ,
                    **env,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                },
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def pids(self) -> list[int]:
        """The server's processes: the process group we started."""
        return [pid for pid, f in _proc_stats() if len(f) > 3 and f[3] == str(self.proc.pid)]

    async def ready(self, path: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                conn = await Connection.open(self.port)
                try:
                    status, _ = await conn.request(b"GET", path.encode(), b"")
                finally:
                    conn.close()
                if status == 200:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # Workers left behind by a killed supervisor are still in our group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# --- load generator ---------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time (no pipelining)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def request(
        self, method: bytes, path: bytes, headers: bytes, body: bytes | None = None
    ) -> tuple[int, bytes]:
        head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s" % (method, path, headers)
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            self.writer.write(head + body)
        else:
            self.writer.write(head + b"\r\n")
        answer = await self.reader.readuntil(b"\r\n\r\n")
        status = int(answer[9:12])
        lower = answer.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"answer without Content-Length: {answer[:200]!r}")
        length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class Endpoint:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    expected_409: int = 0


@dataclass
class Recorder:
    opens: float
    closes: float
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, name: str, t0: float, t1: float, status: int, body: bytes) -> None:
        expected = status == 409 and b"insufficient-points" in body
        unexpected = not 200 <= status < 300 and not expected
        if unexpected and len(self.failures) < 5:
            self.failures.append(f"{name}: {status} {body[:300]!r}")
        if t0 < self.opens or t1 > self.closes:
            return
        ep = self.endpoints.setdefault(name, Endpoint())
        ep.latencies.append(t1 - t0)
        ep.statuses[status] = ep.statuses.get(status, 0) + 1
        if expected:
            ep.expected_409 += 1


@dataclass
class Till:
    """What one connection needs: its key, and fresh ids for receipts and Idempotency-Keys."""

    auth: bytes
    prefix: str
    rng: random.Random
    serial: int = 0

    def next_id(self) -> str:
        self.serial += 1
        return f"{self.prefix}-{self.serial}"


_SKUS = [m for m in MENU for _ in range(m[3])]


def basket(till: Till, code: str) -> bytes:
    items = [
        {"sku": sku, "category": cat, "quantity": till.rng.choice((1, 1, 1, 2)), "unit_price": price}
        for sku, cat, price, _ in till.rng.sample(_SKUS, BASKET_ITEMS)
    ]
    return json.dumps(
        {
            "card": code,
            "external_id": till.next_id(),
            "occurred_at": datetime.now(UTC).isoformat(),
            "items": items,
        },
        separators=(",", ":"),
    ).encode()


Session = Callable[[Connection, Till, Recorder], Awaitable[None]]


def make_sessions(codes: list[str]) -> dict[str, Session]:
    async def timed(rec: Recorder, name: str, request: Awaitable[tuple[int, bytes]]) -> None:
        t0 = time.perf_counter()
        status, body = await request
        rec.add(name, t0, time.perf_counter(), status, body)

    async def ping(conn: Connection, till: Till, rec: Recorder) -> None:
        await timed(rec, "GET /ping", conn.request(b"GET", b"/ping", b""))

    async def insert(conn: Connection, till: Till, rec: Recorder) -> None:
        body = basket(till, till.rng.choice(codes))
        await timed(rec, "POST /baskets", conn.request(b"POST", b"/baskets", b"", body))

    async def till_session(conn: Connection, t: Till, rec: Recorder) -> None:
        code = t.rng.choice(codes)
        scan = json.dumps({"code": code}).encode()
        await timed(rec, "lookup", conn.request(b"POST", b"/v1/till/lookup", t.auth, scan))
        key = b"Idempotency-Key: %s\r\n" % t.next_id().encode()
        await timed(
            rec, "post", conn.request(b"POST", b"/v1/till/transactions", t.auth + key, basket(t, code))
        )
        if t.rng.randrange(REDEEM_EVERY) == 0:
            key = b"Idempotency-Key: %s\r\n" % t.next_id().encode()
            body = json.dumps({"card": code, "reward": "COFFEE"}).encode()
            await timed(rec, "redeem", conn.request(b"POST", b"/v1/till/redemptions", t.auth + key, body))

    async def post_only(conn: Connection, t: Till, rec: Recorder) -> None:
        key = b"Idempotency-Key: %s\r\n" % t.next_id().encode()
        body = basket(t, t.rng.choice(codes))
        await timed(rec, "post", conn.request(b"POST", b"/v1/till/transactions", t.auth + key, body))

    return {"ping": ping, "insert": insert, "till": till_session, "post": post_only, "bare": post_only}


@dataclass
class Result:
    scenario: str
    workers: int
    duration: float
    endpoints: dict[str, Endpoint]
    failures: list[str]
    cpu: dict[str, float]

    def rate(self, name: str | None = None) -> float:
        eps = self.endpoints.values() if name is None else [self.endpoints.get(name, Endpoint())]
        return sum(len(e.latencies) for e in eps) / self.duration

    def unexpected(self) -> int:
        return sum(
            n for e in self.endpoints.values() for s, n in e.statuses.items() if not 200 <= s < 300
        ) - sum(e.expected_409 for e in self.endpoints.values())


async def drive(
    server: Server | Sequence[Server],
    scenario: str,
    session: Session,
    workers: int,
    keys: list[str],
    concurrency: int,
    duration: float,
    run_id: str,
) -> Result:
    """Run ``session`` back to back on ``concurrency`` connections; measure the window after warm-up.
    Given several servers, connection ``i`` goes to server ``i`` modulo their number (a client that
    spreads its tills over hosts)."""
    servers = [server] if isinstance(server, Server) else list(server)
    pgids = {s.proc.pid for s in servers}
    start = time.perf_counter()
    rec = Recorder(opens=start + WARMUP_SECONDS, closes=start + WARMUP_SECONDS + duration)
    marks: dict[str, CpuMark] = {}

    async def mark() -> None:
        await asyncio.sleep(max(0.0, rec.opens - time.perf_counter()))
        marks["open"] = CpuMark.take(pgids)
        await asyncio.sleep(max(0.0, rec.closes - time.perf_counter()))
        marks["close"] = CpuMark.take(pgids)

    async def loop(i: int) -> None:
        till = Till(
            b"Authorization: Bearer %s\r\n" % keys[i % len(keys)].encode(),
            f"{run_id}-{scenario}-w{workers}-{i}",
            random.Random(f"{run_id}-{i}"),
        )
        port = servers[i % len(servers)].port
        conn = await Connection.open(port)
        try:
            while time.perf_counter() < rec.closes:
                try:
                    await session(conn, till, rec)
                except (OSError, asyncio.IncompleteReadError, ValueError, RuntimeError) as exc:
                    rec.add("connection", time.perf_counter(), time.perf_counter(), 599, repr(exc).encode())
                    conn.close()
                    conn = await Connection.open(port)
        finally:
            conn.close()

    async with asyncio.timeout(WARMUP_SECONDS + duration + HANG_SLACK):
        await asyncio.gather(mark(), *(loop(i) for i in range(concurrency)))
    a, b = marks["open"], marks["close"]
    cpu = {
        "generator": (b.generator - a.generator) / duration,
        "server": (b.server - a.server) / duration,
        "postgres": (b.postgres - a.postgres) / duration,
        "pgbouncer": (b.pgbouncer - a.pgbouncer) / duration,
        "machine": (b.busy - a.busy) / max(1, b.total - a.total) * (os.cpu_count() or 1),
    }
    return Result(scenario, workers, duration, rec.endpoints, rec.failures, cpu)


# --- report -----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def describe(r: Result) -> list[str]:
    ms = 1000 / max(1.0, r.rate())
    server, postgres = r.cpu["server"], r.cpu["postgres"]
    pooler = f", pgbouncer {r.cpu['pgbouncer']:.2f}" if r.cpu.get("pgbouncer") else ""
    lines = [
        f"  {r.scenario:<6} workers={r.workers}  CPU cores: generator {r.cpu['generator']:.2f}, server "
        f"{server:.2f} ({server * ms:.2f} ms/request), postgres {postgres:.2f} "
        f"({postgres * ms:.2f} ms/request){pooler}, whole machine {r.cpu['machine']:.2f} of {os.cpu_count()}"
    ]
    for name, ep in r.endpoints.items():
        bad = {s: n for s, n in ep.statuses.items() if not 200 <= s < 300}
        lines.append(
            f"    {name:<14} {len(ep.latencies) / r.duration:>8.0f}/s  p50 {pct(ep.latencies, 0.5):6.2f} ms"
            f"  p99 {pct(ep.latencies, 0.99):6.2f} ms  non-2xx {bad or 0}"
            + (f" (expected insufficient-points 409: {ep.expected_409})" if ep.expected_409 else "")
        )
    lines.append(f"    {'all':<14} {r.rate():>8.0f}/s")
    lines.extend(f"    ! {f}" for f in r.failures)
    return lines


def table(results: dict[tuple[str, int], Result], workers: list[int]) -> list[str]:
    head = (
        f"{'workers':>7} | {'scenario':>8} | {'posts/s':>8} | {'post p50 ms':>11} | {'post p99 ms':>11} | "
        f"{'insert/s':>8} | {'insert p99':>10} | {'posts/insert':>12} | {'p99/insert p99':>14} | "
        f"{'errors':>6}"
    )
    lines = [head, "-" * len(head)]
    for w in workers:
        ins, png = results.get(("insert", w)), results.get(("ping", w))
        ins_rate = ins.rate("POST /baskets") if ins else float("nan")
        ins_lat = ins.endpoints.get("POST /baskets", Endpoint()).latencies if ins else []
        for scenario in ("post", "bare", "till"):
            r = results.get((scenario, w))
            if r is None:
                continue
            posts = r.rate("post")
            post_lat = r.endpoints.get("post", Endpoint()).latencies
            errors = sum(x.unexpected() for x in (r, ins, png) if x)
            lines.append(
                f"{w:>7} | {scenario:>8} | {posts:>8.0f} | {pct(post_lat, 0.5):>11.1f} | "
                f"{pct(post_lat, 0.99):>11.1f} | "
                f"{ins_rate:>8.0f} | {pct(ins_lat, 0.99):>10.1f} | {posts / ins_rate:>12.2f} | "
                f"{pct(post_lat, 0.99) / pct(ins_lat, 0.99):>14.2f} | {errors:>6}"
            )
    for w in workers:
        post, bare = results.get(("post", w)), results.get(("bare", w))
        if post and bare:
            lines.append(
                f"outbox, {w} worker(s): posts/s with events / without ="
                f" {post.rate('post') / bare.rate('post'):.2f} (target >= 0.90)"
            )
    for scenario in ("post", "till"):
        one, two = results.get((scenario, 1)), results.get((scenario, 2))
        if one and two:
            lines.append(
                f"{scenario}: 2 workers / 1 worker posts/s = {two.rate('post') / one.rate('post'):.2f}"
                f" (insert baseline: {_ratio(results, 'insert', 'POST /baskets'):.2f})"
            )
    return lines


def _ratio(results: dict[tuple[str, int], Result], scenario: str, name: str) -> float:
    one, two = results.get((scenario, 1)), results.get((scenario, 2))
    return two.rate(name) / one.rate(name) if one and two else float("nan")


# --- two hosts --------------------------------------------------------------------------------------


def pgbouncer_url() -> str:
    """PgBouncer's URL: LOYALTY_BENCH_PGBOUNCER, else the one deploy/pgbouncer/start.sh starts or finds."""
    named = os.environ.get("LOYALTY_BENCH_PGBOUNCER")
    if named:
        return named
    done = subprocess.run(
        [str(ROOT / "deploy" / "pgbouncer" / "start.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"scenario hosts needs PgBouncer (make pgbouncer): {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


def pooled(url: str, pgbouncer: str) -> str:
    """The benchmark's database ``url`` reached through ``pgbouncer``, with the pooler settings."""
    from sqlalchemy import make_url

    name = make_url(url).database
    through = make_url(pgbouncer).set(
        drivername="postgresql+asyncpg", database=name, query={"pooler": "pgbouncer"}
    )
    return through.render_as_string(hide_password=False)


#: Scenario ``hosts``: its layouts, (servers, workers each), and the order they run in. A-B-B-A: a
#: drift over the run (the seed's aftermath, autovacuum, the machine's other users) weighs on both.
HOST_LAYOUTS = {"1host": (1, 2), "2hosts": (2, 1)}
HOST_ROUNDS = ("1host", "2hosts", "2hosts", "1host")


async def _layout(
    label: str,
    env: dict[str, str],
    args: argparse.Namespace,
    world: World,
    run_id: str,
    log: Path,
    *,
    warm: bool,
) -> Result:
    """Posts only on the servers of layout ``label`` (connections spread over them); ``warm`` first
    drives one unmeasured pass (the first servers after the seed pay for its aftermath)."""
    count, workers = HOST_LAYOUTS[label]
    servers = [Server(args.till_app, workers, env, log) for _ in range(count)]
    post = make_sessions(world.codes)["post"]
    try:
        for server in servers:
            await server.ready("/health")
        if warm:
            await drive(
                servers, label, post, workers, world.keys, args.concurrency, args.duration, run_id + "w"
            )
        return await drive(servers, label, post, workers, world.keys, args.concurrency, args.duration, run_id)
    finally:
        for server in servers:
            server.stop()


def _merged(runs: list[Result]) -> Result:
    """The rounds of one layout as one result: their requests together over their summed windows."""
    endpoints: dict[str, Endpoint] = {}
    for r in runs:
        for name, ep in r.endpoints.items():
            into = endpoints.setdefault(name, Endpoint())
            into.latencies += ep.latencies
            into.expected_409 += ep.expected_409
            for status, n in ep.statuses.items():
                into.statuses[status] = into.statuses.get(status, 0) + n
    duration = sum(r.duration for r in runs)
    cpu = {k: sum(r.cpu[k] * r.duration for r in runs) / duration for k in runs[0].cpu}
    failures = [f for r in runs for f in r.failures][:5]
    return Result(runs[0].scenario, runs[0].workers, duration, endpoints, failures, cpu)


async def _burst(servers: list[Server], world: World) -> tuple[dict[int, int], float]:
    """``LIMIT_BURST`` lookups with one key, spread over ``servers``, sent right after a second starts
    (a limit counted per second then sees them in one second): the answers' statuses, and how long
    the burst took."""
    auth = b"Authorization: Bearer %s\r\n" % world.keys[0].encode()
    body = json.dumps({"code": world.codes[0]}).encode()
    conns = [await Connection.open(servers[i % len(servers)].port) for i in range(LIMIT_CONNECTIONS)]
    statuses: dict[int, int] = {}
    try:
        for conn in conns[: len(servers)]:  # each server verifies the key once, before the limit's second
            await conn.request(b"POST", b"/v1/till/lookup", auth, body)
        await asyncio.sleep(2 - time.time() % 1)

        async def send(conn: Connection, n: int) -> None:
            for _ in range(n):
                status, _ = await conn.request(b"POST", b"/v1/till/lookup", auth, body)
                statuses[status] = statuses.get(status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(send(c, LIMIT_BURST // LIMIT_CONNECTIONS) for c in conns))
        return statuses, time.perf_counter() - t0
    finally:
        for conn in conns:
            conn.close()


async def run_hosts(
    args: argparse.Namespace, url: str, world: World, secrets_file: Path, log: Path
) -> tuple[list[Result], list[str]]:
    """Scenario ``hosts``: one server with 2 workers against two servers with 1 worker each (two
    hosts, as it were) driven together, all behind one PgBouncer and one Redis; then a burst with one
    key over both servers against a small rate limit."""
    env = {
        "LOYALTY_DATABASE_URL": pooled(url, args.pgbouncer),
        "LOYALTY_SECRETS_FILE": str(secrets_file),
        "LOYALTY_RATE_LIMIT": str(RATE_LIMIT),
        "LOYALTY_REDIS_URL": HOSTS_REDIS_URL,
    }
    run_id = pysecrets.token_hex(3)
    runs: dict[str, list[Result]] = {label: [] for label in HOST_LAYOUTS}
    for n, label in enumerate(HOST_ROUNDS):
        runs[label].append(await _layout(label, env, args, world, f"{run_id}r{n}", log, warm=n == 0))
    one, two = _merged(runs["1host"]), _merged(runs["2hosts"])
    for r in (one, two):
        print("\n".join(describe(r)), flush=True)
    limited = [
        Server(args.till_app, 1, env | {"LOYALTY_RATE_LIMIT": str(LIMIT_CHECK)}, log) for _ in range(2)
    ]
    try:
        for server in limited:
            await server.ready("/health")
        statuses, took = await _burst(limited, world)
    finally:
        for server in limited:
            server.stop()
    accepted = sum(n for s, n in statuses.items() if 200 <= s < 300)
    lines = [
        f"hosts (PgBouncer {args.pgbouncer}, Redis {HOSTS_REDIS_URL}): posts/s of 2 servers x 1 worker"
        f" / 1 server x 2 workers = {two.rate('post'):.0f} / {one.rate('post'):.0f}"
        f" = {two.rate('post') / one.rate('post'):.2f} (target >= {HOSTS_TARGET:.2f})"
        f" over {len(HOST_ROUNDS) // 2} rounds each, A-B-B-A",
        f"rate limit over 2 servers, one key, LOYALTY_RATE_LIMIT={LIMIT_CHECK}/s: {accepted} of {LIMIT_BURST}"
        f" requests accepted in {took:.2f} s (target <= ~{LIMIT_CHECK}; limits kept per process would accept"
        f" up to {2 * LIMIT_CHECK}); statuses {dict(sorted(statuses.items()))}",
    ]
    return [one, two], lines


# --- main -------------------------------------------------------------------------------------------


def _sigterm(*_: object) -> None:
    raise SystemExit(143)


async def run_scenarios(
    args: argparse.Namespace, url: str, dsn: str, world: World, secrets_file: Path, log: Path
) -> tuple[dict[tuple[str, int], Result], list[str]]:
    sessions = make_sessions(world.codes)
    run_id = pysecrets.token_hex(3)
    results: dict[tuple[str, int], Result] = {}
    till_env = {
        "LOYALTY_DATABASE_URL": url,
        "LOYALTY_SECRETS_FILE": str(secrets_file),
        "LOYALTY_RATE_LIMIT": str(RATE_LIMIT),
    }
    if "bare" in args.scenarios:
        # The first server after the seed pays for its aftermath (PostgreSQL's CPU per post was
        # 2.4-2.7 ms in the first run against 1.6-1.8 ms in the second, whichever came first): one
        # unmeasured pass of posts takes that, so ``post`` and ``bare`` meet on equal terms.
        server = Server(args.till_app, args.workers[0], till_env, log)
        try:
            await server.ready("/health")
            await drive(
                server, "post", sessions["post"], args.workers[0], world.keys, args.concurrency,
                args.duration, run_id + "w",
            )  # fmt: skip
        finally:
            server.stop()
        print("  (one unmeasured pass of posts after the seed)", flush=True)
    for workers in args.workers:
        plan = [
            (
                "benchmarks.baseline_app:create_app",
                {"BENCH_BASELINE_DSN": dsn},
                "/ping",
                [s for s in ("ping", "insert") if s in args.scenarios],
            ),
            # Without the outbox first; the unmeasured pass above took the seed's aftermath.
            (
                args.till_app,
                till_env | {"LOYALTY_OUTBOX": "off"},
                "/health",
                ["bare"] if "bare" in args.scenarios else [],
            ),
            (args.till_app, till_env, "/health", [s for s in ("till", "post") if s in args.scenarios]),
        ]
        for app, env, probe, scenarios in plan:
            if not scenarios:
                continue
            server = Server(app, workers, env, log)
            try:
                await server.ready(probe)
                if args.verbose:
                    print(f"  {app} workers={workers}: pids {server.pids()}", flush=True)
                for scenario in scenarios:
                    r = await drive(
                        server,
                        scenario,
                        sessions[scenario],
                        workers,
                        world.keys,
                        args.concurrency,
                        args.duration,
                        run_id,
                    )
                    results[(scenario, workers)] = r
                    print("\n".join(describe(r)), flush=True)
            finally:
                server.stop()
    lines: list[str] = []
    if "hosts" in args.scenarios:
        hosts, lines = await run_hosts(args, url, world, secrets_file, log)
        results |= {(r.scenario, r.workers): r for r in hosts}
    return results, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measuring window per scenario, s")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="uvicorn worker counts")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="connections (tills), each its own outlet"
    )
    parser.add_argument("--cards", type=int, default=3000, help="activated cards to seed")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(DEFAULT_SCENARIOS))
    parser.add_argument("--till-app", default="api.app:create_app", help="uvicorn factory (to try a patch)")
    parser.add_argument("--verbose", action="store_true", help="print server pids (to attach a profiler)")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION}]")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be 1 to {MAX_CONCURRENCY}")
    if not 1 <= args.cards <= MAX_CARDS:
        parser.error(f"--cards must be 1 to {MAX_CARDS}")
    if any(not 1 <= w <= 8 for w in args.workers):
        parser.error("--workers must be 1 to 8")

    args.pgbouncer = pgbouncer_url() if "hosts" in args.scenarios else None
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        import uvloop

        runner: Callable[..., object] = uvloop.run
    except ImportError:
        runner = asyncio.run

    with tempfile.TemporaryDirectory(prefix="load_till_") as tmp:
        secrets_file = init_secrets(Path(tmp) / "secrets.json")
        log = Path(tmp) / "server.log"
        with fresh_database() as (url, dsn):
            t0 = time.perf_counter()
            world = asyncio.run(seed(url, secrets_file, args.concurrency, args.cards))
            print(
                f"seeded {len(world.codes)} cards, {len(world.keys)} outlets/keys in "
                f"{time.perf_counter() - t0:.1f} s; {args.duration:g} s per scenario after "
                f"{WARMUP_SECONDS:g} s warm-up, {args.concurrency} connections",
                flush=True,
            )
            outcome: tuple[dict[tuple[str, int], Result], list[str]] = runner(  # type: ignore[assignment]
                run_scenarios(args, url, dsn, world, secrets_file, log)
            )
    results, hosts = outcome
    print()
    if set(args.scenarios) - {"hosts"}:
        print("\n".join(table(results, args.workers)))
        print(
            "posts/insert: posts/s over the one-insert baseline's inserts/s (post: posts only; till: scan,"
            " post and one redemption in ten per session); p99/insert p99: post p99 over the baseline's p99."
        )
        print(
            "Targets (issue 11, 2 workers): posts/insert >= 0.5, post p99 <= 3x the baseline's, and 2"
            " workers >= 1.5x the posts/s of 1."
        )
    print("\n".join(hosts))
    return 1 if any(r.unexpected() for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
