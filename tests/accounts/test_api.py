"""The accounts endpoints: admins merge members and replace cards; other tenants' ids are 404, bad
input is a 4xx problem, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, Tenant
from tests.api.helpers import assert_problem, idem, purchase


def _activate(api: Api, t: Tenant, card: str) -> int:
    """A blank card bound at the till: a new member."""
    r = api.client.post("/v1/till/activations", json={"card": card}, headers=t.headers(**idem()))
    assert r.status_code == 201, r.text
    return int(r.json()["member"]["id"])


def _adjust(api: Api, t: Tenant, member: int, points: int) -> None:
    r = api.client.post(
        f"/v1/admin/members/{member}/adjustments",
        json={"points": points, "reason": "goodwill"},
        headers=t.headers("admin"),
    )
    assert r.status_code == 201, r.text


def _merge(api: Api, t: Tenant, source: int, body: Any, role: str = "admin") -> Any:
    return api.client.post(f"/v1/admin/members/{source}/merge", json=body, headers=t.headers(role))


def test_merge_answers_the_targets_balances(api: Api) -> None:
    """A merge answers 200 with the target's figures holding both accounts' points; the source's card
    then finds the target at the till."""
    a = api.a
    source = _activate(api, a, a.cards[1])
    _adjust(api, a, source, 120)
    _adjust(api, a, a.member_id, 80)
    r = _merge(api, a, source, {"into": a.member_id})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["source_id"], body["target_id"], body["points_moved"]) == (source, a.member_id, 120)
    assert body["cards_moved"] == [a.cards[1]]
    assert body["member"]["available"] == 200
    looked = api.client.post("/v1/till/lookup", json={"code": a.cards[1]}, headers=a.headers())
    assert looked.status_code == 200 and looked.json()["member"]["id"] == a.member_id
    again = _merge(api, a, source, {"into": a.member_id})
    assert_problem(again, 409)


def test_merge_across_tenants_is_404_and_changes_nothing(api: Api) -> None:
    """Another tenant's member, in the path or in the body, is not found."""
    a, b = api.a, api.b
    _adjust(api, b, b.member_id, 50)
    assert_problem(_merge(api, a, b.member_id, {"into": a.member_id}), 404)
    assert_problem(_merge(api, a, a.member_id, {"into": b.member_id}), 404)
    r = api.client.get(f"/v1/admin/members/{b.member_id}", headers=b.headers("admin"))
    assert r.json()["member"]["available"] == 50


@pytest.mark.parametrize(
    ("path_id", "body", "status"),
    [
        ("self", {"into": "self"}, 422),
        ("self", {}, 422),
        ("self", {"into": 0}, 422),
        ("self", {"into": "seven"}, 422),
        ("self", {"into": 2**63}, 422),
        ("self", {"into": 1, "extra": True}, 422),
        ("99999999999999999999", {"into": 1}, 422),
        ("self", b'{"into": ', 400),
    ],
)
def test_bad_merge_requests_are_4xx_problems(
    api: Api, path_id: str, body: dict[str, Any] | bytes, status: int
) -> None:
    """Merging a member into itself, a missing or malformed target, an out-of-range id or a body that
    is not JSON is a 4xx problem, never a 500."""
    a = api.a
    source = str(a.member_id) if path_id == "self" else path_id
    h = a.headers("admin")
    url = f"/v1/admin/members/{source}/merge"
    if isinstance(body, bytes):
        r = api.client.post(url, content=body, headers={**h, "Content-Type": "application/json"})
    else:
        r = api.client.post(
            url, json={"into": a.member_id} if body.get("into") == "self" else body, headers=h
        )
    assert_problem(r, status)


def test_only_admins_merge_or_replace(api: Api) -> None:
    """A cashier or marketer key may not merge members or replace cards."""
    a = api.a
    for role in ("cashier", "marketer"):
        assert_problem(_merge(api, a, a.member_id, {"into": a.member_id}, role), 403)
        r = api.client.post(f"/v1/admin/cards/{a.card}/replacement", headers=a.headers(role))
        assert_problem(r, 403)


def test_replacement_blocks_the_old_card_and_issues_a_new_one(api: Api) -> None:
    """Without a body a new number is issued (201); the till then refuses the old card and finds the
    member by the new one."""
    a = api.a
    r = api.client.post(f"/v1/admin/cards/{a.card}/replacement", headers=a.headers("admin"))
    assert r.status_code == 201, r.text
    new = r.json()["new_card"]
    assert r.json()["old_card"] == a.card and r.json()["member_id"] == a.member_id and new != a.card
    old = api.client.post("/v1/till/lookup", json={"code": a.card}, headers=a.headers())
    assert old.status_code == 200 and old.json()["card"]["state"] == "blocked"
    posted = api.client.post("/v1/till/transactions", json=purchase(a.card), headers=a.headers(**idem()))
    assert assert_problem(posted, 409)["type"].endswith("not-allowed")
    posted = api.client.post("/v1/till/transactions", json=purchase(new), headers=a.headers(**idem()))
    assert posted.status_code == 201, posted.text
    found = api.client.post("/v1/till/lookup", json={"code": new}, headers=a.headers())
    assert found.status_code == 200 and found.json()["member"]["id"] == a.member_id


def test_replacement_with_a_blank_card(api: Api) -> None:
    """A blank card named in the body becomes the member's."""
    a = api.a
    r = api.client.post(
        f"/v1/admin/cards/{a.card}/replacement", json={"new_card": a.cards[2]}, headers=a.headers("admin")
    )
    assert r.status_code == 201, r.text
    assert r.json()["new_card"] == a.cards[2] and r.json()["issued"] is False
    found = api.client.post("/v1/till/lookup", json={"code": a.cards[2]}, headers=a.headers())
    assert found.json()["member"]["id"] == a.member_id


def test_replacement_errors_are_problems(api: Api) -> None:
    """Another tenant's card is 404; a mistyped number, an unknown field or a non-blank new card is a
    4xx problem; nothing is blocked then."""
    a, b = api.a, api.b
    h = a.headers("admin")
    assert_problem(api.client.post(f"/v1/admin/cards/{b.card}/replacement", headers=h), 404)
    typo = a.card[:-1] + str((int(a.card[-1]) + 1) % 10)
    assert_problem(api.client.post(f"/v1/admin/cards/{typo}/replacement", headers=h), 422)
    assert_problem(api.client.post(f"/v1/admin/cards/{'9' * 41}/replacement", headers=h), 400)
    r = api.client.post(f"/v1/admin/cards/{a.card}/replacement", json={"card": a.cards[2]}, headers=h)
    assert_problem(r, 422)
    r = api.client.post(f"/v1/admin/cards/{a.card}/replacement", json={"new_card": a.card}, headers=h)
    assert_problem(r, 422)
    r = api.client.post(f"/v1/admin/cards/{a.card}/replacement", json={"new_card": b.cards[2]}, headers=h)
    assert_problem(r, 404)
    blank = a.cards[3]
    assert_problem(api.client.post(f"/v1/admin/cards/{blank}/replacement", headers=h), 409)
    still = api.client.post("/v1/till/lookup", json={"code": a.card}, headers=a.headers())
    assert still.json()["card"]["state"] == "active"
