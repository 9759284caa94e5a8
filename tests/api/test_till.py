"""The till: scan, activate, post, refund, redeem, cancel — as a cashier key bound to one outlet."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from .conftest import Api, Tenant, scan_url

_keys = itertools.count()


def idem() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{next(_keys)}"}


def basket(card: str, external_id: str, *lines: tuple[str, str, int, int]) -> dict[str, Any]:
    return {
        "card": card,
        "external_id": external_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "items": [{"sku": s, "category": c, "quantity": q, "unit_price": p} for s, c, q, p in lines],
    }


def post(api: Api, t: Tenant, body: dict[str, Any], key: str | None = None) -> Any:
    headers = t.headers(**({"Idempotency-Key": key} if key else idem()))
    return api.client.post("/v1/till/transactions", json=body, headers=headers)


def give_points(api: Api, t: Tenant, points: int) -> None:
    r = api.client.post(
        f"/v1/admin/members/{t.member_id}/adjustments",
        json={"points": points, "reason": "test"},
        headers=t.headers("admin"),
    )
    assert r.status_code == 201, r.text


def test_lookup_by_typed_number_scanned_url_and_bare_token_finds_the_same_member(api: Api) -> None:
    """A typed number (with spaces), the scanned card URL and the bare token all find the member."""
    a = api.a
    spaced = " ".join(a.card[i : i + 4] for i in range(0, 16, 4))
    for code in (a.card, spaced, scan_url(a.token), a.token):
        r = api.client.post("/v1/till/lookup", json={"code": code}, headers=a.headers())
        assert r.status_code == 200, (code, r.text)
        body = r.json()
        assert body["member"]["id"] == a.member_id
        assert body["balance"]["available"] == 0 and body["balance"]["tier"]["tier"] == "bronze"
        assert {rw["code"] for rw in body["balance"]["rewards"]} >= {"COFFEE"}


def test_lookup_of_a_blank_card_shows_no_member_until_activated(api: Api) -> None:
    """A blank card is found but has no member; activating it binds a new member, once."""
    a = api.a
    blank = a.cards[1]
    r = api.client.post("/v1/till/lookup", json={"code": blank}, headers=a.headers())
    assert r.status_code == 200 and r.json()["card"]["state"] == "blank" and r.json()["member"] is None
    headers = a.headers(**idem())
    first = api.client.post("/v1/till/activations", json={"card": blank}, headers=headers)
    again = api.client.post("/v1/till/activations", json={"card": blank}, headers=headers)
    assert first.status_code == 201 and again.status_code == 201
    assert first.json() == again.json()
    member = first.json()["member"]["id"]
    r = api.client.post("/v1/till/lookup", json={"code": blank}, headers=a.headers())
    assert r.json()["card"]["state"] == "active" and r.json()["member"]["id"] == member


def test_posting_a_basket_returns_points_explanation_and_new_balance(api: Api) -> None:
    """A post answers with the points, the rule-by-rule explanation and the new (pending) balance."""
    a = api.a
    r = post(
        api,
        a,
        basket(
            a.card,
            "r-1",
            ("LATTE", "coffee", 2, 450),
            ("BIO", "organic", 1, 300),
            ("CIGS", "tobacco", 1, 800),
        ),
    )
    assert r.status_code == 201, r.text
    tx = r.json()["transaction"]
    # 9.00 base + 3.00 base x2 organic = 15 (tobacco earns nothing); Tuesday-afternoon may add x3.
    assert tx["points"] == sum(i["points"] for i in tx["evaluation"]["items"])
    assert tx["points"] >= 15
    explained = {e["rule"]: e for e in tx["evaluation"]["explanation"]}
    assert explained["base"]["matched"] and explained["base"]["applications"] == 2
    assert r.json()["balance"]["pending"] == tx["points"]


def test_a_receipt_books_once_even_under_a_new_idempotency_key(api: Api) -> None:
    """The same till receipt id posted twice with different keys books one transaction."""
    a = api.a
    body = basket(a.card, "r-dup", ("LATTE", "coffee", 1, 450))
    first, second = post(api, a, body), post(api, a, body)
    assert first.status_code == second.status_code == 201
    assert first.json()["transaction"]["transaction_id"] == second.json()["transaction"]["transaction_id"]
    assert second.json()["balance"]["pending"] == first.json()["balance"]["pending"]


def test_posting_with_a_blank_card_binds_it_on_first_use(api: Api) -> None:
    """A blank card used for a purchase becomes a member's card."""
    a = api.a
    r = post(api, a, basket(a.cards[2], "r-blank", ("LATTE", "coffee", 1, 450)))
    assert r.status_code == 201, r.text
    assert r.json()["transaction"]["member_id"] != a.member_id


def test_refund_of_some_items_reverses_their_points(api: Api) -> None:
    """Returning one of two lines takes back that line's points and no more."""
    a = api.a
    r = post(api, a, basket(a.card, "r-ref", ("LATTE", "coffee", 2, 500), ("CAKE", "bakery", 1, 400)))
    tx = r.json()["transaction"]
    line_points = {i["index"]: i["points"] for i in tx["evaluation"]["items"]}
    r = api.client.post(
        f"/v1/till/transactions/{tx['transaction_id']}/refunds",
        json={"lines": [{"line": 1, "quantity": 1}]},
        headers=a.headers(**idem()),
    )
    assert r.status_code == 201, r.text
    assert r.json()["refund"]["points"] == line_points[1]
    assert r.json()["balance"]["pending"] == tx["points"] - line_points[1]


def test_refunding_more_than_was_bought_is_refused_and_writes_nothing(api: Api) -> None:
    """A refund of more units than the line had is a 4xx problem and the balance stays."""
    a = api.a
    tx = post(api, a, basket(a.card, "r-over", ("LATTE", "coffee", 1, 500))).json()["transaction"]
    r = api.client.post(
        f"/v1/till/transactions/{tx['transaction_id']}/refunds",
        json={"lines": [{"line": 0, "quantity": 2}]},
        headers=a.headers(**idem()),
    )
    assert r.status_code in (409, 422) and r.headers["content-type"] == "application/problem+json"
    balance = api.client.post("/v1/till/lookup", json={"code": a.card}, headers=a.headers()).json()["balance"]
    assert balance["pending"] == tx["points"]


def test_redeem_spends_points_and_cancel_gives_them_back(api: Api) -> None:
    """Redeeming a reward takes its cost; cancelling it the same day restores the same points."""
    a = api.a
    give_points(api, a, 500)
    r = api.client.post(
        "/v1/till/redemptions", json={"card": a.card, "reward": "COFFEE"}, headers=a.headers(**idem())
    )
    assert r.status_code == 201, r.text
    assert r.json()["balance"]["available"] == 200
    redemption = r.json()["redemption"]["redemption_id"]
    r = api.client.post(f"/v1/till/redemptions/{redemption}/cancellations", headers=a.headers(**idem()))
    assert r.status_code == 201, r.text
    assert r.json()["restored"] == 300 and r.json()["available_after"] == 500


def test_redeeming_beyond_the_balance_is_a_409_and_spends_nothing(api: Api) -> None:
    """Not enough points: a 409 problem naming the balance and cost; nothing is spent."""
    a = api.a
    give_points(api, a, 100)
    r = api.client.post(
        "/v1/till/redemptions", json={"card": a.card, "reward": "COFFEE"}, headers=a.headers(**idem())
    )
    assert r.status_code == 409
    problem = r.json()
    assert (
        problem["type"].endswith("insufficient-points")
        and problem["available"] == 100
        and problem["cost"] == 300
    )
    balance = api.client.post("/v1/till/lookup", json={"code": a.card}, headers=a.headers()).json()["balance"]
    assert balance["available"] == 100


def test_a_reward_above_the_members_tier_is_refused(api: Api) -> None:
    """The gold lounge pass cannot be redeemed by a bronze member, whatever their points."""
    a = api.a
    give_points(api, a, 5000)
    r = api.client.post(
        "/v1/till/redemptions", json={"card": a.card, "reward": "LOUNGE"}, headers=a.headers(**idem())
    )
    assert r.status_code == 409 and r.json()["type"].endswith("not-allowed")


def test_a_blocked_card_redeems_nothing(api: Api) -> None:
    """A card blocked by an admin (lost, stolen) cannot spend its member's points at a till."""
    a = api.a
    give_points(api, a, 1000)
    blocked = api.client.post(f"/v1/admin/cards/{a.card}/block", headers=a.headers("admin"))
    assert blocked.status_code == 200, blocked.text
    for code in (a.card, scan_url(a.token)):
        r = api.client.post(
            "/v1/till/redemptions", json={"card": code, "reward": "COFFEE"}, headers=a.headers(**idem())
        )
        assert r.status_code == 409 and r.json()["type"].endswith("not-allowed"), r.text
    member = api.client.get(f"/v1/admin/members/{a.member_id}", headers=a.headers("admin")).json()
    assert member["member"]["available"] == 1000


def test_another_outlets_cashier_cannot_refund_this_outlets_purchase(api: Api) -> None:
    """A cashier key acts only for its outlet: another outlet's purchase is not found."""
    a = api.a
    tx = post(api, a, basket(a.card, "r-other", ("LATTE", "coffee", 1, 500))).json()["transaction"]
    r = api.client.post(
        f"/v1/till/transactions/{tx['transaction_id']}/refunds",
        json={},
        headers={"Authorization": f"Bearer {a.other_cashier}", **idem()},
    )
    assert r.status_code == 404


def test_a_basket_posted_with_the_scanned_card_url_books_for_its_member(api: Api) -> None:
    """A till that posts with the scanned QR URL (a signed token) books for the card's member."""
    a = api.a
    r = post(api, a, basket(scan_url(a.token), "r-url", ("LATTE", "coffee", 1, 450)))
    assert r.status_code == 201, r.text
    assert r.json()["transaction"]["member_id"] == a.member_id
    forged = scan_url(a.token[:-1] + ("A" if a.token[-1] != "A" else "B"))
    r = post(api, a, basket(forged, "r-forged", ("LATTE", "coffee", 1, 450)))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_the_till_writes_answer_what_the_schema_documents(api: Api) -> None:
    """Each till write documents its answer's model in the OpenAPI document, and answers it: the
    fields a client may rely on are the ones there, at both levels."""
    a = api.a
    doc = api.client.get("/schema/openapi.json").json()
    models = doc["components"]["schemas"]

    def model(path: str) -> dict[str, Any]:
        responses = doc["paths"][path]["post"]["responses"]
        ref = responses["201"]["content"]["application/json"]["schema"]["$ref"]
        return models[ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]

    def nested(m: dict[str, Any], field: str) -> dict[str, Any]:
        ref = m["properties"][field]["$ref"]
        return models[ref.rsplit("/", 1)[1]]  # type: ignore[no-any-return]

    give_points(api, a, 1000)
    posted = api.client.post(
        "/v1/till/transactions",
        json=basket(a.card, "schema-1", ("LATTE", "coffee", 2, 450)),
        headers=a.headers(**{"Idempotency-Key": "schema-1"}),
    )
    assert posted.status_code == 201, posted.text
    answer = model("/v1/till/transactions")
    assert set(posted.json()) == set(answer["properties"])
    assert set(posted.json()["transaction"]) == set(nested(answer, "transaction")["properties"])
    assert set(posted.json()["balance"]) == set(nested(answer, "balance")["properties"])
    redeemed = api.client.post(
        "/v1/till/redemptions",
        json={"card": a.card, "reward": "COFFEE"},
        headers=a.headers(**{"Idempotency-Key": "schema-2"}),
    )
    assert redeemed.status_code == 201, redeemed.text
    answer = model("/v1/till/redemptions")
    assert set(redeemed.json()) == set(answer["properties"])
    assert set(redeemed.json()["redemption"]) == set(nested(answer, "redemption")["properties"])
