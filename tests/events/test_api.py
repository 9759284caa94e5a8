"""The admin API of webhooks: endpoints, the delivery log, redelivery; tenant isolation; bad input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from loyalty.events.dispatcher import Dispatcher, RetryPolicy
from loyalty.storage import audit_log, outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Event
from tests.api.conftest import Api
from tests.api.helpers import assert_problem

from .conftest import Receiver, fast

WEBHOOKS = "/v1/admin/webhooks"
DELIVERIES = "/v1/admin/webhook-deliveries"


@pytest.fixture
def private_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator allowed private targets (the receivers of these tests live on loopback)."""
    monkeypatch.setenv("LOYALTY_WEBHOOKS_ALLOW_PRIVATE", "1")


def _admin(api: Api, tenant: str = "a") -> dict[str, str]:
    return (api.a if tenant == "a" else api.b).headers("admin")


def _create(api: Api, url: str, **body: Any) -> dict[str, Any]:
    r = api.client.post(WEBHOOKS, json={"url": url, **body}, headers=_admin(api))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _events(api: Api, n: int) -> None:
    async def write() -> None:
        db = Database.from_url(api.url)
        try:
            at = datetime.now(UTC) + timedelta(seconds=1)
            rows = [
                outbox.row(
                    api.a.id,
                    api.a.member_id,
                    "points.adjusted",
                    {"adjustment_id": i, "points": i, "reason": "t"},
                    at=at,
                )
                for i in range(n)
            ]
            async with db.write() as s:
                await s.execute(insert(Event), rows)
        finally:
            await db.dispose()

    asyncio.run(write())


def _dispatch(api: Api, **settings: Any) -> None:
    async def once() -> None:
        db = Database.from_url(api.url)
        try:
            clock = lambda: datetime.now(UTC) + timedelta(seconds=2)  # noqa: E731 - after the events
            async with Dispatcher(db, fast(**settings), clock=clock) as d:
                await d.run(once=True)
        finally:
            await db.dispose()

    asyncio.run(once())


def test_an_admin_manages_endpoints(api: Api, receiver: Receiver, private_ok: None) -> None:
    """Create answers 201 with the secret once; list and get never show it; a rotation gives a new
    secret and says until when the old one signs; disable and enable change the state; every change
    is in the audit log."""
    created = _create(api, receiver.url, event_types=["tier.changed", "tier.changed"], description="CRM")
    secret, endpoint = created["secret"], created["endpoint"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert endpoint["event_types"] == ["tier.changed"] and endpoint["state"] == "active"
    assert endpoint["description"] == "CRM"

    listed = api.client.get(WEBHOOKS, headers=_admin(api))
    assert listed.status_code == 200 and [e["id"] for e in listed.json()] == [endpoint["id"]]
    one = api.client.get(f"{WEBHOOKS}/{endpoint['id']}", headers=_admin(api))
    for answer in (listed, one):
        assert secret not in answer.text and "secret" not in answer.text.replace("previous_secret_until", "")

    rotated = api.client.post(f"{WEBHOOKS}/{endpoint['id']}/rotation", headers=_admin(api))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != secret
    assert rotated.json()["endpoint"]["previous_secret_until"] is not None

    off = api.client.post(f"{WEBHOOKS}/{endpoint['id']}/disable", headers=_admin(api))
    assert off.status_code == 200 and off.json()["state"] == "disabled"
    on = api.client.post(f"{WEBHOOKS}/{endpoint['id']}/enable", headers=_admin(api))
    assert on.status_code == 200 and on.json()["state"] == "active"

    async def audit() -> list[str]:
        db = Database.from_url(api.url)
        try:
            return [e.action for e in await audit_log.entries(db, api.a.id) if e.entity == "webhook_endpoint"]
        finally:
            await db.dispose()

    actions = asyncio.run(audit())
    assert actions == ["webhook.enable", "webhook.disable", "webhook.rotate", "webhook.create"]
    assert api.client.post(f"{WEBHOOKS}/{endpoint['id']}/disable", headers=_admin(api)).status_code == 200
    assert (
        api.client.post(f"{WEBHOOKS}/{endpoint['id']}/disable", headers=_admin(api)).json()["state"]
        == "disabled"
    )


def test_the_delivery_log_pages_filters_and_redelivers(
    api: Api, receiver: Receiver, private_ok: None
) -> None:
    """Dead deliveries show in the log with their attempts; a redelivery sends one again."""
    endpoint = _create(api, receiver.url)["endpoint"]
    receiver.respond = lambda _r: 500
    _events(api, 3)
    _dispatch(api, retry=RetryPolicy(give_up_after=timedelta(0)))  # the first failure is final

    log = api.client.get(f"{WEBHOOKS}/{endpoint['id']}/deliveries?state=dead", headers=_admin(api))
    assert log.status_code == 200, log.text
    dead = log.json()
    assert len(dead) == 3 and [d["id"] for d in dead] == sorted((d["id"] for d in dead), reverse=True)
    assert {(d["state"], d["attempts"], d["last_status"]) for d in dead} == {("dead", 1, 500)}
    assert all(d["last_latency_ms"] is not None and d["webhook_id"].startswith("evt_") for d in dead)
    page = api.client.get(
        f"{WEBHOOKS}/{endpoint['id']}/deliveries?limit=2&before={dead[0]['id']}", headers=_admin(api)
    ).json()
    assert [d["id"] for d in page] == [d["id"] for d in dead[1:]]
    none = api.client.get(f"{WEBHOOKS}/{endpoint['id']}/deliveries?state=delivered", headers=_admin(api))
    assert none.json() == []

    detail = api.client.get(f"{DELIVERIES}/{dead[-1]['id']}", headers=_admin(api))
    assert detail.status_code == 200
    assert [(a["status"], a["error"]) for a in detail.json()["attempts"]] == [
        (500, "HTTP 500: receiver says no")
    ]

    receiver.respond = lambda _r: 200
    again = api.client.post(f"{DELIVERIES}/{dead[-1]['id']}/redelivery", headers=_admin(api))
    assert again.status_code == 200 and again.json()["state"] == "pending"
    assert_problem(api.client.post(f"{DELIVERIES}/{dead[-1]['id']}/redelivery", headers=_admin(api)), 409)
    _dispatch(api)
    delivered = api.client.get(f"{WEBHOOKS}/{endpoint['id']}/deliveries?state=delivered", headers=_admin(api))
    assert [d["id"] for d in delivered.json()] == [dead[-1]["id"]]
    assert [r.webhook_id for r in receiver.accepted()] == [dead[-1]["webhook_id"]]


def test_another_tenants_endpoint_is_not_found(api: Api, receiver: Receiver, private_ok: None) -> None:
    """Tenant B's admin key gets 404 for everything of tenant A's webhooks, and lists none of them."""
    endpoint = _create(api, receiver.url)["endpoint"]
    receiver.respond = lambda _r: 500
    _events(api, 1)
    _dispatch(api, retry=RetryPolicy(give_up_after=timedelta(0)))
    (delivery,) = api.client.get(f"{WEBHOOKS}/{endpoint['id']}/deliveries", headers=_admin(api)).json()

    b = _admin(api, "b")
    e, d = endpoint["id"], delivery["id"]
    for method, path in (
        ("get", f"{WEBHOOKS}/{e}"),
        ("post", f"{WEBHOOKS}/{e}/rotation"),
        ("post", f"{WEBHOOKS}/{e}/disable"),
        ("post", f"{WEBHOOKS}/{e}/enable"),
        ("get", f"{WEBHOOKS}/{e}/deliveries"),
        ("get", f"{DELIVERIES}/{d}"),
        ("post", f"{DELIVERIES}/{d}/redelivery"),
    ):
        body = assert_problem(getattr(api.client, method)(path, headers=b), 404)
        assert "secret" not in str(body)
    assert api.client.get(WEBHOOKS, headers=b).json() == []
    # And A's endpoint is as it was.
    assert api.client.get(f"{WEBHOOKS}/{e}", headers=_admin(api)).json()["state"] == "active"
    assert api.client.get(f"{DELIVERIES}/{d}", headers=_admin(api)).json()["delivery"]["state"] == "dead"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({}, 422, "url"),
        ({"url": "ftp://hooks.example/"}, 422, "http"),
        ({"url": "https://user:pw@hooks.example/"}, 422, "password"),
        ({"url": "http://127.0.0.1:9/hook"}, 422, "public addresses"),
        ({"url": "http://10.0.0.1/hook"}, 422, "private"),
        ({"url": "http://[::1]/hook"}, 422, "loopback"),
        ({"url": "http://localhost:9/hook"}, 422, "loopback"),
        (
            {"url": "https://93.184.216.34/", "event_types": ["purchase.postd"]},
            422,
            "did you mean purchase.posted",
        ),
        ({"url": "https://93.184.216.34/", "event_types": "tier.changed"}, 422, "event_types"),
        ({"url": "https://93.184.216.34/", "secret": "whsec_mine"}, 422, "secret"),
        ({"url": "https://93.184.216.34/", "description": "x" * 201}, 422, "description"),
        ({"url": 5}, 422, "url"),
    ],
)
def test_bad_bodies_are_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], status: int, fragment: str
) -> None:
    """Bad input is a 4xx problem that says what is wrong, and nothing is created; a tenant cannot
    reach a private target (nor choose its own secret)."""
    monkeypatch.delenv("LOYALTY_WEBHOOKS_ALLOW_PRIVATE", raising=False)
    problem = assert_problem(api.client.post(WEBHOOKS, json=body, headers=_admin(api)), status)
    assert fragment in str(problem), problem
    assert api.client.get(WEBHOOKS, headers=_admin(api)).json() == []


def test_other_bad_requests(api: Api) -> None:
    """Not JSON, a bad filter, a bad id, a key of another role: 4xx problems, never a 500."""
    a = _admin(api)
    assert_problem(
        api.client.post(WEBHOOKS, content=b"url=x", headers={**a, "content-type": "text/plain"}), 415
    )
    assert_problem(
        api.client.post(WEBHOOKS, content=b"{", headers={**a, "content-type": "application/json"}), 400
    )
    assert_problem(api.client.get(f"{WEBHOOKS}/1/deliveries?state=lost", headers=a), 422)
    assert_problem(api.client.get(f"{WEBHOOKS}/1/deliveries?limit=0", headers=a), 422)
    assert_problem(api.client.get(f"{WEBHOOKS}/99999999999999999999999", headers=a), 422)
    assert_problem(api.client.get(f"{WEBHOOKS}/0", headers=a), 422)
    assert_problem(api.client.get(f"{DELIVERIES}/123456789", headers=a), 404)
    for role in ("cashier", "marketer"):
        assert_problem(api.client.get(WEBHOOKS, headers=api.a.headers(role)), 403)
    assert_problem(api.client.get(WEBHOOKS), 401)
