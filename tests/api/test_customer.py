"""The customer's card: the signed token in the QR is the only credential."""

from __future__ import annotations

from .conftest import Api
from .test_till import basket, idem


def test_the_card_token_shows_the_members_balance(api: Api) -> None:
    """The token opens the balance: pending points, expiring months, tier progress and rewards."""
    a = api.a
    api.client.post(
        "/v1/till/transactions",
        json=basket(a.card, "c-1", ("LATTE", "coffee", 3, 500)),
        headers=a.headers(**idem()),
    )
    r = api.client.get(f"/v1/cards/{a.token}/balance")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["member_id"] == a.member_id and body["pending"] == 15 and body["available"] == 0
    assert body["tier"]["tier"] == "bronze" and body["tier"]["next_tier"] == "silver"


def test_history_pages_from_newest_to_oldest(api: Api) -> None:
    """History comes newest first, page by page, until next_before is null."""
    a = api.a
    for n in range(3):
        api.client.post(
            "/v1/till/transactions",
            json=basket(a.card, f"h-{n}", ("LATTE", "coffee", 1, 100 * (n + 1))),
            headers=a.headers(**idem()),
        )
    seen, before = [], None
    while True:
        params = {"limit": 2, **({"before": before} if before else {})}
        page = api.client.get(f"/v1/cards/{a.token}/history", params=params).json()
        seen += page["rows"]
        before = page["next_before"]
        if before is None:
            break
    assert [row["pending"] for row in seen] == [3, 2, 1]


def test_a_forged_token_gets_a_friendly_404(api: Api) -> None:
    """A token with a flipped character is refused as an unknown card."""
    a = api.a
    forged = a.token[:-2] + ("A" if a.token[-2] != "A" else "B") + a.token[-1]
    r = api.client.get(f"/v1/cards/{forged}/balance")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "type the card number" in r.json()["detail"]


def test_a_blank_cards_token_is_not_a_balance(api: Api) -> None:
    """A card never used at a till has no member yet: 404 with a hint, not an empty balance."""
    r = api.client.get(f"/v1/cards/{api.a.tokens[api.a.cards[3]]}/balance")
    assert r.status_code == 404 and "activated" in r.json()["detail"]
