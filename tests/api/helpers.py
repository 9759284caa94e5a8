"""Helpers shared by the isolation, bad-input and schemathesis tests (no fixtures live here).

A *world* is an app with two fresh tenants, like the ``api`` fixture of conftest, but one the test
module may keep for all its read-only tests. ``seed`` gives a tenant data a foreign key could aim at:
card numbers the other tenant does not also have, a purchase, a redemption, a draft.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.testing import TestClient

from api.app import create_app
from loyalty.cards.secrets import Secrets
from loyalty.cards.tokens import sign_token
from loyalty.members import lookup, membership
from loyalty.storage.db import Database

from .conftest import PROGRAM, Api, Tenant, build_tenant

PROBLEM_JSON = "application/problem+json"
#: Cards a seed prints; it uses the last two, so that two seeded tenants (same card prefix, own serials)
#: never share a printed number with each other or with the fixture's first four cards.
SEED_BATCH = {"a": 2, "b": 6}

_keys = itertools.count(1)


def idem(**extra: str) -> dict[str, str]:
    """A fresh Idempotency-Key header (plus ``extra`` headers)."""
    return {"Idempotency-Key": f"test-{uuid.uuid4().hex}-{next(_keys)}", **extra}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status``; returns its body."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith(PROBLEM_JSON), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    for name in ("type", "title", "status", "detail"):
        assert name in body, f"problem body lacks {name!r}: {body}"
    assert body["status"] == status, body
    assert isinstance(body["type"], str) and body["type"], body
    assert isinstance(body["detail"], str), body
    return body


@contextmanager
def open_world(url: str, secrets: Secrets) -> Iterator[Api]:
    """An app on ``url`` with two fresh tenants A and B (what conftest's ``api`` fixture gives)."""
    tag = uuid.uuid4().hex[:8]
    a = asyncio.run(build_tenant(url, secrets, f"wa{tag}"))
    b = asyncio.run(build_tenant(url, secrets, f"wb{tag}", card_prefix="6099"))
    app = create_app(database_url=url, secrets=secrets, key_cache_seconds=0, rate_limit=100_000)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, a, b, url)


def basket(
    occurred_at: datetime | None = None, *, quantity: int = 2, unit_price: int = 450
) -> dict[str, Any]:
    return {
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "items": [{"sku": "LATTE", "category": "coffee", "quantity": quantity, "unit_price": unit_price}],
    }


def purchase(card: str, external_id: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"card": card, "external_id": external_id or f"r-{uuid.uuid4().hex[:12]}", **basket(**kw)}


@dataclass
class Seed:
    """What one tenant holds after ``seed``: everything a foreign key could try to reach."""

    number: str  # an activated card printed for this tenant only
    token: str  # its signed token
    blank: str  # a blank card printed for this tenant only
    blank_token: str
    card_id: int
    member_id: int
    transaction_id: int
    redemption_id: int
    published_id: int
    draft_id: int
    key_ids: dict[str, int]  # key name -> id ("admin", "marketer", "till", "till 2")
    partner_id: int
    outlet_ids: list[int]


async def _print_cards(
    url: str, secrets: Secrets, t: Tenant, count: int
) -> tuple[list[str], dict[str, int], dict[str, str]]:
    db = Database.from_url(url)
    now = datetime.now(UTC)
    try:
        numbers = (
            await membership.issue_cards(db, t.id, count, actor="test", now=now, outlet_id=t.outlet_id)
        )[-2:]
        ids = await lookup.card_ids(db, t.id, numbers)
    finally:
        await db.dispose()
    ring = secrets.ring(t.id)
    return numbers, ids, {n: sign_token(ring, ids[n], now=now) for n in numbers}


def seed(api: Api, secrets: Secrets, which: str) -> Seed:
    """Give tenant ``which`` ("a" or "b") a purchase, a redemption, a draft and two cards of its own,
    through its own keys (cards are printed through the domain: the API has no batch endpoint)."""
    t: Tenant = getattr(api, which)
    c = api.client
    numbers, ids, tokens = asyncio.run(_print_cards(api.url, secrets, t, SEED_BATCH[which]))
    number, blank = numbers
    other: Tenant = api.b if which == "a" else api.a
    assert number not in other.cards and blank not in other.cards

    r = c.post("/v1/till/activations", json={"card": number}, headers=t.headers(**idem()))
    assert r.status_code == 201, r.text
    member_id = r.json()["member"]["id"]
    r = c.post("/v1/till/transactions", json=purchase(number, unit_price=4500), headers=t.headers(**idem()))
    assert r.status_code == 201, r.text
    transaction_id = r.json()["transaction"]["transaction_id"]
    r = c.post(
        f"/v1/admin/members/{member_id}/adjustments",
        json={"points": 5000, "reason": "seed"},
        headers=t.headers("admin"),
    )
    assert r.status_code == 201, r.text
    r = c.post("/v1/till/redemptions", json={"card": number, "reward": "COFFEE"}, headers=t.headers(**idem()))
    assert r.status_code == 201, r.text
    redemption_id = r.json()["redemption"]["redemption_id"]

    r = c.get("/v1/program/versions", headers=t.headers("marketer"))
    assert r.status_code == 200, r.text
    published_id = next(v["id"] for v in r.json() if v["status"] == "published")
    r = c.post(
        "/v1/program/drafts",
        content=PROGRAM,
        headers=t.headers("marketer", **{"Content-Type": "application/yaml"}),
    )
    assert r.status_code == 201, r.text
    draft_id = r.json()["id"]

    r = c.get("/v1/admin/keys", headers=t.headers("admin"))
    assert r.status_code == 200, r.text
    key_ids = {k["name"]: k["id"] for k in r.json()}
    r = c.get("/v1/admin/outlets", headers=t.headers("admin"))
    assert r.status_code == 200, r.text
    outlets = r.json()
    return Seed(
        number,
        tokens[number],
        blank,
        tokens[blank],
        ids[number],
        member_id,
        transaction_id,
        redemption_id,
        published_id,
        draft_id,
        key_ids,
        outlets[0]["partner_id"],
        [o["id"] for o in outlets],
    )


def snapshot(api: Api, t: Tenant, s: Seed | None = None) -> dict[str, Any]:
    """Everything of tenant ``t`` a stray write could change, read through its own keys."""
    c = api.client
    reads = {
        "member": f"/v1/admin/members/{t.member_id}",
        "card": f"/v1/admin/cards/{t.card}",
        "keys": "/v1/admin/keys",
        "outlets": "/v1/admin/outlets",
        "liability": "/v1/admin/reports/liability",
    }
    if s is not None:
        reads |= {
            "seeded_member": f"/v1/admin/members/{s.member_id}",
            "seeded_card": f"/v1/admin/cards/{s.number}",
            "blank_card": f"/v1/admin/cards/{s.blank}",
        }
    out: dict[str, Any] = {}
    for name, path in reads.items():
        r = c.get(path, headers=t.headers("admin"))
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
        out[name] = r.json()
    r = c.get("/v1/program/versions", headers=t.headers("marketer"))
    assert r.status_code == 200, r.text
    out["versions"] = [(v["id"], v["status"], v["valid_from"]) for v in r.json()]
    if s is not None:
        r = c.get(f"/v1/cards/{s.token}/history", params={"limit": 100})
        assert r.status_code == 200, r.text
        out["history"] = r.json()
    return out


def period() -> dict[str, str]:
    """A period around now, as the backtest and report endpoints take it."""
    now = datetime.now(UTC)
    return {"since": (now - timedelta(days=30)).isoformat(), "until": (now + timedelta(days=1)).isoformat()}
