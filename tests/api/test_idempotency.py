"""Idempotency-Key on till writes: replay, mismatch, in-progress, missing."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import text

from api.app import create_app
from loyalty.admin import access
from loyalty.cards.secrets import Secrets
from loyalty.points import redemptions
from loyalty.storage.db import Database

from .conftest import Api
from .test_till import basket, give_points

#: The kaffeehaus program's coffee reward.
COFFEE = 300
#: Where refunds are booked (a module of their own now; part of loyalty.transactions before).
refunds_module = importlib.import_module(
    "loyalty.points.refunds"
    if importlib.util.find_spec("loyalty.points.refunds")
    else "loyalty.points.transactions"
)


def test_a_retry_with_the_same_key_and_body_gets_the_first_answer(api: Api) -> None:
    """Same key, same body: the first response again (status and body), marked as replayed."""
    a = api.a
    body = basket(a.card, "idem-1", ("LATTE", "coffee", 1, 450))
    headers = a.headers(**{"Idempotency-Key": "same"})
    first = api.client.post("/v1/till/transactions", json=body, headers=headers)
    second = api.client.post("/v1/till/transactions", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers


def test_the_same_key_with_a_different_body_is_a_422(api: Api) -> None:
    """Reusing a key for another request is refused and books nothing."""
    a = api.a
    headers = a.headers(**{"Idempotency-Key": "reused"})
    api.client.post(
        "/v1/till/transactions", json=basket(a.card, "idem-2", ("LATTE", "coffee", 1, 450)), headers=headers
    )
    r = api.client.post(
        "/v1/till/transactions", json=basket(a.card, "idem-3", ("LATTE", "coffee", 9, 450)), headers=headers
    )
    assert r.status_code == 422 and r.json()["type"].endswith("idempotency-key-reused")
    lookup = api.client.post("/v1/till/lookup", json={"code": a.card}, headers=a.headers()).json()
    assert lookup["balance"]["pending"] == 4  # only the first basket (4.50 EUR) was booked


def test_a_retry_while_the_first_is_running_is_a_409(api: Api) -> None:
    """While the first request with a key is still running, a retry gets 409 and books nothing."""
    a = api.a
    body = basket(a.card, "idem-4", ("LATTE", "coffee", 1, 450))
    headers = a.headers(**{"Idempotency-Key": "running"})
    # Claim the key as a first request that has not answered yet would.
    fingerprint = access.request_fingerprint(
        "POST",
        "/v1/till/transactions",
        api.client.build_request("POST", "/v1/till/transactions", json=body).content,
    )

    async def claim() -> None:
        # What a request that has not answered yet leaves (a record without an answer).
        db = Database.from_url(api.url)
        try:
            now = datetime.now(UTC)
            async with db.write() as session:
                session.add(
                    access.IdempotencyRecord(
                        tenant_id=a.id,
                        api_key_id=int(a.keys["cashier"].split("_")[1]),
                        key="running",
                        request_hash=fingerprint,
                        status_code=None,
                        response=None,
                        created_at=now,
                        expires_at=now + access.IDEMPOTENCY_TTL,
                    )
                )
        finally:
            await db.dispose()

    asyncio.run(claim())
    r = api.client.post("/v1/till/transactions", json=body, headers=headers)
    assert r.status_code == 409 and r.json()["type"].endswith("request-in-progress")


def test_a_till_write_without_a_key_is_a_400(api: Api) -> None:
    """Till writes need an Idempotency-Key; without one nothing is booked."""
    a = api.a
    r = api.client.post(
        "/v1/till/transactions",
        json=basket(a.card, "idem-5", ("LATTE", "coffee", 1, 450)),
        headers=a.headers(),
    )
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in r.json()["detail"]


def test_a_refusal_before_the_handler_is_not_the_keys_answer(api: Api) -> None:
    """A malformed body or a key of the wrong role is refused before anything runs: that refusal is not
    stored under the Idempotency-Key, so the corrected request with the same key books (it is not
    answered with the refusal, nor with a 422 for a different body)."""
    a = api.a
    good = basket(a.card, "idem-fix", ("LATTE", "coffee", 1, 450))
    malformed = {**good, "items": [{"sku": "LATTE", "quantity": 1}]}
    headers = a.headers(**{"Idempotency-Key": "fix-and-retry"})
    assert api.client.post("/v1/till/transactions", json=malformed, headers=headers).status_code in (400, 422)
    denied = api.client.post(
        "/v1/till/transactions", json=good, headers=a.headers("marketer", **{"Idempotency-Key": "role"})
    )
    assert denied.status_code == 403
    fixed = api.client.post("/v1/till/transactions", json=good, headers=headers)
    assert fixed.status_code == 201, fixed.text
    assert "idempotent-replayed" not in fixed.headers


def test_keys_are_scoped_to_the_api_key(api: Api) -> None:
    """Two tills may use the same Idempotency-Key value without seeing each other's answers."""
    a = api.a
    first = api.client.post(
        "/v1/till/transactions",
        json=basket(a.card, "idem-6", ("LATTE", "coffee", 1, 450)),
        headers=a.headers(**{"Idempotency-Key": "shared"}),
    )
    other = {"Authorization": f"Bearer {a.other_cashier}", "Idempotency-Key": "shared"}
    second = api.client.post(
        "/v1/till/transactions", json=basket(a.card, "idem-7", ("CAKE", "bakery", 1, 350)), headers=other
    )
    assert first.status_code == second.status_code == 201
    assert first.json()["transaction"]["transaction_id"] != second.json()["transaction"]["transaction_id"]


def test_a_domain_error_is_replayed_too(api: Api) -> None:
    """A refused redemption answers the same on retry, even if points arrived in between."""
    a = api.a
    headers = a.headers(**{"Idempotency-Key": "poor"})
    first = api.client.post(
        "/v1/till/redemptions", json={"card": a.card, "reward": "COFFEE"}, headers=headers
    )
    assert first.status_code == 409
    api.client.post(
        f"/v1/admin/members/{a.member_id}/adjustments",
        json={"points": 1000, "reason": "gift"},
        headers=a.headers("admin"),
    )
    again = api.client.post(
        "/v1/till/redemptions", json={"card": a.card, "reward": "COFFEE"}, headers=headers
    )
    assert again.status_code == 409 and again.json() == first.json()


def _count(api: Api, sql: str, **params: Any) -> int:
    async def go() -> int:
        db = Database.from_url(api.url)
        try:
            async with db.read() as s:
                return int((await s.execute(text(sql), params)).scalar() or 0)
        finally:
            await db.dispose()

    return asyncio.run(go())


class _Outage:
    """The database goes away right after a write committed (a crash, a failover), before the till got
    its answer, and comes back later: every database call fails while it lasts."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.calls = {"read": db.read, "write": db.write}

    def start(self) -> None:
        def down(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("the database went away")

        self.db.read = self.db.write = down

    def end(self) -> None:
        self.db.read, self.db.write = self.calls["read"], self.calls["write"]


@contextlib.contextmanager
def _outage_after(module: Any, names: tuple[str, ...], outage: _Outage) -> Iterator[None]:
    """The outage starts as soon as one of ``module``'s ``names`` (the write) has returned."""
    originals = {name: getattr(module, name) for name in names if hasattr(module, name)}

    def wrap(fn: Any) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = await fn(*args, **kwargs)
            outage.start()
            return result

        return wrapped

    for name, fn in originals.items():
        setattr(module, name, wrap(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)
        outage.end()


@pytest.fixture
def till(api: Api, secrets: Secrets) -> Iterator[tuple[TestClient[Any], list[datetime]]]:
    """The app again, with a clock the test moves."""
    clock = [datetime.now(UTC)]
    app = create_app(database_url=api.url, secrets=secrets, clock=lambda: clock[0], key_cache_seconds=0)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, clock


def test_a_redemption_is_never_booked_twice_when_its_answer_is_lost(
    api: Api, till: tuple[TestClient[Any], list[datetime]]
) -> None:
    """The database goes away right after a redemption committed; the till retries after the key's
    lease: the retry is answered with the first redemption, never booked again."""
    client, clock = till
    a = api.a
    give_points(api, a, 1000)
    headers = a.headers(**{"Idempotency-Key": "lost-answer"})
    body = {"card": a.card, "reward": "COFFEE"}
    with _outage_after(redemptions, ("redeem", "redeem_with_member"), _Outage(client.app.state.db)):
        first = client.post("/v1/till/redemptions", json=body, headers=headers)
    clock[0] += access.IDEMPOTENCY_LEASE + timedelta(seconds=1)
    retry = client.post("/v1/till/redemptions", json=body, headers=headers)
    booked = _count(api, "SELECT count(*) FROM redemptions WHERE tenant_id = :t", t=a.id)
    assert booked == 1, f"booked {booked} times (first answer {first.status_code}, retry {retry.status_code})"
    assert retry.status_code == 201, retry.text
    lookup = client.post("/v1/till/lookup", json={"code": a.card}, headers=a.headers()).json()
    assert lookup["balance"]["available"] == 1000 - COFFEE


def test_a_partial_refund_is_never_booked_twice_when_its_answer_is_lost(
    api: Api, till: tuple[TestClient[Any], list[datetime]]
) -> None:
    """The database goes away right after a partial refund committed; the retry refunds nothing more."""
    client, clock = till
    a = api.a
    posted = client.post(
        "/v1/till/transactions",
        json=basket(a.card, "refund-me", ("LATTE", "coffee", 3, 450)),
        headers=a.headers(**{"Idempotency-Key": "p"}),
    ).json()
    tx = posted["transaction"]["transaction_id"]
    headers = a.headers(**{"Idempotency-Key": "one-latte-back"})
    body = {"lines": [{"line": 0, "quantity": 1}]}
    with _outage_after(refunds_module, ("refund", "refund_with_member"), _Outage(client.app.state.db)):
        client.post(f"/v1/till/transactions/{tx}/refunds", json=body, headers=headers)
    clock[0] += access.IDEMPOTENCY_LEASE + timedelta(seconds=1)
    retry = client.post(f"/v1/till/transactions/{tx}/refunds", json=body, headers=headers)
    assert _count(api, "SELECT count(*) FROM refunds WHERE tenant_id = :t", t=a.id) == 1
    assert retry.status_code == 201, retry.text


def test_a_redemption_sent_again_after_its_key_expired_books_once(api: Api) -> None:
    """The till's redemption id is unique per outlet in the database: once booked, a later retry (its
    Idempotency-Key long forgotten) gets the first redemption back."""
    a = api.a
    give_points(api, a, 1000)
    body = {"card": a.card, "reward": "COFFEE", "external_id": "till-7-redemption-1"}
    first = api.client.post("/v1/till/redemptions", json=body, headers=a.headers(**{"Idempotency-Key": "k1"}))
    later = api.client.post("/v1/till/redemptions", json=body, headers=a.headers(**{"Idempotency-Key": "k2"}))
    assert first.status_code == later.status_code == 201, later.text
    assert later.json()["redemption"]["redemption_id"] == first.json()["redemption"]["redemption_id"]
    assert later.json()["redemption"]["replayed"] is True
    assert _count(api, "SELECT count(*) FROM redemptions WHERE tenant_id = :t", t=a.id) == 1


def test_a_refund_under_the_longest_idempotency_key_books(api: Api) -> None:
    """A refund without its own id is keyed by the till's Idempotency-Key, whatever its length."""
    a = api.a
    posted = api.client.post(
        "/v1/till/transactions",
        json=basket(a.card, "long-key", ("LATTE", "coffee", 2, 450)),
        headers=a.headers(**{"Idempotency-Key": "post-long-key"}),
    ).json()
    key = "k" * access.MAX_IDEMPOTENCY_KEY
    r = api.client.post(
        f"/v1/till/transactions/{posted['transaction']['transaction_id']}/refunds",
        json={"lines": [{"line": 0, "quantity": 1}]},
        headers=a.headers(**{"Idempotency-Key": key}),
    )
    assert r.status_code == 201, r.text


def test_a_redemption_id_sent_again_for_another_reward_is_a_409(api: Api) -> None:
    """The till's redemption id names one redemption: reused for another reward, it is refused."""
    a = api.a
    give_points(api, a, 1000)
    first = api.client.post(
        "/v1/till/redemptions",
        json={"card": a.card, "reward": "COFFEE", "external_id": "till-1-r1"},
        headers=a.headers(**{"Idempotency-Key": "r1"}),
    )
    other = api.client.post(
        "/v1/till/redemptions",
        json={"card": a.card, "reward": "CAKE", "external_id": "till-1-r1"},
        headers=a.headers(**{"Idempotency-Key": "r2"}),
    )
    assert first.status_code == 201 and other.status_code == 409, other.text
    assert _count(api, "SELECT count(*) FROM redemptions WHERE tenant_id = :t", t=a.id) == 1
