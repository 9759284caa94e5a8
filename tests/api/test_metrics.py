"""``GET /metrics``: what a scrape counts moves by exactly what the till did, routes are labelled by
template (never by a card token), and the pool and webhook backlog gauges read sane figures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from api import metrics
from api.app import create_app
from loyalty.cards.secrets import Secrets
from loyalty.events import endpoints
from loyalty.events.backlog import backlog
from loyalty.events.dispatcher import Dispatcher
from loyalty.events.guard import Guard
from loyalty.storage.db import Database

from .conftest import Api
from .helpers import idem, purchase

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api: Api, **headers: str) -> tuple[str, Samples]:
    r = api.client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return r.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist yet (a counter before its first count)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def give_points(api: Api, points: int) -> None:
    r = api.client.post(
        f"/v1/admin/members/{api.a.member_id}/adjustments",
        json={"points": points, "reason": "test"},
        headers=api.a.headers("admin"),
    )
    assert r.status_code == 201, r.text


def test_a_scrape_counts_exactly_what_the_till_did_by_route_template(api: Api) -> None:
    """One purchase, its retry with the same key, the same receipt under a new key and one redemption:
    the till counters move by one booked posting, one replayed posting and one redemption; the HTTP
    counters and latency histogram are labelled by route template, and no card token or key appears."""
    a = api.a
    _, before = scrape(api)
    receipt = purchase(a.card)
    key = idem()
    first = api.client.post("/v1/till/transactions", json=receipt, headers=a.headers(**key))
    assert first.status_code == 201, first.text
    retry = api.client.post("/v1/till/transactions", json=receipt, headers=a.headers(**key))
    assert retry.status_code == 201 and retry.headers.get("idempotent-replayed") == "true", retry.headers
    again = api.client.post("/v1/till/transactions", json=receipt, headers=a.headers(**idem()))
    assert (
        again.status_code == 201
        and again.json()["transaction"]["transaction_id"] == (first.json()["transaction"]["transaction_id"])
    ), again.text
    give_points(api, 300)
    redeemed = api.client.post(
        "/v1/till/redemptions", json={"card": a.card, "reward": "COFFEE"}, headers=a.headers(**idem())
    )
    assert redeemed.status_code == 201, redeemed.text
    balance = api.client.get(f"/v1/cards/{a.token}/balance")
    assert balance.status_code == 200, balance.text
    assert api.client.get("/no/such/route").status_code == 404
    text, after = scrape(api)

    writes = "loyalty_till_writes_total"
    assert moved(before, after, writes, operation="posting", outcome="booked") == 1
    assert moved(before, after, writes, operation="posting", outcome="replayed") == 1
    assert moved(before, after, writes, operation="redemption", outcome="booked") == 1
    assert moved(before, after, writes, operation="refund", outcome="booked") == 0

    http = {"app_name": "loyalty", "method": "POST", "path": "/v1/till/transactions", "status_code": "201"}
    assert moved(before, after, "loyalty_http_requests_total", **http) == 3
    card_route = {"app_name": "loyalty", "method": "GET", "path": "/v1/cards/{token}/balance"}
    histogram = "loyalty_http_request_duration_seconds"
    assert moved(before, after, f"{histogram}_count", **card_route, status_code="200") == 1
    assert moved(before, after, f"{histogram}_bucket", **card_route, status_code="200", le="+Inf") == 1
    # A path no route matched is not a label: clients cannot grow the label set.
    assert "/no/such/route" not in text
    for secret in (a.token, a.keys["cashier"], a.keys["admin"], *a.keys.values()):
        assert secret not in text
    paths = {dict(labels).get("path") for name, labels in after if name.startswith("loyalty_http_")}
    assert a.token not in " ".join(p for p in paths if p)

    # The pool as the scrape found it: nothing lent out between requests, connections kept open.
    size = value(after, "loyalty_db_pool_size")
    assert size >= 1
    assert value(after, "loyalty_db_pool_checked_out") == 0
    assert value(after, "loyalty_db_pool_connections") >= 1


def test_the_backlog_gauges_follow_the_outbox_and_the_deliveries(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purchase leaves an undispatched event; once fanned out to an endpoint it is a pending
    delivery; the gauges show both with ages, and a count stops at its cap."""
    monkeypatch.setattr(metrics, "BACKLOG_CACHE_SECONDS", 0.0)
    a = api.a

    async def with_db(work: Any) -> Any:
        db = Database.from_url(api.url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    async def add_endpoint(db: Database) -> int:
        made = await endpoints.create_endpoint(
            db,
            a.id,
            "http://127.0.0.1:9/hook",
            actor="test",
            now=datetime.now(UTC),
            guard=Guard(allow_private=True),
        )
        return int(made.endpoint.id)

    async def fan_out(db: Database) -> None:
        async with Dispatcher(db) as d:
            while await d.fan_out():
                pass

    endpoint_id = asyncio.run(with_db(add_endpoint))
    try:
        # What earlier tests left undispatched goes out first (not to this endpoint: it is newer).
        asyncio.run(with_db(fan_out))
        for _ in range(2):
            r = api.client.post("/v1/till/transactions", json=purchase(a.card), headers=a.headers(**idem()))
            assert r.status_code == 201, r.text
        _, samples = scrape(api)

        async def undispatched(db: Database) -> int:
            async with db.read() as s:
                query = text("SELECT count(*) FROM events WHERE tenant_id = :t AND NOT dispatched")
                return int((await s.execute(query, {"t": a.id})).scalar_one())

        # Each purchase's events (a purchase, and any tier change or reward it brought), and no others.
        ours = asyncio.run(with_db(undispatched))
        assert ours >= 2 and value(samples, "loyalty_webhook_events_undispatched") == ours
        assert 0 <= value(samples, "loyalty_webhook_oldest_event_seconds") < 600
        assert value(samples, "loyalty_webhook_backlog_capped", what="events") == 0

        asyncio.run(with_db(fan_out))
        _, samples = scrape(api)
        assert value(samples, "loyalty_webhook_events_undispatched") == 0
        assert value(samples, "loyalty_webhook_oldest_event_seconds") == 0
        # Ours, and whatever earlier tests of the session left pending.
        assert value(samples, "loyalty_webhook_deliveries_pending") >= 2
        assert value(samples, "loyalty_webhook_oldest_delivery_seconds") >= 0

        reading = asyncio.run(with_db(lambda db: backlog(db, now=datetime.now(UTC), cap=1)))
        assert reading.pending_deliveries == 1 and reading.deliveries_capped
        assert reading.undispatched_events == 0 and not reading.events_capped
    finally:
        # Disabled: no dispatcher of a later test tries to deliver these to a closed port.
        asyncio.run(
            with_db(lambda db: endpoints.disable(db, a.id, endpoint_id, actor="test", now=datetime.now(UTC)))
        )


def test_metrics_is_rate_limited_and_takes_a_token_when_one_is_configured(
    sqlite_url: str, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scrapes spend the address's budget like any anonymous request (a scraper asks every few
    seconds; a flood of scrapes is refused before it reaches the database); with
    LOYALTY_METRICS_TOKEN set, only a bearer of it may scrape."""
    from litestar.testing import TestClient

    app = create_app(database_url=sqlite_url, secrets=secrets, rate_limit=2)
    with TestClient(app, raise_server_exceptions=False) as client:
        codes = [client.get("/metrics").status_code for _ in range(8)]
        assert codes[0] == 200 and codes.count(429) >= 3, codes
    app = create_app(database_url=sqlite_url, secrets=secrets)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/metrics").status_code == 200
        monkeypatch.setenv(metrics.TOKEN_ENV, "scrape-secret")
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200
