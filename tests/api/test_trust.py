"""The findings of the security and chaos probe (issue 12), each as a test that failed before its fix.

Each test names the finding it holds to: 1 rate limits by verified key, 2 basket bounds, 3 bounded
memory without authentication, 4 NUL characters, 5 database outage, 6 the occurred_at window,
7 append-only tables, 8 a redemption linked to another outlet's purchase, 9 a repeated
Idempotency-Key header, 10 private files, redacted logs and no-store answers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets as secrets_module
import stat
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from loyalty.cards.secrets import Secrets, init_secrets, load_secrets
from loyalty.cards.tokens import sign_token
from loyalty.storage.db import Database

from .conftest import PROGRAM, Api, build_tenant
from .helpers import Seed, assert_problem, idem, open_world, purchase, seed, snapshot

World = tuple[Api, Seed]


@pytest.fixture(scope="module", params=("sqlite", "postgresql"))
def world(request: pytest.FixtureRequest, secrets: Secrets) -> Iterator[World]:
    url = str(request.getfixturevalue(f"{request.param}_url"))
    with open_world(url, secrets) as api:
        yield api, seed(api, secrets, "a")


def _unchanged(world: World) -> Any:
    api, s = world
    before = snapshot(api, api.a, s)

    def check() -> None:
        assert snapshot(api, api.a, s) == before, "a refused request changed stored state"

    return check


# --- 1: rate limits count per verified key, else per client address ---------------------------------


def test_1_a_forged_token_naming_a_real_key_never_spends_that_keys_budget(
    sqlite_url: str, secrets: Secrets
) -> None:
    """`Bearer lk_<a real key's id>_garbage` counts against the sender's address, not the key: the
    till whose key it names keeps working; fresh fake ids are limited too (and the limited ones cost
    no key lookup)."""
    t = asyncio.run(build_tenant(sqlite_url, secrets, f"rl{secrets_module.token_hex(3)}"))
    # The verification expires at once: whose budget a request spends does not depend on it.
    app = create_app(database_url=sqlite_url, secrets=secrets, rate_limit=5, key_cache_seconds=0.01)
    till_key_id = t.keys["cashier"].split("_")[1]
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/v1/till/lookup", json={"code": t.card}, headers=t.headers()).status_code == 200
        time.sleep(0.05)
        forged = [
            client.post(
                "/v1/till/lookup",
                json={"code": t.card},
                headers={"Authorization": f"Bearer lk_{key_id}_{'x' * 40}"},
            ).status_code
            for key_id in [till_key_id] * 20 + [str(10**12 + i) for i in range(20)]
        ]
        assert set(forged) <= {401, 429} and 429 in forged, forged
        # The verified till has its own budget, untouched by the forgeries.
        real = [
            client.post("/v1/till/lookup", json={"code": t.card}, headers=t.headers()).status_code
            for _ in range(3)
        ]
        assert real == [200] * 3, real


# --- 3: memory stays flat whatever unauthenticated clients send ---------------------------------------

#: Requests of the memory test (`make soak` sends 100,000).
MEMORY_REQUESTS = int(os.environ.get("TRUST_MEMORY_REQUESTS", "2000"))


def test_3_forged_tokens_and_fake_keys_leave_memory_flat(
    sqlite_url: str, secrets: Secrets, tmp_path: Path
) -> None:
    """Customer tokens signed with a foreign key for ever new tenant ids, and API keys with ever new
    ids: after a warm-up that fills every bounded cache, memory does not grow with the requests."""
    other = load_secrets(init_secrets(tmp_path / "foreign-secrets.json"))
    app = create_app(database_url=sqlite_url, secrets=secrets, rate_limit=10**9)
    now = datetime.now(UTC)
    # Past every bounded cache: the key rings (1,024 tenants, every other request) and the routing
    # caches of Litestar, which fill within the first ~4,000 distinct paths.
    warmup = 4400

    def send(client: TestClient[Any], i: int) -> None:
        if i % 2:
            token = sign_token(other.ring(10**6 + i), 1, now=now)
            r = client.get(f"/v1/cards/{token}/balance")
            assert r.status_code == 404, r.text
        else:
            r = client.get("/v1/admin/keys", headers={"Authorization": f"Bearer lk_{10**9 + i}_{'y' * 40}"})
            assert r.status_code == 401, r.text

    tracemalloc.start()  # before the warm-up: what a bounded cache replaces must have been traced
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            for i in range(warmup):
                send(client, i)
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(warmup, warmup + MEMORY_REQUESTS):
                send(client, i)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_request = grown / MEMORY_REQUESTS
    # Before the fix: ~900 B per request (a key ring per claimed tenant, a limiter entry per fake key).
    assert per_request < 50, (
        f"memory grew {grown} B over {MEMORY_REQUESTS} requests ({per_request:.0f} B each)"
    )


# --- 4: NUL characters are refused on both databases ----------------------------------------------


def _nul_requests(api: Api, s: Seed) -> dict[str, Any]:
    a, c = api.a, api.client
    nul = "a\x00b"
    item = {"sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 450}
    return {
        "sku": c.post(
            "/v1/till/transactions",
            json=purchase(s.number) | {"items": [item | {"sku": nul}]},
            headers=a.headers(**idem()),
        ),
        "category": c.post(
            "/v1/till/transactions",
            json=purchase(s.number) | {"items": [item | {"category": nul}]},
            headers=a.headers(**idem()),
        ),
        "external_id": c.post(
            "/v1/till/transactions", json=purchase(s.number, external_id=nul), headers=a.headers(**idem())
        ),
        "reason": c.post(
            f"/v1/admin/members/{s.member_id}/adjustments",
            json={"points": 5, "reason": nul},
            headers=a.headers("admin"),
        ),
        "partner": c.post(
            "/v1/admin/partners", json={"code": "nul", "name": nul}, headers=a.headers("admin")
        ),
        "key": c.post("/v1/admin/keys", json={"role": "marketer", "name": nul}, headers=a.headers("admin")),
        "redemption": c.post(
            "/v1/till/redemptions",
            json={"card": s.number, "reward": "COFFEE", "external_id": nul},
            headers=a.headers(**idem()),
        ),
        "query": c.get(
            "/v1/admin/reports/partners",
            params={"since": "2026-01-01T00:00:00Z\x00", "until": "2026-02-01T00:00:00Z"},
            headers=a.headers("admin"),
        ),
        "path": c.get("/v1/admin/cards/6012%0034", headers=a.headers("admin")),
        "token": c.get("/v1/cards/%00abc/balance"),
        "document": c.post(
            "/v1/program/drafts",
            content=b"program: x\x00\n",
            headers=a.headers("marketer", **{"Content-Type": "application/yaml"}),
        ),
        "document-escaped": c.post(
            "/v1/program/drafts",
            content=PROGRAM.replace("program: Kaffeehaus Bonus", 'program: "Kaffee\\u0000haus"').encode(),
            headers=a.headers("marketer", **{"Content-Type": "application/yaml"}),
        ),
        "tag": c.post(
            "/v1/till/transactions",
            json=purchase(s.number) | {"items": [item | {"tags": ["hot", nul]}]},
            headers=a.headers(**idem()),
        ),
    }


def test_4_a_nul_character_in_any_text_is_a_422_and_stores_nothing(world: World) -> None:
    api, s = world
    check = _unchanged(world)
    misses = {}
    for name, r in _nul_requests(api, s).items():
        if r.status_code not in (404, 422) or not r.headers["content-type"].startswith("application/problem"):
            misses[name] = f"{r.status_code} {r.text[:120]}"
        elif name not in ("token", "path"):
            assert r.status_code == 422, (name, r.text)
    assert not misses, misses
    check()


# --- 8: a cashier links a redemption only to a purchase of their own outlet -------------------------


def test_8_a_redemption_linked_to_another_outlets_purchase_is_a_404(world: World) -> None:
    api, s = world
    check = _unchanged(world)
    r = api.client.post(
        "/v1/till/redemptions",
        json={"card": s.number, "reward": "COFFEE", "transaction_id": s.transaction_id},
        headers={"Authorization": f"Bearer {api.a.other_cashier}", **idem()},
    )
    body = assert_problem(r, 404)
    assert "outlet" in body["detail"]
    check()


# --- 9: an Idempotency-Key sent twice -----------------------------------------------------------------


def test_9_two_idempotency_key_headers_are_a_400(world: World) -> None:
    api, s = world
    check = _unchanged(world)
    headers = [
        ("Authorization", f"Bearer {api.a.keys['cashier']}"),
        ("Idempotency-Key", "first"),
        ("Idempotency-Key", "second"),
    ]
    r = api.client.post("/v1/till/transactions", json=purchase(s.number), headers=headers)
    body = assert_problem(r, 400)
    assert "Idempotency-Key" in body["detail"]
    check()


# --- 10: private files, tokens out of logs, no-store on a member's answers ------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_10_a_new_sqlite_database_and_card_sheets_are_private(tmp_path: Path) -> None:
    from loyalty.storage.private import private_dir, write_private

    old = os.umask(0o022)
    try:
        target = tmp_path / "loyalty.db"
        db = Database.from_url(f"sqlite+aiosqlite:///{target}")
        asyncio.run(db.dispose())
        assert _mode(target) == 0o600
        sheet = write_private(tmp_path / "out" / "cards.pdf", b"%PDF-1.4")
        assert _mode(sheet) == 0o600 and _mode(sheet.parent) == 0o700
        assert _mode(private_dir(tmp_path / "d1" / "d2")) == 0o700
    finally:
        os.umask(old)


def test_10_card_tokens_never_reach_the_access_log() -> None:
    from api.app import RedactTokens, redact_path

    assert redact_path("/v1/cards/AbC-123_x/balance") == "/v1/cards/<token>/balance"
    assert redact_path("/c/AbC-123_x") == "/c/<token>"
    assert redact_path("/v1/till/lookup") == "/v1/till/lookup"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/cards/SECRET-TOKEN/history?limit=5", "1.1", 200),
        None,
    )
    assert RedactTokens().filter(record)
    assert "SECRET-TOKEN" not in record.getMessage() and "<token>" in record.getMessage()
    create_app(database_url="sqlite+aiosqlite:///:memory:")
    assert any(isinstance(f, RedactTokens) for f in logging.getLogger("uvicorn.access").filters)


def test_10_a_members_answers_are_never_cached(world: World) -> None:
    api, s = world
    for path in (f"/v1/cards/{s.token}/balance", f"/v1/cards/{s.token}/history"):
        r = api.client.get(path)
        assert r.status_code == 200 and r.headers.get("cache-control") == "no-store", (path, r.headers)
    r = api.client.post("/v1/till/lookup", json={"code": s.number}, headers=api.a.headers())
    assert r.status_code == 200 and r.headers.get("cache-control") == "no-store", r.headers
    r = api.client.post("/v1/till/transactions", json=purchase(s.number), headers=api.a.headers(**idem()))
    assert r.status_code == 201 and r.headers.get("cache-control") == "no-store", r.headers


# --- 5: the database away: 503 with Retry-After, readiness says so, recovery without a failed request ---


def test_5_while_the_database_is_away_clients_get_503_with_retry_after(secrets: Secrets) -> None:
    app = create_app(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:9/loyalty", secrets=secrets, key_cache_seconds=0
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/health").status_code == 200  # alive: the process answers
        ready = client.get("/ready")
        assert_problem(ready, 503)
        assert int(ready.headers["retry-after"]) > 0
        for r in (
            client.get("/v1/admin/keys", headers={"Authorization": f"Bearer lk_1_{'z' * 40}"}),
            client.post(
                "/v1/till/transactions",
                json=purchase("6012000000000000"),
                headers={"Authorization": f"Bearer lk_1_{'z' * 40}", **idem()},
            ),
        ):
            body = assert_problem(r, 503)
            assert int(r.headers["retry-after"]) > 0 and "retry" in body["detail"], body


def test_5_readiness_checks_the_schema_too(sqlite_url: str, tmp_path: Path, secrets: Secrets) -> None:
    with TestClient(create_app(database_url=sqlite_url, secrets=secrets)) as client:
        assert client.get("/ready").json() == {"status": "ready"}
    empty = f"sqlite+aiosqlite:///{tmp_path / 'unmigrated.db'}"
    with TestClient(create_app(database_url=empty, secrets=secrets), raise_server_exceptions=False) as client:
        body = assert_problem(client.get("/ready"), 503)
        assert "schema" in body["detail"], body


def _terminate_backends(url: str) -> int:
    """What a database restart does to every pooled connection of ``url``'s database."""
    import asyncpg

    from tests.conftest import PG_ADMIN_URL

    name = url.rpartition("/")[2].partition("?")[0]

    async def go() -> int:
        conn = await asyncpg.connect(PG_ADMIN_URL)  # the server itself, not a pooler in front of it
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
            )
        finally:
            await conn.close()

    return asyncio.run(go())


def test_5_after_a_restart_the_first_requests_get_fresh_connections(
    postgresql_url: str, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pooled connection dies (as in a restart); once they have been idle a moment, requests
    succeed at once: none fails on a dead connection."""
    import loyalty.storage.db

    monkeypatch.setattr(loyalty.storage.db, "IDLE_PING_SECONDS", 0.05)
    t = asyncio.run(build_tenant(postgresql_url, secrets, f"rs{secrets_module.token_hex(3)}"))
    app = create_app(database_url=postgresql_url, secrets=secrets, key_cache_seconds=0)
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(3):  # fill the pool with a few connections
            assert (
                client.post("/v1/till/lookup", json={"code": t.card}, headers=t.headers()).status_code == 200
            )
        assert _terminate_backends(postgresql_url) >= 1
        time.sleep(0.2)
        statuses = [
            client.post("/v1/till/lookup", json={"code": t.card}, headers=t.headers()).status_code,
            client.post(
                "/v1/till/transactions", json=purchase(t.card), headers=t.headers(**idem())
            ).status_code,
            client.get("/ready").status_code,
        ]
        assert statuses == [200, 201, 200], statuses


def test_5_a_connection_found_dead_is_never_lent_again(
    postgresql_url: str, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the idle ping (connections busy when the database restarted), the request that finds
    its connection dead is a 503; every later one gets a fresh connection."""
    import loyalty.storage.db

    monkeypatch.setattr(loyalty.storage.db, "IDLE_PING_SECONDS", 10**9)
    t = asyncio.run(build_tenant(postgresql_url, secrets, f"rd{secrets_module.token_hex(3)}"))
    app = create_app(database_url=postgresql_url, secrets=secrets, key_cache_seconds=60)
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(3):
            r = client.post("/v1/till/transactions", json=purchase(t.card), headers=t.headers(**idem()))
            assert r.status_code == 201, r.text
        assert _terminate_backends(postgresql_url) >= 1
        statuses = [
            client.post(
                "/v1/till/transactions", json=purchase(t.card), headers=t.headers(**idem())
            ).status_code
            for _ in range(6)
        ]
    assert set(statuses[:1]) <= {201, 503} and statuses[1:] == [201] * 5, statuses


def test_5_an_activation_cut_off_by_an_outage_can_be_retried_at_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binding a card fails because the database went away; the till's retry with the same key
    binds it (before: a claim nobody could release answered 409 for 60 s)."""
    from loyalty.admin import access
    from loyalty.members import membership

    api, _ = world
    real = membership.resolve_card

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    number = asyncio.run(_blank_card(api))
    headers = api.a.headers(**idem())
    monkeypatch.setattr(membership, "resolve_card", refused)
    monkeypatch.setattr(access, "release", refused, raising=False)
    first = api.client.post("/v1/till/activations", json={"card": number}, headers=headers)
    assert_problem(first, 503)
    monkeypatch.setattr(membership, "resolve_card", real)
    retry = api.client.post("/v1/till/activations", json={"card": number}, headers=headers)
    assert retry.status_code == 201, retry.text
    again = api.client.post("/v1/till/activations", json={"card": number}, headers=headers)
    assert again.status_code == 201 and again.json() == retry.json()


async def _blank_card(api: Api) -> str:
    from loyalty.members import membership

    db = Database.from_url(api.url)
    try:
        (number,) = await membership.issue_cards(
            db, api.a.id, 1, actor="test", now=datetime.now(UTC), outlet_id=api.a.outlet_id
        )
        return number
    finally:
        await db.dispose()


# --- 2: named bounds on a basket and on the points one posting and one member may hold ---------------


def test_2_a_basket_at_its_bounds_books_and_one_beyond_is_a_422(world: World) -> None:
    from rules.engine import MAX_BASKET_TOTAL, MAX_LINE_TOTAL, MAX_QUANTITY

    api, s = world
    a, c = api.a, api.client
    price = MAX_LINE_TOTAL // MAX_QUANTITY
    at_bound = {"sku": "TV", "category": "goods", "quantity": MAX_QUANTITY, "unit_price": price}
    beyond = {
        "line": [at_bound | {"unit_price": price + 1}],
        "basket": [
            at_bound | {"quantity": MAX_QUANTITY // 2},
            at_bound | {"quantity": MAX_QUANTITY // 2 + 1},
        ],
    }
    check = _unchanged(world)
    for name, items in beyond.items():
        r = c.post(
            "/v1/till/transactions", json=purchase(s.number) | {"items": items}, headers=a.headers(**idem())
        )
        body = assert_problem(r, 422)
        assert "total" in body["detail"], (name, body)
        sim = c.post(
            f"/v1/program/versions/{s.draft_id}/simulations",
            json={"basket": {"occurred_at": datetime.now(UTC).isoformat(), "items": items}},
            headers=a.headers("marketer"),
        )
        assert_problem(sim, 422)
    check()
    assert sum(i["quantity"] * i["unit_price"] for i in beyond["basket"]) > MAX_BASKET_TOTAL
    r = c.post(
        "/v1/till/transactions", json=purchase(s.number) | {"items": [at_bound]}, headers=a.headers(**idem())
    )
    assert r.status_code == 201, r.text
    assert r.json()["transaction"]["amount"] == MAX_LINE_TOTAL
    # The whole tenant still reads: member view, reports, the ledger audit.
    for path in (
        f"/v1/admin/members/{s.member_id}",
        "/v1/admin/reports/liability",
        "/v1/admin/audit",
    ):
        got = c.get(path, headers=a.headers("admin"))
        assert got.status_code == 200, (path, got.text)
    assert c.get("/v1/admin/audit", headers=a.headers("admin")).json()["ok"] is True


def test_2_a_posting_beyond_the_points_bound_is_a_422(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import rules.engine

    api, s = world
    monkeypatch.setattr(rules.engine, "MAX_POINTS", 100)
    check = _unchanged(world)
    r = api.client.post(
        "/v1/till/transactions", json=purchase(s.number, unit_price=50_000), headers=api.a.headers(**idem())
    )
    body = assert_problem(r, 422)
    assert "points" in body["detail"], body
    check()


def test_2_no_member_is_taken_beyond_the_balance_bound(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound that keeps every balance (and a tenant's sum of them) inside 64 bits."""
    import loyalty.ledger.book

    api, s = world
    monkeypatch.setattr(loyalty.ledger.book, "MAX_BALANCE", 1)
    check = _unchanged(world)
    r = api.client.post(
        f"/v1/admin/members/{s.member_id}/adjustments",
        json={"points": 5, "reason": "over the bound"},
        headers=api.a.headers("admin"),
    )
    body = assert_problem(r, 422)
    assert "more than" in body["detail"], body
    r = api.client.post("/v1/till/transactions", json=purchase(s.number), headers=api.a.headers(**idem()))
    assert_problem(r, 422)
    check()


# --- 6: occurred_at within a window: minutes ahead at most, and no older than the program allows ----


def test_6_occurred_at_must_lie_within_the_programs_window(database_url: str, secrets: Secrets) -> None:
    """Minutes ahead of the server's clock at most; no older than the program's
    max_receipt_age_days (30 by default); a late receipt's points still wait out the return window."""
    now = datetime.now(UTC)
    t = asyncio.run(
        build_tenant(
            database_url, secrets, f"w{secrets_module.token_hex(3)}", valid_from=now - timedelta(days=90)
        )
    )
    app = create_app(database_url=database_url, secrets=secrets, key_cache_seconds=0)
    with TestClient(app, raise_server_exceptions=False) as c:
        before = c.get(f"/v1/admin/members/{t.member_id}", headers=t.headers("admin")).json()
        too_old = (now - timedelta(days=31), now - timedelta(days=365 * 50))  # the latter before any version
        for when in (now + timedelta(minutes=30), now + timedelta(days=365 * 100), *too_old):
            r = c.post(
                "/v1/till/transactions", json=purchase(t.card, occurred_at=when), headers=t.headers(**idem())
            )
            body = assert_problem(r, 422)
            assert "occurred_at" in body["detail"], body
        assert c.get(f"/v1/admin/members/{t.member_id}", headers=t.headers("admin")).json() == before
        late = c.post(
            "/v1/till/transactions",
            json=purchase(t.card, occurred_at=now - timedelta(days=20)),
            headers=t.headers(**idem()),
        )
        assert late.status_code == 201, late.text
        posted = late.json()
        # The return window (14 days) runs from the posting, not from the receipt's date.
        pending_until = datetime.fromisoformat(posted["transaction"]["pending_until"])
        assert pending_until >= now + timedelta(days=14) - timedelta(minutes=1), pending_until
        assert posted["balance"]["pending"] == posted["transaction"]["points"] > 0, posted
        skewed = c.post(
            "/v1/till/transactions",
            json=purchase(t.card, occurred_at=now + timedelta(minutes=2)),
            headers=t.headers(**idem()),
        )
        assert skewed.status_code == 201, skewed.text
    # A receipt booked near the age limit is retried once it is past it: the first answer, not a 422.
    clock = [now]
    app = create_app(database_url=database_url, secrets=secrets, key_cache_seconds=0, clock=lambda: clock[0])
    with TestClient(app, raise_server_exceptions=False) as c:
        body = purchase(t.card, occurred_at=now - timedelta(days=29, hours=23))
        key = idem()
        first = c.post("/v1/till/transactions", json=body, headers=t.headers(**key))
        assert first.status_code == 201, first.text
        clock[0] += timedelta(hours=2)
        retry = c.post("/v1/till/transactions", json=body, headers=t.headers(**key))
        assert retry.status_code == 201 and retry.json() == first.json(), retry.text
        again = c.post("/v1/till/transactions", json=body, headers=t.headers(**idem()))  # a new key
        assert again.status_code == 201, again.text
        assert again.json()["transaction"]["transaction_id"] == first.json()["transaction"]["transaction_id"]


# --- 7: entries and draws are append-only in the database itself -------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "UPDATE lot_draws SET amount = amount + 1",
        "DELETE FROM lot_draws",
    ],
)
def test_7_the_database_refuses_to_change_entries_and_draws(world: World, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    api, _ = world

    async def go() -> tuple[Any, ...]:
        db = Database.from_url(api.url)
        table = statement.split()[1] if statement.startswith("UPDATE") else statement.split()[2]
        count = f"SELECT count(*), coalesce(sum(amount), 0) FROM {table}"
        try:
            async with db.read() as session:
                before = tuple((await session.execute(text(count))).one())
            assert before[0] > 0, "the seed booked entries and draws"
            with pytest.raises(DBAPIError, match="append-only"):
                async with db.write() as session:
                    await session.execute(text(statement))
            async with db.read() as session:
                after = tuple((await session.execute(text(count))).one())
            assert after == before
            return before
        finally:
            await db.dispose()

    asyncio.run(go())


def test_4_the_importer_refuses_nul_in_any_text() -> None:
    import io

    from loyalty.cards.numbers import make_card_number
    from loyalty.ops import importer

    card = make_card_number("6012", 1)
    header = "outlet,external_id,card,occurred_at,sku,category,quantity,unit_price,tags\n"
    rows = [
        f"o,r1,{card},2026-03-01T10:00:00Z,LAT\x00TE,coffee,1,450,",
        f"o,r2,{card},2026-03-01T10:00:00Z,LATTE,coffee,1,450,hot;c\x00ld",
        f"o\x00,r3,{card},2026-03-01T10:00:00Z,LATTE,coffee,1,450,",
    ]
    parsed = list(importer.read_csv(io.StringIO(header + "\n".join(rows) + "\n")))
    assert [type(p).__name__ for p in parsed] == ["RowError"] * 3, parsed
    assert all("NUL" in p.reason for p in parsed if isinstance(p, importer.RowError))


def test_5_only_an_unreachable_database_is_an_outage() -> None:
    """What becomes a 503: a refused or lost connection, a pool with no free connection; never a bug
    raised while handling one."""
    import sqlalchemy.exc

    from loyalty.storage.db import outage

    assert outage(ConnectionRefusedError(111, "Connect call failed"))
    assert outage(sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 0 reached"))
    assert outage(ValueError("a bug")) is None
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError:
            raise KeyError("a bug while handling it")  # noqa: B904 - implicit chaining is the point
    except KeyError as exc:
        assert outage(exc) is None
