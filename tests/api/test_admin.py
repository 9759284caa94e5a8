"""Admin endpoints: partners, outlets, keys, members and cards, jobs, reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .conftest import Api
from .test_till import basket, idem


def test_partners_and_outlets_are_created_and_listed(api: Api) -> None:
    """A new partner's outlet shows up in the tenant's outlet list; a duplicate code is a 409."""
    h = api.a.headers("admin")
    partner = api.client.post("/v1/admin/partners", json={"code": "wash", "name": "Car wash"}, headers=h)
    assert partner.status_code == 201, partner.text
    outlet = api.client.post(
        "/v1/admin/outlets",
        headers=h,
        json={"partner_id": partner.json()["id"], "code": "wash-1", "name": "Wash 1", "tags": ["north"]},
    )
    assert outlet.status_code == 201, outlet.text
    codes = {o["code"] for o in api.client.get("/v1/admin/outlets", headers=h).json()}
    assert {"cafe-1", "cafe-2", "wash-1"} <= codes
    again = api.client.post("/v1/admin/partners", json={"code": "wash", "name": "Again"}, headers=h)
    assert again.status_code == 409


def test_a_key_is_shown_once_works_and_stops_working_when_revoked(api: Api) -> None:
    """A created key's secret works at once, is never listed, and a revoked key gets 401."""
    h = api.a.headers("admin")
    created = api.client.post(
        "/v1/admin/keys", json={"role": "cashier", "name": "till 3", "outlet_id": api.a.outlet_id}, headers=h
    )
    assert created.status_code == 201, created.text
    secret, key_id = created.json()["secret"], created.json()["info"]["id"]
    listed = api.client.get("/v1/admin/keys", headers=h).text
    assert secret not in listed and secret.split("_", 2)[2] not in listed  # lk_<id>_<secret>
    till = {"Authorization": f"Bearer {secret}"}
    assert api.client.post("/v1/till/lookup", json={"code": api.a.card}, headers=till).status_code == 200
    assert api.client.post(f"/v1/admin/keys/{key_id}/revocation", headers=h).status_code == 200
    r = api.client.post("/v1/till/lookup", json={"code": api.a.card}, headers=till)
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers


def test_a_cashier_key_needs_an_outlet_and_others_must_not_have_one(api: Api) -> None:
    """Key roles and outlets must agree: a 422 otherwise."""
    h = api.a.headers("admin")
    assert (
        api.client.post("/v1/admin/keys", json={"role": "cashier", "name": "x"}, headers=h).status_code == 422
    )
    r = api.client.post(
        "/v1/admin/keys", json={"role": "marketer", "name": "x", "outlet_id": api.a.outlet_id}, headers=h
    )
    assert r.status_code == 422


def test_an_adjustment_changes_the_balance_and_a_blocked_card_cannot_earn(api: Api) -> None:
    """Admins adjust points with a reason; after blocking a card its purchases are refused."""
    a, h = api.a, api.a.headers("admin")
    r = api.client.post(
        f"/v1/admin/members/{a.member_id}/adjustments", json={"points": 250, "reason": "goodwill"}, headers=h
    )
    assert r.status_code == 201 and r.json()["available_after"] == 250
    member = api.client.get(f"/v1/admin/members/{a.member_id}", headers=h).json()
    assert member["balance"]["available"] == 250
    assert api.client.get(f"/v1/admin/cards/{a.card}", headers=h).json()["member_id"] == a.member_id
    assert api.client.post(f"/v1/admin/cards/{a.card}/block", headers=h).json()["state"] == "blocked"
    r = api.client.post(
        "/v1/till/transactions",
        json=basket(a.card, "blocked", ("LATTE", "coffee", 1, 450)),
        headers=a.headers(**idem()),
    )
    assert r.status_code == 409 and r.json()["type"].endswith("not-allowed")


def test_jobs_and_reports(api: Api) -> None:
    """Jobs run on demand; liability, monthly movements and partner settlement reflect the bookings."""
    a, h = api.a, api.a.headers("admin")
    api.client.post(
        "/v1/till/transactions",
        json=basket(a.card, "rep-1", ("LATTE", "coffee", 2, 500)),
        headers=a.headers(**idem()),
    )
    jobs = api.client.post("/v1/admin/jobs/all", headers=h)
    assert jobs.status_code == 200 and {j["kind"] for j in jobs.json()} >= {"release", "expiry", "tiers"}
    liability = api.client.get("/v1/admin/reports/liability", headers=h).json()
    assert liability["pending"] == 10 and liability["net"] == 10
    monthly = api.client.get("/v1/admin/reports/monthly", params={"months": 2}, headers=h).json()
    assert len(monthly) == 2 and monthly[-1]["issued"] == 10
    now = datetime.now(UTC)
    partners = api.client.get(
        "/v1/admin/reports/partners",
        headers=h,
        params={
            "since": (now - timedelta(days=1)).isoformat(),
            "until": (now + timedelta(days=1)).isoformat(),
        },
    ).json()
    assert partners == [
        {"partner": "cafe", "transactions": 1, "spend": 1000, "points_issued": 10, "points_redeemed": 0}
    ]
