"""The chaos scenarios of the trust suite, each sized by its caller: `make test` runs them bounded
(tests/scenarios/test_scenarios.py), `make soak` long (``python -m tests.scenarios``), and both
print the same table.

1. ``double_spend`` — two server workers; tills race to redeem one balance and to post one receipt.
2. ``crash_replay`` — the server is SIGKILLed at armed fault points (before the write, before the
   commit, after the commit and before the answer); the till retries every action with its key.
3. ``offline_backlog`` — receipts sent shuffled, three times each, some after their Idempotency-Key
   expired; final balances are compared with the same receipts sent once, in order.
4. ``outage`` — the database goes away under load (every connection killed, or on PostgreSQL a real
   restart in `make soak`); 503s during, recovery after, acknowledged operations equal rows.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from litestar.testing import TestClient

from api.app import create_app
from loyalty.admin import access
from loyalty.cards.secrets import load_secrets

from .harness import COFFEE, Row, Server, World, audit_mismatches, build_world, count


def _basket(card: str, external_id: str, occurred_at: datetime, rng: random.Random) -> dict[str, Any]:
    items = [
        {
            "sku": rng.choice(["LATTE", "BREAD", "WASH", "APPLES"]),
            "category": rng.choice(["coffee", "bakery", "organic", "car"]),
            "quantity": rng.randint(1, 3),
            "unit_price": rng.randint(100, 5000),
        }
        for _ in range(rng.randint(1, 4))
    ]
    return {"card": card, "external_id": external_id, "occurred_at": occurred_at.isoformat(), "items": items}


# --- 1. double spend and double post across two workers --------------------------------------------


def double_spend(url: str, database: str, secrets_file: Path, log: Path, *, members: int, racers: int) -> Row:
    row = Row("double spend / double post, 2 workers", database)
    world: World = asyncio.run(build_world(url, members, points=COFFEE))
    server = Server(url, secrets_file, log, workers=2)
    server.start()
    try:
        receipts = {card: f"race-{uuid.uuid4().hex[:10]}" for card in world.cards}
        now = datetime.now(UTC)
        rng = random.Random(7)
        bodies = {card: _basket(card, receipts[card], now, rng) for card in world.cards}

        def redeem(card: str) -> tuple[str, str, int, Any]:
            with httpx.Client(base_url=server.base, timeout=30) as c:
                r = c.post(
                    "/v1/till/redemptions",
                    json={"card": card, "reward": "COFFEE"},
                    headers=world.till(uuid.uuid4().hex),
                )
                return "redeem", card, r.status_code, r.json()

        def post(card: str) -> tuple[str, str, int, Any]:
            with httpx.Client(base_url=server.base, timeout=30) as c:
                r = c.post("/v1/till/transactions", json=bodies[card], headers=world.till(uuid.uuid4().hex))
                return "post", card, r.status_code, r.json()

        jobs = [(redeem, card) for card in world.cards for _ in range(racers)]
        jobs += [(post, card) for card in world.cards for _ in range(racers)]
        random.Random(1).shuffle(jobs)
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda job: job[0](job[1]), jobs))
        row.operations = len(answers)
        row.faults = len(jobs) - 2 * len(world.cards)  # the racing duplicates: all but one per action
        won: dict[str, int] = {}
        posted: dict[str, set[int]] = {}
        for kind, card, status, body in answers:
            if kind == "redeem" and status == 201:
                won[card] = won.get(card, 0) + 1
            elif kind == "redeem" and status == 409 and body.get("type", "").endswith("insufficient-points"):
                pass
            elif kind == "post" and status == 201:
                posted.setdefault(card, set()).add(body["transaction"]["transaction_id"])
            else:
                row.failures += 1
                row.note(f"{kind} {status} {str(body)[:120]}")
        booked = dict(
            asyncio.run(
                count(
                    url,
                    "SELECT member_id, count(*) FROM redemptions WHERE tenant_id = :t GROUP BY member_id",
                    t=world.tenant_id,
                )
            )
        )
        txs = dict(
            asyncio.run(
                count(
                    url,
                    "SELECT member_id, count(*) FROM transactions WHERE tenant_id = :t GROUP BY member_id",
                    t=world.tenant_id,
                )
            )
        )
        for card in world.cards:
            m = world.member_ids[card]
            row.doubled += (
                max(0, booked.get(m, 0) - 1)
                + max(0, txs.get(m, 0) - 1)
                + max(0, len(posted.get(card, ())) - 1)
            )
            row.lost += (won.get(card, 0) and not booked.get(m, 0)) + (
                bool(posted.get(card)) and not txs.get(m, 0)
            )
            if won.get(card, 0) != 1:
                row.note(f"card {card}: {won.get(card, 0)} redemptions acknowledged")
                row.doubled += max(0, won.get(card, 0) - 1)
        asyncio.run(audit_mismatches(url, world.tenant_id, row))
    finally:
        server.stop()
    return row


# --- 2. crash replay ---------------------------------------------------------------------------------


def crash_replay(
    url: str, database: str, secrets_file: Path, log: Path, *, members: int, kill_probability: float
) -> Row:
    """Every till action of a busy day (purchases, redemptions, cancellations, refunds) while the
    server dies at armed fault points; each action is retried with its key until it is answered."""
    row = Row("crash replay (SIGKILL at fault points)", database)
    world: World = asyncio.run(build_world(url, members, points=2 * COFFEE))
    p = kill_probability
    faults = f"ledger.before_write={p / 2},ledger.before_commit={p},ledger.after_commit={p}"
    server = Server(url, secrets_file, log, env={"LOYALTY_FAULTS": faults, "LOYALTY_FAULTS_SEED": "11"})
    server.start()
    sent: list[tuple[str, str, dict[str, Any] | None, str]] = []  # (method path, key, body, kind)
    answers: dict[str, tuple[int, str]] = {}

    def act(path: str, body: dict[str, Any] | None, kind: str) -> Any:
        key = uuid.uuid4().hex
        sent.append((path, key, body, kind))
        for _ in range(50):
            try:
                r = httpx.post(server.base + path, json=body, headers=world.till(key), timeout=30)
            except httpx.TransportError:
                time.sleep(0.05)
                if server.ensure():
                    row.faults += 1
                continue
            if r.status_code >= 500:
                row.failures += 1
                row.note(f"{kind} {r.status_code} {r.text[:120]}")
            answers[key] = (r.status_code, r.text)
            return r.json()
        row.failures += 1
        row.note(f"{kind}: no answer after 50 attempts")
        return None

    try:
        rng = random.Random(3)
        now = datetime.now(UTC)
        for card in world.cards:
            posted = act(
                "/v1/till/transactions", _basket(card, f"cr-{uuid.uuid4().hex[:10]}", now, rng), "post"
            )
            act("/v1/till/redemptions", {"card": card, "reward": "COFFEE"}, "redeem")
            second = act("/v1/till/redemptions", {"card": card, "reward": "COFFEE"}, "redeem")
            if second and "redemption" in second:
                act(
                    f"/v1/till/redemptions/{second['redemption']['redemption_id']}/cancellations",
                    None,
                    "cancel",
                )
            if posted and "transaction" in posted:
                act(
                    f"/v1/till/transactions/{posted['transaction']['transaction_id']}/refunds",
                    {"lines": [{"line": 0, "quantity": 1}]},
                    "refund",
                )
        row.operations = len(sent)
        # Every action once more with its key: the very first answer, and nothing booked again.
        server.env = {}
        server.stop()
        server.start()
        for path, key, body, kind in sent:
            r = httpx.post(server.base + path, json=body, headers=world.till(key), timeout=30)
            if (r.status_code, r.text) != answers.get(key):
                row.doubled += 1
                row.note(f"{kind} answered {r.status_code} on replay, first {answers.get(key, (None,))[0]}")
        t = world.tenant_id
        kinds = {k for *_, k in sent}
        acked = {
            k: sum(1 for _, key, _, kind in sent if kind == k and answers.get(key, (0,))[0] == 201)
            for k in kinds
        }
        stored = {
            "post": asyncio.run(count(url, "SELECT count(*) FROM transactions WHERE tenant_id = :t", t=t))[0][
                0
            ],
            "redeem": asyncio.run(count(url, "SELECT count(*) FROM redemptions WHERE tenant_id = :t", t=t))[
                0
            ][0],
            "cancel": asyncio.run(
                count(
                    url, "SELECT count(*) FROM redemptions WHERE tenant_id = :t AND status = 'cancelled'", t=t
                )
            )[0][0],
            "refund": asyncio.run(count(url, "SELECT count(*) FROM refunds WHERE tenant_id = :t", t=t))[0][0],
        }
        for kind, n in acked.items():
            row.lost += max(0, n - stored[kind])
            row.doubled += max(0, stored[kind] - n)
            if n != stored[kind]:
                row.note(f"{kind}: {n} acknowledged, {stored[kind]} stored")
        asyncio.run(audit_mismatches(url, t, row))
    finally:
        server.stop()
    return row


# --- 3. offline backlog ------------------------------------------------------------------------------


def offline_backlog(url: str, database: str, secrets_file: Path, *, receipts: int, members: int) -> Row:
    """An offline till catches up: every receipt of the last 20 days three times, shuffled, with the
    clock moving on so that a third of the retries come after their key expired."""
    row = Row("offline backlog (shuffled, 3x, keys expired)", database)
    shuffled: World = asyncio.run(build_world(url, members))
    ordered: World = asyncio.run(build_world(url, members))
    rng = random.Random(5)
    start = datetime.now(UTC)
    backlog = []
    for i in range(receipts):
        card_index = rng.randrange(members)
        when = start - timedelta(days=20) + timedelta(seconds=rng.randrange(20 * 86400))
        backlog.append((card_index, f"off-{i}", when, rng.random()))
    clock = [start]
    app = create_app(
        database_url=url,
        secrets=load_secrets(secrets_file),
        clock=lambda: clock[0],
        key_cache_seconds=60,
        rate_limit=10**9,
    )
    with TestClient(app, raise_server_exceptions=False) as c:

        def send(
            world: World, card_index: int, external_id: str, when: datetime, seed: float, key: str
        ) -> None:
            card = world.cards[card_index]
            body = _basket(card, external_id, when, random.Random(seed))
            r = c.post("/v1/till/transactions", json=body, headers=world.till(key))
            row.operations += 1
            if r.status_code != 201:
                row.failures += 1
                row.note(f"{r.status_code} {r.text[:120]}")

        for receipt in sorted(backlog, key=lambda r: r[2]):
            send(ordered, *receipt, key=f"k-{receipt[1]}")
        copies = [(r, n) for r in backlog for n in range(3)]
        rng.shuffle(copies)
        for i, (receipt, n) in enumerate(copies):
            if i == len(copies) // 3 or i == 2 * len(copies) // 3:
                clock[0] += access.IDEMPOTENCY_TTL + timedelta(minutes=1)  # the keys sent so far expire
            send(shuffled, *receipt, key=f"k-{receipt[1]}-{n % 2}")
        row.faults = 2 * receipts  # duplicates sent
        # Both tenants at the same moment: their books must agree member by member.
        clock[0] += timedelta(days=1)
        for world_a, world_b in [(shuffled, ordered)]:
            for i in range(members):
                a = c.post(
                    "/v1/till/lookup", json={"code": world_a.cards[i]}, headers=world_a.till("-")
                ).json()
                b = c.post(
                    "/v1/till/lookup", json={"code": world_b.cards[i]}, headers=world_b.till("-")
                ).json()
                if _books(a["balance"]) != _books(b["balance"]):
                    row.doubled += 1
                    row.note(f"member {i}: {_books(a['balance'])} vs in order {_books(b['balance'])}")
    for world in (shuffled, ordered):
        stored = asyncio.run(
            count(url, "SELECT count(*) FROM transactions WHERE tenant_id = :t", t=world.tenant_id)
        )[0][0]
        row.doubled += max(0, stored - receipts)
        row.lost += max(0, receipts - stored)
        asyncio.run(audit_mismatches(url, world.tenant_id, row))
    return row


def _books(balance: dict[str, Any]) -> tuple[Any, ...]:
    """What a member holds, without the ids and instants that differ between two tenants."""
    vouchers = sorted(v["reward_code"] for v in balance["vouchers"])
    stamps = sorted((c["card"], c["stamps"]) for c in balance["stamp_cards"])
    return balance["available"], balance["pending"], balance["debt"], balance["expiring"], stamps, vouchers


# --- 4. database outage ------------------------------------------------------------------------------


def _kill_connections(url: str) -> None:
    """What a database restart does to every server connection (PostgreSQL)."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()

    asyncio.run(go())


def restart_postgresql() -> None:
    """A real restart of the local cluster (`make soak` only)."""
    clusters = subprocess.run(
        ["pg_lsclusters", "-h"], capture_output=True, text=True, check=True
    ).stdout.split()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[0], clusters[1], "restart"], check=True
    )


def outage(
    url: str,
    database: str,
    secrets_file: Path,
    log: Path,
    *,
    seconds: float,
    outages: int,
    restart: bool = False,
) -> Row:
    """Tills post and redeem while the database goes away ``outages`` times: every answer is a 2xx,
    a 503 with Retry-After, or a business refusal; after it, the server answers again by itself and
    every acknowledged operation is in the books."""
    row = Row("database outage" + (" (restart)" if restart else " (connections killed)"), database)
    world: World = asyncio.run(build_world(url, 8, points=10 * COFFEE))
    server = Server(url, secrets_file, log, workers=1, env={"LOYALTY_DB_IDLE_PING_SECONDS": "0.2"})
    server.start()
    acked = {"post": 0, "redeem": 0}
    stop = threading.Event()
    lock = threading.Lock()

    def till(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=server.base, timeout=30) as c:
            while not stop.is_set():
                card = rng.choice(world.cards)
                key = uuid.uuid4().hex
                if rng.random() < 0.8:
                    kind, path = "post", "/v1/till/transactions"
                    body: dict[str, Any] = _basket(card, f"o-{key[:12]}", datetime.now(UTC), rng)
                else:
                    kind, path, body = "redeem", "/v1/till/redemptions", {"card": card, "reward": "COFFEE"}
                for _attempt in range(100):
                    try:
                        r = c.post(path, json=body, headers=world.till(key))
                    except httpx.TransportError as exc:
                        with lock:
                            row.failures += 1
                            row.note(f"transport error {exc}")
                        break
                    with lock:
                        row.operations += 1
                    if r.status_code == 503 and r.headers.get("retry-after"):
                        time.sleep(0.2)  # a till waits a moment, then retries with the same key
                        continue
                    with lock:
                        if r.status_code == 201:
                            acked[kind] += 1
                        elif not (r.status_code == 409 and kind == "redeem"):
                            row.failures += 1
                            row.note(f"{kind} {r.status_code} {r.text[:160]}")
                    break

    threads = [threading.Thread(target=till, args=(n,)) for n in range(4)]
    try:
        for th in threads:
            th.start()
        for _ in range(outages):
            time.sleep(seconds / (outages + 1))
            if restart:
                restart_postgresql()
            else:
                _kill_connections(url)
            row.faults += 1
        time.sleep(seconds / (outages + 1))
    finally:
        stop.set()
        for th in threads:
            th.join()
        ready = httpx.get(server.base + "/ready", timeout=10).status_code
        server.stop()
    if ready != 200:
        row.failures += 1
        row.note(f"/ready answered {ready} after the outage")
    t = world.tenant_id
    stored_posts = asyncio.run(count(url, "SELECT count(*) FROM transactions WHERE tenant_id = :t", t=t))[0][
        0
    ]
    stored_redemptions = asyncio.run(
        count(url, "SELECT count(*) FROM redemptions WHERE tenant_id = :t", t=t)
    )[0][0]
    for kind, stored in (("post", stored_posts), ("redeem", stored_redemptions)):
        row.lost += max(0, acked[kind] - stored)
        row.doubled += max(0, stored - acked[kind])
        if acked[kind] != stored:
            row.note(f"{kind}: {acked[kind]} acknowledged, {stored} stored")
    asyncio.run(audit_mismatches(url, t, row))
    return row
