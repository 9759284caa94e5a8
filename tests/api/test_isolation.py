"""Tenant isolation, outlet binding, roles and authentication, endpoint by endpoint.

Three tables drive the tests: ``ROLES`` (who may call each endpoint), ``SAMPLES`` (a well-formed call of
each endpoint for a tenant's own data) and ``ISOLATION`` (tenant A's key aimed at tenant B). Each is
checked against the (method, path) pairs of the app's OpenAPI schema, so an endpoint added without
its rows fails ``test_every_endpoint_is_in_the_matrix``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loyalty.cards.secrets import Secrets
from loyalty.cards.tokens import sign_token

from .conftest import PROGRAM, Api, Tenant, scan_url
from .helpers import Seed, assert_problem, idem, open_world, period, purchase, seed, snapshot

ADMIN, MARKETER, CASHIER = "admin", "marketer", "cashier"
ALL_ROLES = (ADMIN, MARKETER, CASHIER)
#: Endpoints called without an API key: ``PUBLIC`` by anyone, ``CUSTOMER`` with the card's token in the path.
PUBLIC, CUSTOMER = "public", "customer"
YAML = {"Content-Type": "application/yaml"}
BACKENDS = ("sqlite", "postgresql")  # as tests/conftest.py parametrizes ``database_url``

Endpoint = tuple[str, str]
#: What a problem body may hold: no resource data.
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "errors"}
#: (method, url, keyword arguments of the TestClient request)
Call = tuple[str, str, dict[str, Any]]

ROLES: dict[Endpoint, frozenset[str] | str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/ready"): PUBLIC,
    ("GET", "/v1/cards/{token}/balance"): CUSTOMER,
    ("GET", "/v1/cards/{token}/history"): CUSTOMER,
    ("GET", "/v1/till/program"): frozenset({CASHIER}),
    ("POST", "/v1/till/lookup"): frozenset({CASHIER}),
    ("POST", "/v1/till/activations"): frozenset({CASHIER}),
    ("POST", "/v1/till/transactions"): frozenset({CASHIER}),
    ("POST", "/v1/till/transactions/{transaction_id}/refunds"): frozenset({CASHIER}),
    ("POST", "/v1/till/redemptions"): frozenset({CASHIER}),
    ("POST", "/v1/till/redemptions/{redemption_id}/cancellations"): frozenset({CASHIER}),
    ("POST", "/v1/program/validate"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/program"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/program/versions"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/program/versions/{version_id}"): frozenset({MARKETER, ADMIN}),
    ("POST", "/v1/program/drafts"): frozenset({MARKETER, ADMIN}),
    ("POST", "/v1/program/versions/{version_id}/simulations"): frozenset({MARKETER, ADMIN}),
    ("POST", "/v1/program/versions/{version_id}/backtests"): frozenset({MARKETER, ADMIN}),
    ("POST", "/v1/program/versions/{version_id}/publications"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/program/rule-points"): frozenset({MARKETER, ADMIN}),
    ("POST", "/v1/admin/partners"): frozenset({ADMIN}),
    ("POST", "/v1/admin/outlets"): frozenset({ADMIN}),
    ("GET", "/v1/admin/outlets"): frozenset({ADMIN}),
    ("POST", "/v1/admin/keys"): frozenset({ADMIN}),
    ("GET", "/v1/admin/keys"): frozenset({ADMIN}),
    ("POST", "/v1/admin/keys/{key_id}/revocation"): frozenset({ADMIN}),
    ("GET", "/v1/admin/members/{member_id}"): frozenset({ADMIN}),
    ("POST", "/v1/admin/members/{member_id}/adjustments"): frozenset({ADMIN}),
    ("GET", "/v1/admin/cards/{number}"): frozenset({ADMIN}),
    ("POST", "/v1/admin/cards/{number}/block"): frozenset({ADMIN}),
    ("POST", "/v1/admin/jobs/{kind}"): frozenset({ADMIN}),
    ("GET", "/v1/admin/reports/liability"): frozenset({ADMIN}),
    ("GET", "/v1/admin/audit"): frozenset({ADMIN}),
    ("GET", "/v1/admin/reports/monthly"): frozenset({ADMIN}),
    ("GET", "/v1/admin/reports/partners"): frozenset({ADMIN}),
    ("POST", "/v1/admin/card-batches"): frozenset({ADMIN}),
    ("GET", "/v1/admin/card-batches"): frozenset({ADMIN}),
    ("GET", "/v1/admin/card-batches/{batch_id}/sheet"): frozenset({ADMIN}),
    ("GET", "/v1/dashboard/tiers"): frozenset({MARKETER, ADMIN}),
    ("POST", "/v1/customers/segment-runs"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/customers/segment-runs"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/customers/segments"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/customers/segment-moves"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/customers/segments/{segment}/members"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/customers/at-risk"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/customers/value"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/campaigns"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/campaigns/{rule}/lift"): frozenset({MARKETER, ADMIN}),
    ("GET", "/v1/admin/members/{member_id}/consent"): frozenset({ADMIN}),
    ("PUT", "/v1/admin/members/{member_id}/consent"): frozenset({ADMIN}),
    ("GET", "/v1/admin/members/{member_id}/export"): frozenset({ADMIN}),
    ("POST", "/v1/admin/members/{member_id}/erasure"): frozenset({ADMIN}),
    ("POST", "/v1/admin/privacy/retention"): frozenset({ADMIN}),
    ("PUT", "/v1/cards/{token}/consent"): CUSTOMER,
    ("POST", "/v1/admin/members/{member_id}/merge"): frozenset({ADMIN}),
    ("POST", "/v1/admin/cards/{number}/replacement"): frozenset({ADMIN}),
    ("POST", "/v1/admin/webhooks"): frozenset({ADMIN}),
    ("GET", "/v1/admin/webhooks"): frozenset({ADMIN}),
    ("GET", "/v1/admin/webhooks/{endpoint_id}"): frozenset({ADMIN}),
    ("POST", "/v1/admin/webhooks/{endpoint_id}/rotation"): frozenset({ADMIN}),
    ("POST", "/v1/admin/webhooks/{endpoint_id}/disable"): frozenset({ADMIN}),
    ("POST", "/v1/admin/webhooks/{endpoint_id}/enable"): frozenset({ADMIN}),
    ("GET", "/v1/admin/webhooks/{endpoint_id}/deliveries"): frozenset({ADMIN}),
    ("GET", "/v1/admin/webhook-deliveries/{delivery_id}"): frozenset({ADMIN}),
    ("POST", "/v1/admin/webhook-deliveries/{delivery_id}/redelivery"): frozenset({ADMIN}),
}

KEYED = sorted(e for e, roles in ROLES.items() if isinstance(roles, frozenset))


def _later() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


def _simulation() -> dict[str, Any]:
    return {
        "basket": {
            "occurred_at": datetime.now(UTC).isoformat(),
            "items": [{"sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 450}],
        }
    }


def _code() -> str:
    return f"c{datetime.now(UTC).strftime('%H%M%S%f')}"


#: A well-formed call of each endpoint on the caller's own data (``s`` is the caller's tenant's seed).
SAMPLES: dict[Endpoint, Callable[[Api, Seed], Call]] = {
    ("GET", "/health"): lambda api, s: ("GET", "/health", {}),
    ("GET", "/ready"): lambda api, s: ("GET", "/ready", {}),
    ("GET", "/v1/till/program"): lambda api, s: ("GET", "/v1/till/program", {}),
    ("GET", "/v1/cards/{token}/balance"): lambda api, s: ("GET", f"/v1/cards/{s.token}/balance", {}),
    ("GET", "/v1/cards/{token}/history"): lambda api, s: ("GET", f"/v1/cards/{s.token}/history", {}),
    ("POST", "/v1/till/lookup"): lambda api, s: ("POST", "/v1/till/lookup", {"json": {"code": s.number}}),
    ("POST", "/v1/till/activations"): lambda api, s: (
        "POST",
        "/v1/till/activations",
        {"json": {"card": s.blank}},
    ),
    ("POST", "/v1/till/transactions"): lambda api, s: (
        "POST",
        "/v1/till/transactions",
        {"json": purchase(s.number)},
    ),
    ("POST", "/v1/till/transactions/{transaction_id}/refunds"): lambda api, s: (
        "POST",
        f"/v1/till/transactions/{s.transaction_id}/refunds",
        {"json": {}},
    ),
    ("POST", "/v1/till/redemptions"): lambda api, s: (
        "POST",
        "/v1/till/redemptions",
        {"json": {"card": s.number, "reward": "COFFEE"}},
    ),
    ("POST", "/v1/till/redemptions/{redemption_id}/cancellations"): lambda api, s: (
        "POST",
        f"/v1/till/redemptions/{s.redemption_id}/cancellations",
        {},
    ),
    ("POST", "/v1/program/validate"): lambda api, s: (
        "POST",
        "/v1/program/validate",
        {"content": PROGRAM, "headers": YAML},
    ),
    ("GET", "/v1/program"): lambda api, s: ("GET", "/v1/program", {}),
    ("GET", "/v1/program/versions"): lambda api, s: ("GET", "/v1/program/versions", {}),
    ("GET", "/v1/program/versions/{version_id}"): lambda api, s: (
        "GET",
        f"/v1/program/versions/{s.draft_id}",
        {},
    ),
    ("POST", "/v1/program/drafts"): lambda api, s: (
        "POST",
        "/v1/program/drafts",
        {"content": PROGRAM, "headers": YAML},
    ),
    ("POST", "/v1/program/versions/{version_id}/simulations"): lambda api, s: (
        "POST",
        f"/v1/program/versions/{s.draft_id}/simulations",
        {"json": _simulation()},
    ),
    ("POST", "/v1/program/versions/{version_id}/backtests"): lambda api, s: (
        "POST",
        f"/v1/program/versions/{s.draft_id}/backtests",
        {"json": period()},
    ),
    ("POST", "/v1/program/versions/{version_id}/publications"): lambda api, s: (
        "POST",
        f"/v1/program/versions/{s.draft_id}/publications",
        {"json": {"valid_from": _later()}},
    ),
    ("GET", "/v1/program/rule-points"): lambda api, s: (
        "GET",
        "/v1/program/rule-points",
        {"params": period()},
    ),
    ("POST", "/v1/admin/partners"): lambda api, s: (
        "POST",
        "/v1/admin/partners",
        {"json": {"code": _code(), "name": "Bakery"}},
    ),
    ("POST", "/v1/admin/outlets"): lambda api, s: (
        "POST",
        "/v1/admin/outlets",
        {"json": {"partner_id": s.partner_id, "code": _code(), "name": "Café 3"}},
    ),
    ("GET", "/v1/admin/outlets"): lambda api, s: ("GET", "/v1/admin/outlets", {}),
    ("POST", "/v1/admin/keys"): lambda api, s: (
        "POST",
        "/v1/admin/keys",
        {"json": {"role": "marketer", "name": "new marketer"}},
    ),
    ("GET", "/v1/admin/keys"): lambda api, s: ("GET", "/v1/admin/keys", {}),
    ("POST", "/v1/admin/keys/{key_id}/revocation"): lambda api, s: (
        "POST",
        f"/v1/admin/keys/{s.key_ids['till 2']}/revocation",
        {},
    ),
    ("GET", "/v1/admin/members/{member_id}"): lambda api, s: ("GET", f"/v1/admin/members/{s.member_id}", {}),
    ("POST", "/v1/admin/members/{member_id}/adjustments"): lambda api, s: (
        "POST",
        f"/v1/admin/members/{s.member_id}/adjustments",
        {"json": {"points": 10, "reason": "goodwill"}},
    ),
    ("GET", "/v1/admin/cards/{number}"): lambda api, s: ("GET", f"/v1/admin/cards/{s.number}", {}),
    ("POST", "/v1/admin/cards/{number}/block"): lambda api, s: (
        "POST",
        f"/v1/admin/cards/{s.blank}/block",
        {},
    ),
    ("POST", "/v1/admin/jobs/{kind}"): lambda api, s: ("POST", "/v1/admin/jobs/all", {}),
    ("GET", "/v1/admin/reports/liability"): lambda api, s: ("GET", "/v1/admin/reports/liability", {}),
    ("GET", "/v1/admin/audit"): lambda api, s: ("GET", "/v1/admin/audit", {}),
    ("GET", "/v1/admin/reports/monthly"): lambda api, s: ("GET", "/v1/admin/reports/monthly", {}),
    ("GET", "/v1/admin/reports/partners"): lambda api, s: (
        "GET",
        "/v1/admin/reports/partners",
        {"params": period()},
    ),
    ("POST", "/v1/admin/card-batches"): lambda api, s: (
        "POST",
        "/v1/admin/card-batches",
        {"json": {"count": 1}},
    ),
    ("GET", "/v1/admin/card-batches"): lambda api, s: ("GET", "/v1/admin/card-batches", {}),
    ("GET", "/v1/admin/card-batches/{batch_id}/sheet"): lambda api, s: (
        "GET",
        f"/v1/admin/card-batches/{_batch_of(api, s)}/sheet",
        {},
    ),
    ("GET", "/v1/dashboard/tiers"): lambda api, s: ("GET", "/v1/dashboard/tiers", {}),
    ("POST", "/v1/customers/segment-runs"): lambda api, s: ("POST", "/v1/customers/segment-runs", {}),
    ("GET", "/v1/customers/segment-runs"): lambda api, s: ("GET", "/v1/customers/segment-runs", {}),
    ("GET", "/v1/customers/segments"): lambda api, s: ("GET", "/v1/customers/segments", {}),
    ("GET", "/v1/customers/segment-moves"): lambda api, s: ("GET", "/v1/customers/segment-moves", {}),
    ("GET", "/v1/customers/segments/{segment}/members"): lambda api, s: (
        "GET",
        "/v1/customers/segments/at_risk/members",
        {},
    ),
    ("GET", "/v1/customers/at-risk"): lambda api, s: ("GET", "/v1/customers/at-risk", {}),
    ("GET", "/v1/customers/value"): lambda api, s: ("GET", "/v1/customers/value", {}),
    ("GET", "/v1/campaigns"): lambda api, s: ("GET", "/v1/campaigns", {}),
    ("GET", "/v1/campaigns/{rule}/lift"): lambda api, s: ("GET", "/v1/campaigns/welcome-back/lift", {}),
    ("GET", "/v1/admin/members/{member_id}/consent"): lambda api, s: (
        "GET",
        f"/v1/admin/members/{s.member_id}/consent",
        {},
    ),
    ("PUT", "/v1/admin/members/{member_id}/consent"): lambda api, s: (
        "PUT",
        f"/v1/admin/members/{s.member_id}/consent",
        {"json": {"marketing": True, "source": "admin"}},
    ),
    ("GET", "/v1/admin/members/{member_id}/export"): lambda api, s: (
        "GET",
        f"/v1/admin/members/{s.member_id}/export",
        {},
    ),
    # The seed is fresh for each endpoint's own-role test: erasing or merging its member is harmless.
    ("POST", "/v1/admin/members/{member_id}/erasure"): lambda api, s: (
        "POST",
        f"/v1/admin/members/{s.member_id}/erasure",
        {},
    ),
    ("POST", "/v1/admin/privacy/retention"): lambda api, s: ("POST", "/v1/admin/privacy/retention", {}),
    ("PUT", "/v1/cards/{token}/consent"): lambda api, s: (
        "PUT",
        f"/v1/cards/{s.token}/consent",
        {"json": {"marketing": True}},
    ),
    ("POST", "/v1/admin/members/{member_id}/merge"): lambda api, s: (
        "POST",
        f"/v1/admin/members/{s.member_id}/merge",
        {"json": {"into": api.a.member_id}},
    ),
    ("POST", "/v1/admin/cards/{number}/replacement"): lambda api, s: (
        "POST",
        f"/v1/admin/cards/{s.number}/replacement",
        {"json": {}},
    ),
    ("POST", "/v1/admin/webhooks"): lambda api, s: (
        "POST",
        "/v1/admin/webhooks",
        {"json": {"url": HOOK_URL, "event_types": ["purchase.posted"]}},
    ),
    ("GET", "/v1/admin/webhooks"): lambda api, s: ("GET", "/v1/admin/webhooks", {}),
    ("GET", "/v1/admin/webhooks/{endpoint_id}"): lambda api, s: (
        "GET",
        f"/v1/admin/webhooks/{_webhook(api, api.a)}",
        {},
    ),
    ("POST", "/v1/admin/webhooks/{endpoint_id}/rotation"): lambda api, s: (
        "POST",
        f"/v1/admin/webhooks/{_webhook(api, api.a)}/rotation",
        {},
    ),
    ("POST", "/v1/admin/webhooks/{endpoint_id}/disable"): lambda api, s: (
        "POST",
        f"/v1/admin/webhooks/{_webhook(api, api.a)}/disable",
        {},
    ),
    ("POST", "/v1/admin/webhooks/{endpoint_id}/enable"): lambda api, s: (
        "POST",
        f"/v1/admin/webhooks/{_webhook(api, api.a)}/enable",
        {},
    ),
    ("GET", "/v1/admin/webhooks/{endpoint_id}/deliveries"): lambda api, s: (
        "GET",
        f"/v1/admin/webhooks/{_webhook(api, api.a)}/deliveries",
        {},
    ),
    ("GET", "/v1/admin/webhook-deliveries/{delivery_id}"): lambda api, s: (
        "GET",
        f"/v1/admin/webhook-deliveries/{_delivery(api, api.a)}",
        {},
    ),
    ("POST", "/v1/admin/webhook-deliveries/{delivery_id}/redelivery"): lambda api, s: (
        "POST",
        f"/v1/admin/webhook-deliveries/{_delivery_to_redeliver(api)}/redelivery",
        {},
    ),
}


def _delivery_to_redeliver(api: Api) -> int:
    """One of A's deliveries that may be sent again: a pending one may not (409), so mark it dead."""
    delivery = _delivery(api, api.a)
    asyncio.run(_dead(api.url, delivery))
    return delivery


async def _dead(url: str, delivery_id: int) -> None:
    from sqlalchemy import update

    from loyalty.storage.db import Database
    from loyalty.storage.models import WebhookDelivery

    db = Database.from_url(url)
    try:
        async with db.write() as s:
            await s.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(state="dead")
            )
    finally:
        await db.dispose()


#: A public address (no DNS needed): the guard refuses private ones, and nothing is sent in these tests.
HOOK_URL = "https://93.184.216.34/hook"


def _webhook(api: Api, t: Tenant) -> int:
    """The id of one of tenant ``t``'s webhook endpoints (created the first time it is asked for)."""
    found = api.client.get("/v1/admin/webhooks", headers=t.headers(ADMIN)).json()
    if found:
        return int(found[-1]["id"])
    r = api.client.post("/v1/admin/webhooks", json={"url": HOOK_URL}, headers=t.headers(ADMIN))
    assert r.status_code == 201, r.text
    return int(r.json()["endpoint"]["id"])


async def _evented(url: str, tenant_id: int, member_id: int) -> None:
    """An event of the member, fanned out to the tenant's endpoints (no balance or card changes)."""
    from loyalty.events.dispatcher import Dispatcher
    from loyalty.storage import outbox
    from loyalty.storage.db import Database

    db = Database.from_url(url)
    try:
        now = datetime.now(UTC) + timedelta(seconds=1)
        async with db.write() as s:
            data = {"marketing": False, "source": "test"}
            await outbox.record(s, tenant_id, member_id, "member.consent_changed", data, at=now)
        async with Dispatcher(db) as d:
            await d.fan_out()
    finally:
        await db.dispose()


def _delivery(api: Api, t: Tenant) -> int:
    """The id of one of tenant ``t``'s webhook deliveries (an endpoint and an event made the first time)."""
    endpoint = _webhook(api, t)
    path = f"/v1/admin/webhooks/{endpoint}/deliveries"
    found = api.client.get(path, headers=t.headers(ADMIN)).json()
    if not found:
        asyncio.run(_evented(api.url, t.id, t.member_id))
        found = api.client.get(path, headers=t.headers(ADMIN)).json()
    return int(found[0]["id"])


def _batch_of(api: Api, s: Seed) -> int:
    """The id of one of tenant A's card batches (samples run as A; every seeded tenant printed cards)."""
    return int(api.client.get("/v1/admin/card-batches", headers=api.a.headers(ADMIN)).json()[-1]["id"])


def send(api: Api, call: Call, headers: dict[str, str] | None = None) -> Any:
    """Make ``call`` with ``headers`` added (till writes get a fresh Idempotency-Key)."""
    method, url, kwargs = call
    kwargs = dict(kwargs)
    merged = {**kwargs.pop("headers", {}), **(headers or {})}
    if method == "POST" and url.startswith("/v1/till/") and url != "/v1/till/lookup":
        merged = {**idem(), **merged}
    return api.client.request(method, url, headers=merged, **kwargs)


# --- the isolation matrix ---

Check = Callable[[Api, Seed, Any], None]


@dataclass(frozen=True)
class Case:
    """Tenant A's key of ``role`` sends ``call(api, b_seed)``; 404 for B's ids, else ``check`` holds."""

    name: str
    endpoint: Endpoint
    role: str | None
    call: Callable[[Isolated], Call]
    #: For endpoints that take no id: what A's answer must (not) show of B. None: expect a 404.
    check: Check | None = None
    prepare: Callable[[Isolated], None] | None = None


def _ids(body: Any) -> set[int]:
    return {row["id"] for row in body}


def _check_till_program(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"program", "currency", "minor_digits"}  # names and units only, no ids


def _check_published(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert r.json()["id"] != b.published_id


def _check_versions(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert not _ids(r.json()) & {b.published_id, b.draft_id}


def _check_draft(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 201, r.text  # B's own version list is compared by the caller


def _check_rule_points(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert all(row["transactions"] == 0 for row in r.json()), r.json()  # A has booked nothing; B has


def _check_outlets(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert not _ids(r.json()) & set(b.outlet_ids)
    assert b.partner_id not in {o["partner_id"] for o in r.json()}


def _check_keys(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert not _ids(r.json()) & set(b.key_ids.values())
    assert {k["tenant_id"] for k in r.json()} == {api.a.id}


def _check_created(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code in (200, 201), r.text


def _check_no_foreign_webhooks(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    theirs = {e["id"] for e in api.client.get("/v1/admin/webhooks", headers=api.b.headers(ADMIN)).json()}
    assert theirs and not theirs & {e["id"] for e in r.json()}


def _check_liability(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert r.json()["available"] == 0 and r.json()["pending"] == 0, r.json()  # B's seeded member has both


def _check_audit(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant_id"] == api.a.id and body["ok"] is True, body
    assert body["members"] == 1 and body["purchases"] == 0, body  # A's one member; B's purchase is not A's


def _check_monthly(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert all(m["issued"] == 0 and m["redeemed"] == 0 and m["adjusted"] == 0 for m in r.json()), r.json()


def _check_settlement(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert all(p["transactions"] == 0 and p["points_redeemed"] == 0 for p in r.json()), r.json()


def _check_batches(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    mine = api.client.get("/v1/admin/card-batches", headers=api.a.headers(ADMIN)).json()
    theirs = api.client.get("/v1/admin/card-batches", headers=api.b.headers(ADMIN)).json()
    assert _ids(r.json()) == _ids(mine) and not _ids(mine) & _ids(theirs)


def _check_tiers(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert sum(row["members"] for row in r.json()) == 1, r.json()  # only A's one member; B has its own


def _run_b_segments(w: Isolated) -> None:
    """Tenant B's members get figures, a segment and a move: what A's customer views must not show."""
    r = w.api.client.post("/v1/customers/segment-runs", headers=w.api.b.headers(ADMIN))
    assert r.status_code == 201 and r.json()["members"] >= 1, r.text


def _check_own_run(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 201, r.text
    mine = api.client.get("/v1/dashboard/tiers", headers=api.a.headers(ADMIN)).json()
    assert r.json()["members"] == sum(row["members"] for row in mine), r.json()  # A's members only


def _check_empty(api: Api, b: Seed, r: Any) -> None:
    """A never ran segments: none of B's runs, moves, figures or value bands show."""
    assert r.status_code == 200, r.text
    assert r.json() == [], r.json()


def _check_own_sizes(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    mine = api.client.get("/v1/dashboard/tiers", headers=api.a.headers(ADMIN)).json()
    assert sum(row["members"] for row in r.json()) == sum(row["members"] for row in mine), r.json()


def _check_own_campaigns(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert [c["rule"] for c in r.json()] == ["welcome-back"], r.json()


def _check_no_exposures(api: Api, b: Seed, r: Any) -> None:
    assert r.status_code == 200, r.text
    assert (r.json()["treated"], r.json()["control"]) == (0, 0), r.json()


def _b_batch(w: Isolated) -> int:
    batches = w.api.client.get("/v1/admin/card-batches", headers=w.api.b.headers(ADMIN)).json()
    return int(batches[-1]["id"])


def _give_a_points(w: Isolated) -> None:
    r = w.api.client.post(
        f"/v1/admin/members/{w.api.a.member_id}/adjustments",
        json={"points": 1000, "reason": "setup"},
        headers=w.api.a.headers(ADMIN),
    )
    assert r.status_code == 201, r.text


@dataclass(frozen=True)
class Isolated:
    """A world whose tenant B is seeded; A's key is the one that tries."""

    api: Api
    b: Seed
    secrets: Secrets

    def a_ring_token(self) -> str:
        """A token tenant A's key ring signed, naming B's card id (all a leaked A secret could mint)."""
        return sign_token(self.secrets.ring(self.api.a.id), self.b.card_id, now=datetime.now(UTC))


E = {e: e for e in ROLES}  # spelled-out keys below keep the table greppable

ISOLATION: list[Case] = [
    # till: B's printed number, token and scanned URL, B's purchase and redemption ids
    Case(
        "lookup-number",
        E["POST", "/v1/till/lookup"],
        CASHIER,
        lambda w: ("POST", "/v1/till/lookup", {"json": {"code": w.b.number}}),
    ),
    Case(
        "lookup-token",
        E["POST", "/v1/till/lookup"],
        CASHIER,
        lambda w: ("POST", "/v1/till/lookup", {"json": {"code": w.b.token}}),
    ),
    Case(
        "lookup-url",
        E["POST", "/v1/till/lookup"],
        CASHIER,
        lambda w: ("POST", "/v1/till/lookup", {"json": {"code": scan_url(w.b.token)}}),
    ),
    Case(
        "activate-number",
        E["POST", "/v1/till/activations"],
        CASHIER,
        lambda w: ("POST", "/v1/till/activations", {"json": {"card": w.b.blank}}),
    ),
    Case(
        "activate-token",
        E["POST", "/v1/till/activations"],
        CASHIER,
        lambda w: ("POST", "/v1/till/activations", {"json": {"card": w.b.blank_token}}),
    ),
    Case(
        "purchase-number",
        E["POST", "/v1/till/transactions"],
        CASHIER,
        lambda w: ("POST", "/v1/till/transactions", {"json": purchase(w.b.number)}),
    ),
    Case(
        "purchase-token",
        E["POST", "/v1/till/transactions"],
        CASHIER,
        lambda w: ("POST", "/v1/till/transactions", {"json": purchase(w.b.token)}),
    ),
    Case(
        "purchase-blank-number",
        E["POST", "/v1/till/transactions"],
        CASHIER,
        lambda w: ("POST", "/v1/till/transactions", {"json": purchase(w.b.blank)}),
    ),
    Case(
        "refund",
        E["POST", "/v1/till/transactions/{transaction_id}/refunds"],
        CASHIER,
        lambda w: ("POST", f"/v1/till/transactions/{w.b.transaction_id}/refunds", {"json": {}}),
    ),
    Case(
        "refund-lines",
        E["POST", "/v1/till/transactions/{transaction_id}/refunds"],
        CASHIER,
        lambda w: (
            "POST",
            f"/v1/till/transactions/{w.b.transaction_id}/refunds",
            {"json": {"lines": [{"line": 0, "quantity": 1}]}},
        ),
    ),
    Case(
        "redeem-number",
        E["POST", "/v1/till/redemptions"],
        CASHIER,
        lambda w: ("POST", "/v1/till/redemptions", {"json": {"card": w.b.number, "reward": "COFFEE"}}),
    ),
    Case(
        "redeem-token",
        E["POST", "/v1/till/redemptions"],
        CASHIER,
        lambda w: ("POST", "/v1/till/redemptions", {"json": {"card": w.b.token, "reward": "COFFEE"}}),
    ),
    Case(
        "redeem-on-foreign-purchase",
        E["POST", "/v1/till/redemptions"],
        CASHIER,
        lambda w: (
            "POST",
            "/v1/till/redemptions",
            {"json": {"card": w.api.a.card, "reward": "COFFEE", "transaction_id": w.b.transaction_id}},
        ),
        prepare=_give_a_points,
    ),
    Case(
        "cancel-redemption",
        E["POST", "/v1/till/redemptions/{redemption_id}/cancellations"],
        CASHIER,
        lambda w: ("POST", f"/v1/till/redemptions/{w.b.redemption_id}/cancellations", {}),
    ),
    # customer: a token minted with A's ring for B's card id opens nothing
    Case(
        "customer-balance",
        E["GET", "/v1/cards/{token}/balance"],
        None,
        lambda w: ("GET", f"/v1/cards/{w.a_ring_token()}/balance", {}),
    ),
    Case(
        "customer-history",
        E["GET", "/v1/cards/{token}/history"],
        None,
        lambda w: ("GET", f"/v1/cards/{w.a_ring_token()}/history", {}),
    ),
    # marketer: B's published version and draft
    Case(
        "version-published",
        E["GET", "/v1/program/versions/{version_id}"],
        MARKETER,
        lambda w: ("GET", f"/v1/program/versions/{w.b.published_id}", {}),
    ),
    Case(
        "version-draft",
        E["GET", "/v1/program/versions/{version_id}"],
        ADMIN,
        lambda w: ("GET", f"/v1/program/versions/{w.b.draft_id}", {}),
    ),
    Case(
        "simulate",
        E["POST", "/v1/program/versions/{version_id}/simulations"],
        MARKETER,
        lambda w: ("POST", f"/v1/program/versions/{w.b.draft_id}/simulations", {"json": _simulation()}),
    ),
    Case(
        "backtest",
        E["POST", "/v1/program/versions/{version_id}/backtests"],
        MARKETER,
        lambda w: ("POST", f"/v1/program/versions/{w.b.draft_id}/backtests", {"json": period()}),
    ),
    Case(
        "publish",
        E["POST", "/v1/program/versions/{version_id}/publications"],
        MARKETER,
        lambda w: (
            "POST",
            f"/v1/program/versions/{w.b.draft_id}/publications",
            {"json": {"valid_from": _later()}},
        ),
    ),
    # admin: B's member, cards, keys, partner and outlet
    # webhooks: B's endpoints and deliveries are not found, A's list shows none of them
    Case(
        "webhook-create",
        E["POST", "/v1/admin/webhooks"],
        ADMIN,
        lambda w: ("POST", "/v1/admin/webhooks", {"json": {"url": HOOK_URL}}),
        check=_check_created,
    ),
    Case(
        "webhook-list",
        E["GET", "/v1/admin/webhooks"],
        ADMIN,
        lambda w: ("GET", "/v1/admin/webhooks", {}),
        check=_check_no_foreign_webhooks,
        prepare=lambda w: _webhook(w.api, w.api.b) and None,
    ),
    *(
        Case(
            f"webhook-{name}",
            E[method, f"/v1/admin/webhooks/{{endpoint_id}}{suffix}"],
            ADMIN,
            lambda w, method=method, suffix=suffix: (
                method,
                f"/v1/admin/webhooks/{_webhook(w.api, w.api.b)}{suffix}",
                {},
            ),
        )
        for name, method, suffix in (
            ("get", "GET", ""),
            ("rotate", "POST", "/rotation"),
            ("disable", "POST", "/disable"),
            ("enable", "POST", "/enable"),
            ("deliveries", "GET", "/deliveries"),
        )
    ),
    Case(
        "webhook-delivery",
        E["GET", "/v1/admin/webhook-deliveries/{delivery_id}"],
        ADMIN,
        lambda w: ("GET", f"/v1/admin/webhook-deliveries/{_delivery(w.api, w.api.b)}", {}),
    ),
    Case(
        "webhook-redelivery",
        E["POST", "/v1/admin/webhook-deliveries/{delivery_id}/redelivery"],
        ADMIN,
        lambda w: ("POST", f"/v1/admin/webhook-deliveries/{_delivery(w.api, w.api.b)}/redelivery", {}),
    ),
    # members' data and accounts: B's member, card and token are not found
    Case(
        "consent-read",
        E["GET", "/v1/admin/members/{member_id}/consent"],
        ADMIN,
        lambda w: ("GET", f"/v1/admin/members/{w.b.member_id}/consent", {}),
    ),
    Case(
        "consent-set",
        E["PUT", "/v1/admin/members/{member_id}/consent"],
        ADMIN,
        lambda w: (
            "PUT",
            f"/v1/admin/members/{w.b.member_id}/consent",
            {"json": {"marketing": True, "source": "admin"}},
        ),
    ),
    Case(
        "export",
        E["GET", "/v1/admin/members/{member_id}/export"],
        ADMIN,
        lambda w: ("GET", f"/v1/admin/members/{w.b.member_id}/export", {}),
    ),
    Case(
        "erasure",
        E["POST", "/v1/admin/members/{member_id}/erasure"],
        ADMIN,
        lambda w: ("POST", f"/v1/admin/members/{w.b.member_id}/erasure", {}),
    ),
    Case(
        "retention",
        E["POST", "/v1/admin/privacy/retention"],
        ADMIN,
        lambda w: ("POST", "/v1/admin/privacy/retention", {}),
        check=_check_created,
    ),
    Case(
        "customer-consent-foreign-ring",
        E["PUT", "/v1/cards/{token}/consent"],
        None,
        lambda w: ("PUT", f"/v1/cards/{w.a_ring_token()}/consent", {"json": {"marketing": True}}),
    ),
    Case(
        "merge-foreign-source",
        E["POST", "/v1/admin/members/{member_id}/merge"],
        ADMIN,
        lambda w: ("POST", f"/v1/admin/members/{w.b.member_id}/merge", {"json": {"into": w.api.a.member_id}}),
    ),
    Case(
        "merge-into-foreign",
        E["POST", "/v1/admin/members/{member_id}/merge"],
        ADMIN,
        lambda w: ("POST", f"/v1/admin/members/{w.api.a.member_id}/merge", {"json": {"into": w.b.member_id}}),
    ),
    Case(
        "replace-foreign-card",
        E["POST", "/v1/admin/cards/{number}/replacement"],
        ADMIN,
        lambda w: ("POST", f"/v1/admin/cards/{w.b.number}/replacement", {"json": {}}),
    ),
    Case(
        "replace-with-foreign-blank",
        E["POST", "/v1/admin/cards/{number}/replacement"],
        ADMIN,
        lambda w: ("POST", f"/v1/admin/cards/{w.api.a.card}/replacement", {"json": {"new_card": w.b.blank}}),
    ),
    Case(
        "member",
        E["GET", "/v1/admin/members/{member_id}"],
        ADMIN,
        lambda w: ("GET", f"/v1/admin/members/{w.b.member_id}", {}),
    ),
    Case(
        "adjust",
        E["POST", "/v1/admin/members/{member_id}/adjustments"],
        ADMIN,
        lambda w: (
            "POST",
            f"/v1/admin/members/{w.b.member_id}/adjustments",
            {"json": {"points": 500, "reason": "cross-tenant"}},
        ),
    ),
    Case(
        "card",
        E["GET", "/v1/admin/cards/{number}"],
        ADMIN,
        lambda w: ("GET", f"/v1/admin/cards/{w.b.number}", {}),
    ),
    Case(
        "block",
        E["POST", "/v1/admin/cards/{number}/block"],
        ADMIN,
        lambda w: ("POST", f"/v1/admin/cards/{w.b.number}/block", {}),
    ),
    Case(
        "revoke-key",
        E["POST", "/v1/admin/keys/{key_id}/revocation"],
        ADMIN,
        lambda w: ("POST", f"/v1/admin/keys/{w.b.key_ids['till']}/revocation", {}),
    ),
    Case(
        "outlet-of-foreign-partner",
        E["POST", "/v1/admin/outlets"],
        ADMIN,
        lambda w: (
            "POST",
            "/v1/admin/outlets",
            {"json": {"partner_id": w.b.partner_id, "code": "sneaky", "name": "Sneaky"}},
        ),
    ),
    Case(
        "cashier-key-for-foreign-outlet",
        E["POST", "/v1/admin/keys"],
        ADMIN,
        lambda w: (
            "POST",
            "/v1/admin/keys",
            {"json": {"role": "cashier", "name": "sneaky", "outlet_id": w.b.outlet_ids[0]}},
        ),
    ),
    # endpoints without an id: A's answer shows nothing of B, and B is untouched
    Case(
        "till-program",
        E["GET", "/v1/till/program"],
        CASHIER,
        lambda w: ("GET", "/v1/till/program", {}),
        check=_check_till_program,
    ),
    Case(
        "published-program",
        E["GET", "/v1/program"],
        MARKETER,
        lambda w: ("GET", "/v1/program", {}),
        check=_check_published,
    ),
    Case(
        "version-list",
        E["GET", "/v1/program/versions"],
        MARKETER,
        lambda w: ("GET", "/v1/program/versions", {}),
        check=_check_versions,
    ),
    Case(
        "save-draft",
        E["POST", "/v1/program/drafts"],
        MARKETER,
        lambda w: ("POST", "/v1/program/drafts", {"content": PROGRAM, "headers": YAML}),
        check=_check_draft,
    ),
    Case(
        "rule-points",
        E["GET", "/v1/program/rule-points"],
        MARKETER,
        lambda w: ("GET", "/v1/program/rule-points", {"params": period()}),
        check=_check_rule_points,
    ),
    Case(
        "outlet-list",
        E["GET", "/v1/admin/outlets"],
        ADMIN,
        lambda w: ("GET", "/v1/admin/outlets", {}),
        check=_check_outlets,
    ),
    Case(
        "key-list",
        E["GET", "/v1/admin/keys"],
        ADMIN,
        lambda w: ("GET", "/v1/admin/keys", {}),
        check=_check_keys,
    ),
    Case(
        "create-partner",
        E["POST", "/v1/admin/partners"],
        ADMIN,
        lambda w: ("POST", "/v1/admin/partners", {"json": {"code": "cafe-x", "name": "X"}}),
        check=_check_created,
    ),
    Case(
        "create-key",
        E["POST", "/v1/admin/keys"],
        ADMIN,
        lambda w: ("POST", "/v1/admin/keys", {"json": {"role": "admin", "name": "second admin"}}),
        check=_check_created,
    ),
    Case(
        "jobs",
        E["POST", "/v1/admin/jobs/{kind}"],
        ADMIN,
        lambda w: ("POST", "/v1/admin/jobs/all", {}),
        check=_check_created,
    ),
    Case(
        "liability",
        E["GET", "/v1/admin/reports/liability"],
        ADMIN,
        lambda w: ("GET", "/v1/admin/reports/liability", {}),
        check=_check_liability,
    ),
    Case(
        "audit",
        E["GET", "/v1/admin/audit"],
        ADMIN,
        lambda w: ("GET", "/v1/admin/audit", {}),
        check=_check_audit,
    ),
    Case(
        "monthly",
        E["GET", "/v1/admin/reports/monthly"],
        ADMIN,
        lambda w: ("GET", "/v1/admin/reports/monthly", {}),
        check=_check_monthly,
    ),
    Case(
        "settlement",
        E["GET", "/v1/admin/reports/partners"],
        ADMIN,
        lambda w: ("GET", "/v1/admin/reports/partners", {"params": period()}),
        check=_check_settlement,
    ),
    # card batches: B's batch cannot be printed; A's list holds only A's batches
    Case(
        "batch-sheet",
        E["GET", "/v1/admin/card-batches/{batch_id}/sheet"],
        ADMIN,
        lambda w: ("GET", f"/v1/admin/card-batches/{_b_batch(w)}/sheet", {}),
    ),
    Case(
        "batch-outlet",
        E["POST", "/v1/admin/card-batches"],
        ADMIN,
        lambda w: ("POST", "/v1/admin/card-batches", {"json": {"count": 2, "outlet_id": w.b.outlet_ids[0]}}),
    ),
    Case(
        "list-batches",
        E["GET", "/v1/admin/card-batches"],
        ADMIN,
        lambda w: ("GET", "/v1/admin/card-batches", {}),
        check=_check_batches,
    ),
    Case(
        "tier-distribution",
        E["GET", "/v1/dashboard/tiers"],
        MARKETER,
        lambda w: ("GET", "/v1/dashboard/tiers", {}),
        check=_check_tiers,
    ),
    # customer value: B ran segments; A's run counts A's members, A's views show none of B's
    Case(
        "segment-run",
        E["POST", "/v1/customers/segment-runs"],
        MARKETER,
        lambda w: ("POST", "/v1/customers/segment-runs", {}),
        check=_check_own_run,
        prepare=_run_b_segments,
    ),
    *(
        Case(
            f"customers-{path.rsplit('/', 1)[-1]}",
            E["GET", path],
            MARKETER,
            lambda w, path=path: ("GET", path, {}),
            check=_check_empty,
            prepare=_run_b_segments,
        )
        for path in (
            "/v1/customers/segment-runs",
            "/v1/customers/segment-moves",
            "/v1/customers/at-risk",
            "/v1/customers/value",
        )
    ),
    Case(
        "segment-members",
        E["GET", "/v1/customers/segments/{segment}/members"],
        MARKETER,
        lambda w: ("GET", "/v1/customers/segments/at_risk/members", {}),
        check=_check_empty,
        prepare=_run_b_segments,
    ),
    Case(
        "segment-sizes",
        E["GET", "/v1/customers/segments"],
        MARKETER,
        lambda w: ("GET", "/v1/customers/segments", {}),
        check=_check_own_sizes,
        prepare=_run_b_segments,
    ),
    Case(
        "campaigns",
        E["GET", "/v1/campaigns"],
        MARKETER,
        lambda w: ("GET", "/v1/campaigns", {}),
        check=_check_own_campaigns,
    ),
    Case(
        "campaign-lift",
        E["GET", "/v1/campaigns/{rule}/lift"],
        MARKETER,
        lambda w: ("GET", "/v1/campaigns/welcome-back/lift", {}),
        check=_check_no_exposures,
    ),
]

#: Endpoints that hold no tenant data at all, and why.
NO_TENANT_DATA: dict[Endpoint, str] = {
    ("GET", "/health"): "liveness probe; answers the same for everyone",
    ("GET", "/ready"): "readiness probe: the database answers and its schema is current; same for everyone",
    ("POST", "/v1/program/validate"): "checks the posted document only; reads and writes nothing stored",
}


# --- fixtures ---


@pytest.fixture
def isolated(api: Api, secrets: Secrets) -> Isolated:
    """A fresh world whose tenant B holds a purchase, a redemption, a draft and cards of its own."""
    return Isolated(api, seed(api, secrets, "b"), secrets)


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, secrets: Secrets) -> Iterator[tuple[Api, Seed, str]]:
    """One world for the read-only role and key tests of this module: A seeded, and a revoked A key."""
    url = str(request.getfixturevalue(f"{request.param}_url"))
    with open_world(url, secrets) as api:
        s = seed(api, secrets, "a")
        r = api.client.post(
            "/v1/admin/keys", json={"role": "admin", "name": "to revoke"}, headers=api.a.headers(ADMIN)
        )
        assert r.status_code == 201, r.text
        revoked = r.json()
        r = api.client.post(
            f"/v1/admin/keys/{revoked['info']['id']}/revocation", headers=api.a.headers(ADMIN)
        )
        assert r.status_code == 200, r.text
        yield api, s, revoked["secret"]


# --- the tests ---


def _schema_endpoints(api: Api) -> set[Endpoint]:
    r = api.client.get("/schema/openapi.json")
    assert r.status_code == 200, r.text
    methods = {"get", "post", "put", "patch", "delete"}
    return {(m.upper(), path) for path, item in r.json()["paths"].items() for m in item if m in methods}


def test_every_endpoint_is_in_the_matrix(world: tuple[Api, Seed, str]) -> None:
    """Every documented (method, path) has a role row, a sample call and isolation cases (or a reason)."""
    api, _, _ = world
    documented = _schema_endpoints(api)
    assert documented == set(ROLES), (
        f"missing rows: {documented - set(ROLES)}; stale: {set(ROLES) - documented}"
    )
    assert documented == set(SAMPLES)
    covered = {case.endpoint for case in ISOLATION}
    assert not covered & set(NO_TENANT_DATA)
    assert documented == covered | set(NO_TENANT_DATA), (
        f"no isolation case: {documented - covered - set(NO_TENANT_DATA)}"
    )


def test_every_route_of_the_app_is_documented(world: tuple[Api, Seed, str]) -> None:
    """The OpenAPI schema lists every JSON API route the app serves (every /v1 route, and the probes)."""
    api, _, _ = world
    served = {
        (method, re.sub(r":\w+}", "}", route.path))
        for route in api.client.app.routes
        if route.path.startswith("/v1/") or route.path in ("/health", "/ready")
        for method in getattr(route, "methods", ())
        if method not in {"HEAD", "OPTIONS"}
    }
    assert served == _schema_endpoints(api)


@pytest.mark.parametrize("case", ISOLATION, ids=lambda c: c.name)
def test_a_key_of_tenant_a_never_reaches_tenant_b(isolated: Isolated, case: Case) -> None:
    """Tenant A's key aimed at tenant B's ids gets a 404 problem and no data, and neither tenant changes."""
    api, b = isolated.api, isolated.b
    if case.prepare is not None:
        case.prepare(isolated)
    before_b, before_a = snapshot(api, api.b, b), snapshot(api, api.a)
    r = send(api, case.call(isolated), api.a.headers(case.role) if case.role else {})
    if case.check is None:
        body = assert_problem(r, 404)
        assert set(body) <= PROBLEM_FIELDS, f"a 404 carries data: {body}"
        assert snapshot(api, api.a) == before_a
    else:
        case.check(api, b, r)
    assert snapshot(api, api.b, b) == before_b
    # B's till still works with B's card: no revocation or block landed
    r = api.client.post("/v1/till/lookup", json={"code": b.number}, headers=api.b.headers(CASHIER))
    assert r.status_code == 200, r.text
    assert r.json()["card"]["state"] == "active"


def test_a_cashier_cannot_refund_a_purchase_made_at_another_outlet(isolated: Isolated) -> None:
    """A cashier key of another outlet of the same tenant gets 404 refunding a purchase; nothing moves."""
    api = isolated.api
    a = seed(api, isolated.secrets, "a")
    before = snapshot(api, api.a, a)
    other = {"Authorization": f"Bearer {api.a.other_cashier}"}
    for body in ({}, {"lines": [{"line": 0, "quantity": 1}]}):
        r = api.client.post(
            f"/v1/till/transactions/{a.transaction_id}/refunds", json=body, headers={**other, **idem()}
        )
        assert_problem(r, 404)
    assert snapshot(api, api.a, a) == before


def test_a_cashier_cannot_cancel_a_redemption_made_at_another_outlet(isolated: Isolated) -> None:
    """A cashier key bound to another outlet gets 404 cancelling a redemption, and the points stay spent."""
    api = isolated.api
    a = seed(api, isolated.secrets, "a")
    before = snapshot(api, api.a, a)
    r = api.client.post(
        f"/v1/till/redemptions/{a.redemption_id}/cancellations",
        headers={"Authorization": f"Bearer {api.a.other_cashier}", **idem()},
    )
    assert_problem(r, 404)
    assert snapshot(api, api.a, a) == before


def test_the_outlet_that_booked_a_purchase_may_refund_it(isolated: Isolated) -> None:
    """The control for the outlet tests: the cashier of the booking outlet refunds and cancels fine."""
    api = isolated.api
    a = seed(api, isolated.secrets, "a")
    r = api.client.post(
        f"/v1/till/transactions/{a.transaction_id}/refunds", json={}, headers=api.a.headers(CASHIER, **idem())
    )
    assert r.status_code == 201, r.text
    r = api.client.post(
        f"/v1/till/redemptions/{a.redemption_id}/cancellations", headers=api.a.headers(CASHIER, **idem())
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("endpoint", sorted(ROLES), ids=lambda e: f"{e[0]} {e[1]}")
def test_each_endpoint_answers_its_own_role(api: Api, secrets: Secrets, endpoint: Endpoint) -> None:
    """Each endpoint's sample call succeeds for every role allowed on it (so the 403s mean something)."""
    s = seed(api, secrets, "a")
    roles = ROLES[endpoint]
    for role in sorted(roles) if isinstance(roles, frozenset) else [None]:
        r = send(api, SAMPLES[endpoint](api, s), api.a.headers(role) if role else {})
        assert 200 <= r.status_code < 300, f"{role}: {r.status_code} {r.text[:500]}"
        if endpoint[1].endswith("/publications") or endpoint[1].endswith("/revocation"):
            break  # the sample can be done only once


FORBIDDEN = [(e, role) for e in KEYED for role in ALL_ROLES if role not in ROLES[e]]


@pytest.mark.parametrize(
    ("endpoint", "role"), FORBIDDEN, ids=lambda v: v if isinstance(v, str) else f"{v[0]} {v[1]}"
)
def test_a_role_may_not_call_another_roles_endpoint(
    world: tuple[Api, Seed, str], endpoint: Endpoint, role: str
) -> None:
    """A key whose role is not allowed on an endpoint gets a 403 problem, and nothing is written."""
    api, s, _ = world
    before = snapshot(api, api.a, s)
    r = send(api, SAMPLES[endpoint](api, s), api.a.headers(role))
    assert_problem(r, 403)
    assert snapshot(api, api.a, s) == before


def test_customer_and_public_endpoints_need_no_key(world: tuple[Api, Seed, str]) -> None:
    """Health and the customer's card pages answer without a key: the card's token is the credential."""
    api, s, _ = world
    for endpoint, kind in ROLES.items():
        if kind in (PUBLIC, CUSTOMER):
            r = send(api, SAMPLES[endpoint](api, s))
            assert r.status_code == 200, f"{endpoint}: {r.status_code} {r.text}"


BAD_AUTH = {
    "none": None,
    "empty-bearer": "Bearer ",
    "basic-scheme": "Basic YWRtaW46YWRtaW4=",
    "no-scheme": "just-a-string",
    "garbage-bearer": "Bearer not-a-key",
    "unknown-key": "Bearer lk_0000000000000000_ffffffffffffffffffffffffffffffff",
    "overlong": "Bearer " + "x" * 5000,
}


@pytest.mark.parametrize("endpoint", KEYED, ids=lambda e: f"{e[0]} {e[1]}")
def test_a_call_without_a_valid_key_gets_401(world: tuple[Api, Seed, str], endpoint: Endpoint) -> None:
    """No key, a malformed key, an unknown key or a revoked key gets a 401 problem with WWW-Authenticate."""
    api, s, revoked = world
    before = snapshot(api, api.a, s)
    variants = {**BAD_AUTH, "revoked": f"Bearer {revoked}"}
    for name, value in variants.items():
        r = send(api, SAMPLES[endpoint](api, s), {} if value is None else {"Authorization": value})
        assert_problem(r, 401)
        assert r.headers.get("www-authenticate", "").startswith("Bearer"), (name, r.headers)
    assert snapshot(api, api.a, s) == before


def test_key_and_outlet_lists_show_only_the_own_tenant(world: tuple[Api, Seed, str]) -> None:
    """Each tenant's key lists only its own tenant's keys and outlets (no shared rows)."""
    api, _, _ = world
    for t, other in ((api.a, api.b), (api.b, api.a)):
        keys = api.client.get("/v1/admin/keys", headers=t.headers(ADMIN)).json()
        assert {k["tenant_id"] for k in keys} == {t.id}
        outlets = _ids(api.client.get("/v1/admin/outlets", headers=t.headers(ADMIN)).json())
        assert {t.outlet_id, t.other_outlet_id} <= outlets
        assert not outlets & {other.outlet_id, other.other_outlet_id}
