"""The marketer's program work: validate, save drafts, simulate, backtest, publish, rule report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .conftest import PROGRAM, Api
from .test_till import basket, idem

YAML = {"content-type": "application/yaml"}


def test_a_misspelled_field_comes_back_at_its_line_and_column(api: Api) -> None:
    """Validation errors are a 422 problem listing line, column, path, message and hint."""
    bad = PROGRAM.replace('item.category == "organic"', 'item.categroy == "organic"')
    r = api.client.post("/v1/program/validate", content=bad, headers=api.a.headers("marketer", **YAML))
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error == {
        "line": 31,
        "column": 12,
        "path": "rules[1].where",
        "message": "unknown field item.categroy",
        "hint": "did you mean item.category?",
    }


def test_a_valid_document_validates_without_being_saved(api: Api) -> None:
    """Validating answers the program's summary and stores nothing."""
    m = api.a.headers("marketer", **YAML)
    r = api.client.post("/v1/program/validate", content=PROGRAM, headers=m)
    assert r.status_code == 200 and r.json()["rules"][0] == "base"
    assert len(api.client.get("/v1/program/versions", headers=api.a.headers("marketer")).json()) == 1


def test_drafts_are_saved_only_when_valid_and_json_works_too(api: Api) -> None:
    """An invalid draft is refused with its errors; a valid one (YAML or JSON) is stored as a draft."""
    m = api.a.headers("marketer", **YAML)
    r = api.client.post("/v1/program/drafts", content="program: [", headers=m)
    assert r.status_code == 422 and r.json()["errors"][0]["line"] is not None
    draft = PROGRAM.replace("earn: {per_currency_unit: 1}", "earn: {per_currency_unit: 2}")
    r = api.client.post("/v1/program/drafts", content=draft, headers=m)
    assert r.status_code == 201 and r.json()["status"] == "draft"
    import json

    import yaml

    as_json = json.dumps(yaml.safe_load(draft), default=str)
    r = api.client.post(
        "/v1/program/drafts",
        content=as_json,
        headers=api.a.headers("marketer", **{"content-type": "application/json"}),
    )
    assert r.status_code == 201, r.text


def test_simulate_a_basket_against_a_draft_with_the_explanation(api: Api) -> None:
    """Simulation evaluates the draft, not the published version, and explains every rule."""
    m = api.a.headers("marketer", **YAML)
    draft = api.client.post(
        "/v1/program/drafts",
        headers=m,
        content=PROGRAM.replace("earn: {per_currency_unit: 1}", "earn: {per_currency_unit: 2}"),
    ).json()
    body = {
        "basket": {
            "occurred_at": "2026-11-23T10:00:00+01:00",
            "items": [{"sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 450}],
        }
    }
    r = api.client.post(
        f"/v1/program/versions/{draft['id']}/simulations", json=body, headers=api.a.headers("marketer")
    )
    assert r.status_code == 200, r.text
    assert r.json()["total"] == 9
    assert {e["rule"] for e in r.json()["explanation"]} == {
        "base",
        "organic-double",
        "tuesday-afternoon",
        "win-back",
        "car-wash-stamps",
        "welcome-back",
    }


def test_backtest_compares_a_draft_with_what_was_booked(api: Api) -> None:
    """A draft doubling the base rate shows the base rule's difference on stored purchases."""
    a = api.a
    for n in range(3):
        api.client.post(
            "/v1/till/transactions",
            json=basket(a.card, f"bt-{n}", ("LATTE", "coffee", 1, 1000)),
            headers=a.headers(**idem()),
        )
    draft = api.client.post(
        "/v1/program/drafts",
        headers=a.headers("marketer", **YAML),
        content=PROGRAM.replace("earn: {per_currency_unit: 1}", "earn: {per_currency_unit: 2}"),
    ).json()
    now = datetime.now(UTC)
    period = {"since": (now - timedelta(days=1)).isoformat(), "until": (now + timedelta(days=1)).isoformat()}
    r = api.client.post(
        f"/v1/program/versions/{draft['id']}/backtests", json=period, headers=a.headers("marketer")
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["transactions"] == 3
    assert report["actual_points"] == 30 and report["draft_points"] == 60 and report["difference"] == 30
    base = next(rule for rule in report["rules"] if rule["rule"] == "base")
    assert base["difference"] in (30, "30", "30.00")


def test_publish_a_draft_from_a_future_date(api: Api) -> None:
    """Publishing fixes the version; it prices purchases from valid_from on."""
    m = api.a.headers("marketer", **YAML)
    draft = api.client.post(
        "/v1/program/drafts",
        headers=m,
        content=PROGRAM.replace("earn: {per_currency_unit: 1}", "earn: {per_currency_unit: 2}"),
    ).json()
    valid_from = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    r = api.client.post(
        f"/v1/program/versions/{draft['id']}/publications",
        json={"valid_from": valid_from},
        headers=api.a.headers("marketer"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "published"
    again = api.client.post(
        f"/v1/program/versions/{draft['id']}/publications",
        json={"valid_from": valid_from},
        headers=api.a.headers("marketer"),
    )
    assert again.status_code == 409
    current = api.client.get("/v1/program", headers=api.a.headers("marketer")).json()
    assert current["id"] != draft["id"]  # still the old version until valid_from


def test_points_per_rule_over_a_period(api: Api) -> None:
    """The rule report sums the booked points of each rule in the period."""
    a = api.a
    api.client.post(
        "/v1/till/transactions",
        json=basket(a.card, "rp-1", ("BIO", "organic", 1, 1000)),
        headers=a.headers(**idem()),
    )
    now = datetime.now(UTC)
    r = api.client.get(
        "/v1/program/rule-points",
        headers=a.headers("marketer"),
        params={
            "since": (now - timedelta(hours=1)).isoformat(),
            "until": (now + timedelta(hours=1)).isoformat(),
        },
    )
    assert r.status_code == 200, r.text
    by_rule = {row["rule"]: row for row in r.json()}
    assert set(by_rule) >= {"base"}
    r = api.client.get(
        "/v1/program/rule-points",
        headers=a.headers("marketer"),
        params={"since": "2026-01-01T00:00:00", "until": "2026-02-01T00:00:00"},
    )
    assert r.status_code == 422
