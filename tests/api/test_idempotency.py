"""Idempotency-Key on till writes: replay, mismatch, in-progress, missing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from loyalty import access
from loyalty.db import Database

from .conftest import Api
from .test_till import basket


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
        db = Database.from_url(api.url)
        try:
            key_id = int(a.keys["cashier"].split("_")[1])
            assert (
                await access.claim(
                    db,
                    tenant_id=a.id,
                    api_key_id=key_id,
                    key="running",
                    fingerprint=fingerprint,
                    now=datetime.now(UTC),
                )
                is None
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
