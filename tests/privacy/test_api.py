"""The members' data endpoints: consent (admin and customer), export, erasure, retention; 4xx problems
on bad input, 404 for another tenant's member."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from loyalty.admin import access
from loyalty.cards.secrets import Secrets, init_secrets, load_secrets
from loyalty.cards.tokens import sign_token
from loyalty.members import lookup, membership
from loyalty.points import transactions
from loyalty.storage.db import Database

from .shop import item, make_world

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Side:
    """One tenant as these tests see it: its keys, one member with a card and a purchase."""

    tenant_id: int
    admin: dict[str, str]
    cashier: dict[str, str]
    member_id: int
    card: str
    token: str


async def _side(url: str, secrets: Secrets) -> Side:
    db = Database.from_url(url)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        world = await make_world(db)
        t = world.tenant_id
        admin = (await access.create_key(db, t, role="admin", name="a", actor="t", now=now)).secret
        cashier = (
            await access.create_key(
                db, t, role="cashier", name="c", actor="t", now=now, outlet_id=world.outlet_id
            )
        ).secret
        (number,) = await membership.issue_cards(db, t, 1, actor="t", now=now, outlet_id=world.outlet_id)
        member = (await membership.resolve_card(db, t, number, now=now)).id
        card_id = (await lookup.card_ids(db, t, [number]))[number]
        await transactions.post_transaction(
            db,
            t,
            outlet_id=world.outlet_id,
            external_id="p1",
            occurred_at=now,
            items=(item("SKU-SECRET", 1500, 2, "cat-deli-7", ("gluten-free",)),),
            member_id=member,
            now=now,
        )
        return Side(
            t,
            {"Authorization": f"Bearer {admin}"},
            {"Authorization": f"Bearer {cashier}"},
            member,
            number,
            sign_token(secrets.ring(t), card_id, now=now),
        )
    finally:
        await db.dispose()


@dataclass
class Client:
    http: TestClient[Any]
    a: Side
    b: Side


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return load_secrets(init_secrets(tmp_path_factory.mktemp("secrets") / "secrets.json"))


@pytest.fixture
def client(database_url: str, secrets: Secrets) -> Iterator[Client]:
    a = asyncio.run(_side(database_url, secrets))
    b = asyncio.run(_side(database_url, secrets))
    app = create_app(database_url=database_url, secrets=secrets, key_cache_seconds=0, rate_limit=10_000)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Client(http, a, b)


def problem(response: Any, status: int | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem (with ``status`` when given, else any 4xx)."""
    assert 400 <= response.status_code < 500, f"{response.status_code} {response.text[:300]}"
    if status is not None:
        assert response.status_code == status, f"{response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code and body["detail"]
    return body


def test_an_admin_records_and_reads_consent(client: Client) -> None:
    """PUT records the consent with its source and the key; GET shows it with its history."""
    url = f"/v1/admin/members/{client.a.member_id}/consent"
    put = client.http.put(url, json={"marketing": True, "source": "till"}, headers=client.a.admin)
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["marketing"] is True and [(r["source"], r["marketing"]) for r in body["history"]] == [
        ("till", True)
    ]
    assert body["history"][0]["actor"].startswith("admin-key:")
    got = client.http.get(url, headers=client.a.admin)
    assert got.status_code == 200 and got.json() == body
    assert "no-store" in got.headers["cache-control"]


@pytest.mark.parametrize(
    "body",
    [
        {"marketing": "yes", "source": "till"},
        {"marketing": True},
        {"marketing": True, "source": "Till Shop"},
        {"marketing": True, "source": ""},
        {"marketing": True, "source": "till", "extra": 1},
        [],
    ],
)
def test_bad_consent_input_is_a_problem_and_writes_nothing(client: Client, body: Any) -> None:
    """A consent body with a wrong type, a missing or malformed source, or an unknown field is a 4xx
    problem, and the member's history stays empty."""
    url = f"/v1/admin/members/{client.a.member_id}/consent"
    problem(client.http.put(url, json=body, headers=client.a.admin))
    assert client.http.get(url, headers=client.a.admin).json()["history"] == []


def test_another_tenants_member_is_404_everywhere(client: Client) -> None:
    """A's admin key naming B's member gets 404 from every endpoint, and B's member is untouched."""
    member = client.b.member_id
    h = client.a.admin
    problem(client.http.get(f"/v1/admin/members/{member}/consent", headers=h), 404)
    problem(
        client.http.put(
            f"/v1/admin/members/{member}/consent", json={"marketing": True, "source": "web"}, headers=h
        ),
        404,
    )
    problem(client.http.get(f"/v1/admin/members/{member}/export", headers=h), 404)
    problem(client.http.post(f"/v1/admin/members/{member}/erasure", headers=h), 404)
    problem(client.http.get("/v1/admin/members/99999999999/export", headers=h), 404)
    own = client.http.get(f"/v1/admin/members/{member}/export", headers=client.b.admin)
    assert own.status_code == 200 and own.json()["member"]["state"] == "active"
    assert own.json()["consents"] == []


def test_a_cashier_key_may_not_read_or_erase_members_data(client: Client) -> None:
    """Members' data is for admin keys: a cashier gets 403."""
    problem(client.http.get(f"/v1/admin/members/{client.a.member_id}/export", headers=client.a.cashier), 403)
    problem(
        client.http.post(f"/v1/admin/members/{client.a.member_id}/erasure", headers=client.a.cashier), 403
    )


def test_export_then_erasure_then_a_second_erasure(client: Client) -> None:
    """The export holds the member's card and basket; the erasure answers what it did; afterwards the
    export holds neither, and a second erasure is a 409."""
    h = client.a.admin
    url = f"/v1/admin/members/{client.a.member_id}"
    before = client.http.get(f"{url}/export", headers=h)
    assert before.status_code == 200 and "no-store" in before.headers["cache-control"]
    assert all(s in before.text for s in (client.a.card, "SKU-SECRET", "gluten-free", "cat-deli-7"))
    erased = client.http.post(f"{url}/erasure", headers=h)
    assert erased.status_code == 200, erased.text
    assert (erased.json()["cards"], erased.json()["purchases"]) == (1, 1)
    after = client.http.get(f"{url}/export", headers=h)
    assert after.status_code == 200 and after.json()["member"]["state"] == "erased"
    for secret in (client.a.card, "SKU-SECRET", "gluten-free", "cat-deli-7"):
        assert secret not in after.text, secret
    again = problem(client.http.post(f"{url}/erasure", headers=h), 409)
    assert "already erased" in again["detail"]
    problem(client.http.get(f"/v1/cards/{client.a.token}/balance"))  # the card no longer opens anything


def test_a_customer_sets_their_own_consent_through_their_card(client: Client) -> None:
    """The card's token sets the consent (source web or app, actor customer); a forged token or an
    admin's source is refused."""
    answer = client.http.put(f"/v1/cards/{client.a.token}/consent", json={"marketing": True})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"marketing": True}
    history = client.http.get(
        f"/v1/admin/members/{client.a.member_id}/consent", headers=client.a.admin
    ).json()
    assert [(r["source"], r["actor"], r["marketing"]) for r in history["history"]] == [
        ("web", "customer", True)
    ]
    forged = client.a.token[:-4] + ("AAAA" if not client.a.token.endswith("AAAA") else "BBBB")
    problem(client.http.put(f"/v1/cards/{forged}/consent", json={"marketing": False}))
    problem(
        client.http.put(f"/v1/cards/{client.a.token}/consent", json={"marketing": False, "source": "admin"})
    )
    assert client.http.get(
        f"/v1/admin/members/{client.a.member_id}/consent", headers=client.a.admin
    ).json() == (history)


def test_the_retention_endpoint_says_when_the_program_keeps_detail(client: Client) -> None:
    """Without a retention policy in the program, the run purges nothing and says so."""
    answer = client.http.post("/v1/admin/privacy/retention", headers=client.a.admin)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"months": None, "cutoff": None, "purged": 0, "batches": 0}
