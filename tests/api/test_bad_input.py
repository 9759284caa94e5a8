"""Anything a client can send gets a 4xx RFC 9457 problem, never a 500, and writes nothing.

The tests share one world per database (tenant A seeded): bad input must leave it as it was, which the
tests check with before/after snapshots read through A's own keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from loyalty.cards.secrets import Secrets, init_secrets, load_secrets
from loyalty.cards.tokens import sign_token

from .conftest import PROGRAM, Api, scan_url
from .helpers import PROBLEM_JSON, Seed, assert_problem, idem, open_world, period, purchase, seed, snapshot

BACKENDS = ("sqlite", "postgresql")
JSON = {"Content-Type": "application/json"}
YAML = {"Content-Type": "application/yaml"}
#: Just over the app's 1 MB body limit (api.app.MAX_BODY_BYTES).
OVER_LIMIT = 1024 * 1024 + 1
#: Just over the program document limit (api.programs.MAX_DOCUMENT_BYTES).
OVER_DOCUMENT_LIMIT = 512 * 1024 + 1

World = tuple[Api, Seed]


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, secrets: Secrets) -> Iterator[World]:
    url = str(request.getfixturevalue(f"{request.param}_url"))
    with open_world(url, secrets) as api:
        yield api, seed(api, secrets, "a")


@contextlib.contextmanager
def statements(api: Api) -> Iterator[list[str]]:
    """Collect the SQL statements the app runs inside the block."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    engine = api.client.app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def unchanged(world: World) -> Callable[[], None]:
    """Snapshot A now; the returned function asserts nothing changed since."""
    api, s = world
    before = snapshot(api, api.a, s)
    return lambda: _same(before, snapshot(api, api.a, s))


def _same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after == before, "bad input changed stored state"


def field_errors(body: dict[str, Any]) -> set[str]:
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, f"a validation problem lists its field errors: {body}"
    return {str(e.get("field")) for e in errors}


# --- the JSON endpoints and a valid body for each ---


def _simulation() -> dict[str, Any]:
    return {
        "basket": {
            "occurred_at": datetime.now(UTC).isoformat(),
            "items": [{"sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 450}],
        }
    }


#: name -> (url, role, valid body); till writes get an Idempotency-Key.
JSON_ENDPOINTS: dict[str, Callable[[Api, Seed], tuple[str, str, dict[str, Any]]]] = {
    "lookup": lambda api, s: ("/v1/till/lookup", "cashier", {"code": s.number}),
    "activate": lambda api, s: ("/v1/till/activations", "cashier", {"card": s.blank}),
    "purchase": lambda api, s: ("/v1/till/transactions", "cashier", purchase(s.number)),
    "refund": lambda api, s: (
        f"/v1/till/transactions/{s.transaction_id}/refunds",
        "cashier",
        {"lines": [{"line": 0, "quantity": 1}]},
    ),
    "redeem": lambda api, s: ("/v1/till/redemptions", "cashier", {"card": s.number, "reward": "COFFEE"}),
    "simulate": lambda api, s: (f"/v1/program/versions/{s.draft_id}/simulations", "marketer", _simulation()),
    "backtest": lambda api, s: (f"/v1/program/versions/{s.draft_id}/backtests", "marketer", period()),
    "publish": lambda api, s: (
        f"/v1/program/versions/{s.draft_id}/publications",
        "marketer",
        {"valid_from": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
    ),
    "partner": lambda api, s: ("/v1/admin/partners", "admin", {"code": "bakery", "name": "Bakery"}),
    "outlet": lambda api, s: (
        "/v1/admin/outlets",
        "admin",
        {"partner_id": s.partner_id, "code": "o-9", "name": "Outlet 9"},
    ),
    "key": lambda api, s: ("/v1/admin/keys", "admin", {"role": "marketer", "name": "m2"}),
    "adjust": lambda api, s: (
        f"/v1/admin/members/{s.member_id}/adjustments",
        "admin",
        {"points": 5, "reason": "goodwill"},
    ),
}


def post_raw(world: World, name: str, content: bytes, headers: dict[str, str] | None = None) -> Any:
    api, s = world
    url, role, _ = JSON_ENDPOINTS[name](api, s)
    extra = idem() if url.startswith("/v1/till/") and url != "/v1/till/lookup" else {}
    return api.client.post(
        url, content=content, headers=api.a.headers(role, **{**JSON, **extra, **(headers or {})})
    )


def post_json(world: World, name: str, body: Any, **headers: str) -> Any:
    import json

    return post_raw(world, name, json.dumps(body).encode(), headers)


def valid_body(world: World, name: str) -> dict[str, Any]:
    api, s = world
    return JSON_ENDPOINTS[name](api, s)[2]


def each_endpoint(world: World, send: Callable[[str], Any], status: int | tuple[int, ...]) -> None:
    """Send to every JSON endpoint; every answer is a problem with ``status`` (collects all misses)."""
    statuses = (status,) if isinstance(status, int) else status
    misses = {}
    for name in JSON_ENDPOINTS:
        r = send(name)
        ok = r.status_code in statuses and r.headers.get("content-type", "").startswith(PROBLEM_JSON)
        if ok:
            assert_problem(r, r.status_code)
        else:
            misses[name] = f"{r.status_code} {r.text[:160]}"
    assert not misses, f"expected {statuses}: {misses}"


# --- malformed bodies ---

SYNTAX = {
    "truncated": b'{"code": "6012',
    "not-json": b"hello",
    "trailing-garbage": b'{"a": 1} x',
    "nan-literal": b'{"a": NaN}',
    "single-quotes": b"{'a': 1}",
    "invalid-utf8": b'{"code": "\xff\xfe"}',
    "lone-surrogate-escape": b'{"code": "\\ud800"}',
    "huge-integer": b'{"a": ' + b"9" * 5000 + b"}",
    "huge-float": b'{"a": 1e400}',
    "deep-arrays": b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "deep-objects": b'{"a": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_000 + b"}",
    "moderately-deep": b'{"a": ' + b"[" * 2_000 + b"]" * 2_000 + b"}",
}


@pytest.mark.parametrize("payload", SYNTAX.values(), ids=SYNTAX.keys())
def test_a_body_that_is_not_json_is_a_400_problem(world: World, payload: bytes) -> None:
    """A body that does not parse as JSON (truncated, NaN, bad UTF-8, nested too deep...) is a 400 problem."""
    check = unchanged(world)
    each_endpoint(world, lambda name: post_raw(world, name, payload), (400, 422))
    check()


SHAPES = {
    "null": b"null",
    "list": b"[]",
    "string": b'"x"',
    "number": b"1",
    "empty-object": b"{}",
    "empty-body": b"",
}


@pytest.mark.parametrize("payload", SHAPES.values(), ids=SHAPES.keys())
def test_json_of_the_wrong_shape_is_a_4xx_problem(world: World, payload: bytes) -> None:
    """Valid JSON that is not the expected object (null, a list, {}, nothing) is a 400/422 problem."""
    check = unchanged(world)
    # ``{}`` is a whole refund by design (every field of a refund is optional), so it is sent elsewhere only
    each_endpoint(
        world,
        lambda name: post_raw(
            world, name, b'{"lines": null, "x": 1}' if (name == "refund" and payload == b"{}") else payload
        ),
        (400, 422),
    )
    check()


def test_unknown_fields_are_refused_with_their_name(world: World) -> None:
    """A field the API does not know is a 422 naming it (a typo is never silently ignored)."""
    check = unchanged(world)
    for name in JSON_ENDPOINTS:
        body = valid_body(world, name) | {"colour": "blue"}
        body = assert_problem(post_json(world, name, body), 422)
        assert any("colour" in f for f in field_errors(body)), (name, body)
    body = purchase(world[1].number)
    body["items"][0]["colour"] = "blue"
    assert any("colour" in f for f in field_errors(assert_problem(post_json(world, "purchase", body), 422)))
    check()


WRONG_TYPES = [
    ("lookup", {"code": 6012000000000011}, "code"),
    ("lookup", {"code": ["6012"]}, "code"),
    ("purchase", {"items": {"sku": "A"}}, "items"),
    ("purchase", {"items": [{"sku": "A", "unit_price": 4.5}]}, "items.0.unit_price"),
    ("purchase", {"items": [{"sku": "A", "unit_price": 100, "quantity": "two"}]}, "items.0.quantity"),
    ("purchase", {"items": [{"sku": 7, "unit_price": 100}]}, "items.0.sku"),
    ("purchase", {"occurred_at": "yesterday"}, "occurred_at"),
    ("purchase", {"external_id": None}, "external_id"),
    ("refund", {"lines": "all"}, "lines"),
    ("redeem", {"transaction_id": "first"}, "transaction_id"),
    ("key", {"role": "owner"}, "role"),
    ("adjust", {"points": 1.5}, "points"),
    ("outlet", {"tags": "vip"}, "tags"),
]


@pytest.mark.parametrize(
    ("name", "patch", "field"), WRONG_TYPES, ids=[f"{n}-{f}-{i}" for i, (n, _, f) in enumerate(WRONG_TYPES)]
)
def test_a_value_of_the_wrong_type_is_a_422_naming_the_field(
    world: World, name: str, patch: dict[str, Any], field: str
) -> None:
    """A value of the wrong type is a 422 problem whose errors name the field."""
    check = unchanged(world)
    body = assert_problem(post_json(world, name, valid_body(world, name) | patch), 422)
    assert field in field_errors(body), body
    check()


@pytest.mark.parametrize(
    ("name", "patch", "field"),
    [
        ("purchase", {"items": [{"sku": "A", "unit_price": "450"}]}, "items.0.unit_price"),
        ("purchase", {"items": [{"sku": "A", "unit_price": 100, "quantity": "2"}]}, "items.0.quantity"),
        ("purchase", {"items": [{"sku": "A", "unit_price": True}]}, "items.0.unit_price"),
        ("adjust", {"points": "100"}, "points"),
    ],
    ids=["price", "quantity", "bool-price", "points"],
)
def test_a_number_sent_as_a_string_is_refused(
    world: World, name: str, patch: dict[str, Any], field: str
) -> None:
    """Money, quantities and points are JSON integers as documented; "450" or true is a 422, not a guess."""
    check = unchanged(world)
    body = assert_problem(post_json(world, name, valid_body(world, name) | patch), 422)
    assert field in field_errors(body), body
    check()


# --- sizes ---


def test_a_body_over_the_limit_is_a_413_problem(world: World) -> None:
    """A body over 1 MB is refused with a 413 problem on every JSON endpoint, before it is parsed."""
    check = unchanged(world)
    big = b'{"code": "' + b"1" * OVER_LIMIT + b'"}'
    each_endpoint(world, lambda name: post_raw(world, name, big), 413)
    check()


def test_a_program_document_over_its_limit_is_a_413_problem(world: World) -> None:
    """A program document over 512 kB is a 413 problem on validate and on save."""
    api, _ = world
    check = unchanged(world)
    doc = PROGRAM + "#" * OVER_DOCUMENT_LIMIT
    for url in ("/v1/program/validate", "/v1/program/drafts"):
        assert_problem(api.client.post(url, content=doc, headers=api.a.headers("marketer", **YAML)), 413)
    check()


ABSURD_ITEMS = {
    "zero-quantity": {"quantity": 0},
    "negative-quantity": {"quantity": -1},
    "absurd-quantity": {"quantity": 10**9},
    "astronomic-quantity": {"quantity": 10**30},
    "negative-price": {"unit_price": -1},
    "absurd-price": {"unit_price": 10**15},
    "astronomic-price": {"unit_price": 10**30},
    "empty-sku": {"sku": ""},
    "long-sku": {"sku": "S" * 1000},
    "many-tags": {"tags": ["t"] * 10_000},
}


@pytest.mark.parametrize("patch", ABSURD_ITEMS.values(), ids=ABSURD_ITEMS.keys())
def test_absurd_quantities_and_prices_are_a_422(world: World, patch: dict[str, Any]) -> None:
    """Zero, negative or absurd quantities and prices are a 422 naming the item field, and book nothing."""
    check = unchanged(world)
    body = purchase(world[1].number)
    body["items"][0] |= patch
    errors = field_errors(assert_problem(post_json(world, "purchase", body), 422))
    assert any(f.startswith("items.0.") for f in errors), errors
    sim = _simulation()
    sim["basket"]["items"][0] |= patch
    assert_problem(post_json(world, "simulate", sim), 422)
    check()


def test_an_empty_or_oversized_basket_is_a_422(world: World) -> None:
    """A purchase needs 1 to 1,000 items; none or 1,001 is a 422 about ``items``."""
    check = unchanged(world)
    for items in ([], [{"sku": "A", "unit_price": 1}] * 1001):
        body = purchase(world[1].number) | {"items": items}
        assert "items" in field_errors(assert_problem(post_json(world, "purchase", body), 422))
    check()


def test_absurd_adjustments_and_refund_lines_are_a_422(world: World) -> None:
    """Adjustments beyond ±1,000,000 points, short reasons and negative refund lines are 422 problems."""
    check = unchanged(world)
    for patch in (
        {"points": 10**7},
        {"points": -(10**7)},
        {"points": 10**30},
        {"reason": ""},
        {"reason": "x"},
    ):
        assert_problem(post_json(world, "adjust", valid_body(world, "adjust") | patch), 422)
    for line in (
        {"line": -1, "quantity": 1},
        {"line": 0, "quantity": 0},
        {"line": 0, "quantity": -3},
        {"line": 10**9, "quantity": 1},
    ):
        assert_problem(post_json(world, "refund", {"lines": [line]}), 422)
    check()


# --- time ---

NAIVE = "2026-03-01T10:00:00"


def test_naive_datetimes_are_a_422_everywhere(world: World) -> None:
    """An instant without a UTC offset is a 422 wherever one is taken: body fields and query parameters."""
    api, _ = world
    check = unchanged(world)
    cases = [
        ("purchase", {"occurred_at": NAIVE}, "occurred_at"),
        ("publish", {"valid_from": NAIVE}, "valid_from"),
        ("backtest", {"since": NAIVE}, "since"),
        ("backtest", {"until": NAIVE}, "until"),
    ]
    for name, patch, field in cases:
        assert field in field_errors(
            assert_problem(post_json(world, name, valid_body(world, name) | patch), 422)
        )
    sim = _simulation()
    sim["basket"]["occurred_at"] = NAIVE
    assert_problem(post_json(world, "simulate", sim), 422)
    for url, role in (("/v1/program/rule-points", "marketer"), ("/v1/admin/reports/partners", "admin")):
        for params in (
            {"since": NAIVE, "until": period()["until"]},
            {"since": period()["since"], "until": NAIVE},
        ):
            assert_problem(api.client.get(url, params=params, headers=api.a.headers(role)), 422)
    check()


EXTREME = {
    "far-future-west": "9999-12-31T23:59:59-05:00",
    "far-past-east": "0001-01-01T00:00:00+05:00",
    "year-1": "0001-01-01T00:00:00Z",
    "year-9999": "9999-12-31T23:59:59Z",
}


@pytest.mark.parametrize("instant", EXTREME.values(), ids=EXTREME.keys())
def test_instants_at_the_edge_of_the_calendar_are_a_4xx(world: World, instant: str) -> None:
    """Aware instants near year 1 or 9999 (overflowing when moved to UTC) get a 4xx, never a 500."""
    api, _ = world
    check = unchanged(world)
    sim = _simulation()
    sim["basket"]["occurred_at"] = instant
    misses = {}
    answers = {
        "purchase": post_json(world, "purchase", valid_body(world, "purchase") | {"occurred_at": instant}),
        "publish": post_json(world, "publish", {"valid_from": instant}),
        "simulate": post_json(world, "simulate", sim),
        "backtest-until": post_json(world, "backtest", {"since": period()["since"], "until": instant}),
        "backtest-since": post_json(world, "backtest", {"since": instant, "until": period()["until"]}),
        "rule-points": api.client.get(
            "/v1/program/rule-points",
            params={"since": period()["since"], "until": instant},
            headers=api.a.headers("marketer"),
        ),
        "partners": api.client.get(
            "/v1/admin/reports/partners",
            params={"since": period()["since"], "until": instant},
            headers=api.a.headers("admin"),
        ),
    }
    for name, r in answers.items():
        if r.status_code >= 500 or (
            r.status_code >= 400 and not r.headers["content-type"].startswith(PROBLEM_JSON)
        ):
            misses[name] = f"{r.status_code} {r.text[:120]}"
    assert not misses, misses
    check()


def test_a_report_period_that_ends_before_it_starts_is_a_422(world: World) -> None:
    """``until`` before ``since`` is a 422 on every period endpoint (rule points, backtest, settlement)."""
    api, _ = world
    p = period()
    backwards = {"since": p["until"], "until": p["since"]}
    assert_problem(post_json(world, "backtest", backwards), 422)
    assert_problem(
        api.client.get("/v1/program/rule-points", params=backwards, headers=api.a.headers("marketer")), 422
    )
    assert_problem(
        api.client.get("/v1/admin/reports/partners", params=backwards, headers=api.a.headers("admin")), 422
    )


# --- pages and query parameters ---

PAGES = [
    {"limit": 0},
    {"limit": -1},
    {"limit": 101},
    {"limit": 10**30},
    {"limit": "ten"},
    {"limit": "1.5"},
    {"before": 0},
    {"before": -5},
    {"before": 2**63},
    {"before": 10**40},
    {"before": "last"},
]


@pytest.mark.parametrize("params", PAGES, ids=[str(p) for p in PAGES])
def test_out_of_range_history_pages_are_a_4xx_problem(world: World, params: dict[str, Any]) -> None:
    """A customer history page with a limit outside 1..100 or a bad ``before`` cursor is a 400/422 problem."""
    api, s = world
    r = api.client.get(f"/v1/cards/{s.token}/history", params=params)
    assert r.status_code in (400, 422), r.text
    body = assert_problem(r, r.status_code)
    assert field_errors(body) & {"limit", "before"}, body


def test_the_last_history_page_is_empty_not_an_error(world: World) -> None:
    """A ``before`` cursor older than every row gives an empty page with no next cursor."""
    api, s = world
    r = api.client.get(f"/v1/cards/{s.token}/history", params={"before": 1, "limit": 100})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [] and r.json()["next_before"] is None


@pytest.mark.parametrize(
    "params",
    [{"months": 0}, {"months": 37}, {"months": -1}, {"months": "all"}],
    ids=["zero", "too-many", "negative", "word"],
)
def test_out_of_range_report_months_are_a_4xx_problem(world: World, params: dict[str, Any]) -> None:
    """The monthly report takes 1..36 months; anything else is a 400/422 problem."""
    api, _ = world
    r = api.client.get("/v1/admin/reports/monthly", params=params, headers=api.a.headers("admin"))
    assert r.status_code in (400, 422), r.text
    assert_problem(r, r.status_code)


def test_missing_and_malformed_query_instants_are_a_4xx_problem(world: World) -> None:
    """Report periods without ``since``/``until`` or with words instead of instants are 400/422 problems."""
    api, _ = world
    for url, role in (("/v1/program/rule-points", "marketer"), ("/v1/admin/reports/partners", "admin")):
        for params in ({}, {"since": period()["since"]}, {"since": "yesterday", "until": "today"}):
            r = api.client.get(url, params=params, headers=api.a.headers(role))
            assert r.status_code in (400, 422), (url, params, r.text)
            assert_problem(r, r.status_code)


# --- ids in paths ---

HUGE_ID = 10**20  # beyond a 64-bit integer column


def _id_calls(s: Seed, ident: int | str) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        ("GET", f"/v1/admin/members/{ident}", "admin", {}),
        ("POST", f"/v1/admin/members/{ident}/adjustments", "admin", {"json": {"points": 1, "reason": "why"}}),
        ("POST", f"/v1/admin/keys/{ident}/revocation", "admin", {}),
        ("GET", f"/v1/program/versions/{ident}", "marketer", {}),
        ("POST", f"/v1/program/versions/{ident}/simulations", "marketer", {"json": _simulation()}),
        ("POST", f"/v1/program/versions/{ident}/backtests", "marketer", {"json": period()}),
        (
            "POST",
            f"/v1/program/versions/{ident}/publications",
            "marketer",
            {"json": {"valid_from": (datetime.now(UTC) + timedelta(days=1)).isoformat()}},
        ),
        ("POST", f"/v1/till/transactions/{ident}/refunds", "cashier", {"json": {}, "headers": idem()}),
        ("POST", f"/v1/till/redemptions/{ident}/cancellations", "cashier", {"headers": idem()}),
    ]


@pytest.mark.parametrize(
    "ident", [0, -1, 2**62, 2**63, HUGE_ID], ids=["zero", "negative", "2^62", "2^63", "1e20"]
)
def test_an_id_that_names_nothing_is_a_4xx_problem(world: World, ident: int) -> None:
    """An id no row can have (zero, negative, beyond 64 bits) is a 404 (or 422 range) problem, never a 500."""
    api, s = world
    check = unchanged(world)
    misses = {}
    for method, url, role, kwargs in _id_calls(s, ident):
        headers = api.a.headers(role, **kwargs.pop("headers", {}))
        r = api.client.request(method, url, headers=headers, **kwargs)
        if r.status_code not in (404, 422) or not r.headers.get("content-type", "").startswith(PROBLEM_JSON):
            misses[f"{method} {url}"] = f"{r.status_code} {r.text[:100]}"
    assert not misses, misses
    check()


def test_a_path_segment_of_the_wrong_type_is_a_4xx_problem(world: World) -> None:
    """``/members/abc`` or ``/jobs/everything`` is a 4xx problem (no route, or a validation error)."""
    api, s = world
    check = unchanged(world)
    for method, url, role, kwargs in _id_calls(s, "abc"):
        kwargs.pop("headers", None)
        r = api.client.request(method, url, headers=api.a.headers(role, **idem()), **kwargs)
        assert 400 <= r.status_code < 500, (url, r.text)
        assert_problem(r, r.status_code)
    r = api.client.post("/v1/admin/jobs/everything", headers=api.a.headers("admin"))
    assert r.status_code in (400, 404, 422), r.text
    assert_problem(r, r.status_code)
    check()


def test_unknown_routes_and_methods_are_problems(world: World) -> None:
    """An unknown path is a 404 problem and a wrong method a 405 problem."""
    api, _ = world
    assert_problem(api.client.get("/v1/nothing-here", headers=api.a.headers("admin")), 404)
    assert_problem(api.client.delete("/v1/admin/keys", headers=api.a.headers("admin")), 405)
    assert_problem(api.client.put("/v1/till/lookup", json={}, headers=api.a.headers()), 405)


# --- cards and tokens ---


def _flip(token: str, at: int) -> str:
    c = token[at]
    return token[:at] + ("B" if c != "B" else "C") + token[at + 1 :]


@pytest.fixture(scope="module")
def stranger_secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    """Another installation's secrets: its tokens are well-formed but signed with a key we do not have."""
    path: Path = tmp_path_factory.mktemp("stranger") / "secrets.json"
    return load_secrets(init_secrets(path))


def bad_tokens(api: Api, s: Seed, secrets: Secrets, stranger: Secrets) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "truncated": s.token[:-4],
        "one-char-short": s.token[:-1],
        "flipped-mac": _flip(s.token, len(s.token) - 2),
        "flipped-card-id": _flip(s.token, 8),
        "other-installation": sign_token(stranger.ring(api.a.id), s.card_id, now=now),
        "other-tenant-ring": sign_token(secrets.ring(api.b.id), s.card_id, now=now),
        "unknown-tenant": sign_token(secrets.ring(10**9), s.card_id, now=now),
        "unknown-card": sign_token(secrets.ring(api.a.id), 10**12, now=now),
        "garbage": "not-a-token",
        "padding": s.token + "==",
        "dots": "....",
    }


def test_forged_and_foreign_tokens_are_a_404_for_customers(
    world: World, secrets: Secrets, stranger_secrets: Secrets
) -> None:
    """A forged, truncated or foreign token opens no card page: a 404 problem, the same for every reason."""
    api, s = world
    misses = {}
    for name, token in bad_tokens(api, s, secrets, stranger_secrets).items():
        for page in ("balance", "history"):
            r = api.client.get(f"/v1/cards/{token}/{page}")
            if r.status_code != 404 or not r.headers.get("content-type", "").startswith(PROBLEM_JSON):
                misses[f"{name}/{page}"] = f"{r.status_code} {r.text[:100]}"
    assert not misses, misses


def test_forged_tokens_at_the_till_are_a_404(
    world: World, secrets: Secrets, stranger_secrets: Secrets
) -> None:
    """A till scanning a forged or foreign code (bare or inside the card URL) gets a 404 problem."""
    api, s = world
    check = unchanged(world)
    for name, token in bad_tokens(api, s, secrets, stranger_secrets).items():
        if name == "unknown-card":
            continue  # well signed: it is an unknown card, covered below
        codes = [token]
        with contextlib.suppress(ValueError):  # the URL helper refuses some malformed tokens itself
            codes.append(scan_url(token))
        for code in codes:
            r = api.client.post("/v1/till/lookup", json={"code": code}, headers=api.a.headers())
            assert_problem(r, 404)
            r = post_json(world, "purchase", purchase(code))
            assert_problem(r, 404)
    check()


def test_an_overlong_token_is_refused_before_it_is_decoded(world: World) -> None:
    """A customer token over 120 characters is a 4xx problem (the path parameter is bounded)."""
    api, _ = world
    r = api.client.get(f"/v1/cards/{'A' * 5000}/balance")
    assert 400 <= r.status_code < 500
    assert_problem(r, r.status_code)


@pytest.mark.parametrize("page", ["balance", "history"])
def test_a_forged_token_causes_no_database_query(
    world: World, secrets: Secrets, stranger_secrets: Secrets, page: str
) -> None:
    """A forged or foreign customer token is refused with no SQL statement run at all (HMAC first)."""
    api, s = world
    tokens = bad_tokens(api, s, secrets, stranger_secrets)
    for genuine in ("unknown-card", "other-tenant-ring", "unknown-tenant"):
        del tokens[genuine]  # signed with this installation's keys: looking the card up is the point
    for name, token in tokens.items():
        with statements(api) as seen:
            r = api.client.get(f"/v1/cards/{token}/{page}")
        assert r.status_code == 404, (name, r.text)
        assert seen == [], f"{name}: {seen}"
    with statements(api) as seen:  # the listener does see a genuine request's queries
        assert api.client.get(f"/v1/cards/{s.token}/{page}").status_code == 200
    assert seen


def _mistype(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def test_a_mistyped_card_number_is_a_422_before_any_card_lookup(world: World) -> None:
    """A wrong check digit is a 422 invalid-card-number problem, and no statement touches the cards table."""
    api, s = world
    check = unchanged(world)
    bad = _mistype(s.number)
    calls = [
        ("POST", "/v1/till/lookup", "cashier", {"json": {"code": bad}}),
        (
            "POST",
            "/v1/till/lookup",
            "cashier",
            {"json": {"code": f"{bad[:4]} {bad[4:8]} {bad[8:12]} {bad[12:]}"}},
        ),
        ("POST", "/v1/till/activations", "cashier", {"json": {"card": bad}, "headers": idem()}),
        ("POST", "/v1/till/transactions", "cashier", {"json": purchase(bad), "headers": idem()}),
        (
            "POST",
            "/v1/till/redemptions",
            "cashier",
            {"json": {"card": bad, "reward": "COFFEE"}, "headers": idem()},
        ),
    ]
    for method, url, role, kwargs in calls:
        headers = api.a.headers(role, **kwargs.pop("headers", {}))
        with statements(api) as seen:
            r = api.client.request(method, url, headers=headers, **kwargs)
        body = assert_problem(r, 422)
        assert body["type"].endswith("invalid-card-number"), (url, body)
        touching = [q for q in seen if " cards" in q.lower()]
        assert not touching, (url, touching)
    check()


def test_a_mistyped_card_number_is_the_same_problem_for_admins(world: World) -> None:
    """Admin card endpoints refuse a wrong check digit with the tills' invalid-card-number problem."""
    api, s = world
    check = unchanged(world)
    bad = _mistype(s.number)
    for method, url in (("GET", f"/v1/admin/cards/{bad}"), ("POST", f"/v1/admin/cards/{bad}/block")):
        with statements(api) as seen:
            r = api.client.request(method, url, headers=api.a.headers("admin"))
        body = assert_problem(r, 422)
        assert not [q for q in seen if " cards" in q.lower()], url
        assert body["type"].endswith("invalid-card-number"), (url, body)
    check()


@pytest.mark.parametrize(
    "code",
    ["", "   ", "----", "1" * 300, "60120000", "\u0000", "６０１２"],
    ids=["empty", "blank", "dashes", "too-long", "too-short", "nul", "fullwidth-digits"],
)
def test_nonsense_card_codes_are_a_4xx_problem(world: World, code: str) -> None:
    """Card codes that are neither a number nor a token are a 404/422 problem at the till."""
    api, _ = world
    r = api.client.post("/v1/till/lookup", json={"code": code}, headers=api.a.headers())
    assert r.status_code in (404, 422), r.text
    assert_problem(r, r.status_code)


# --- domain refusals ---


def test_an_unknown_reward_code_is_a_4xx_and_spends_nothing(world: World) -> None:
    """Redeeming a reward the program does not have is a 404/422 problem and no points move."""
    check = unchanged(world)
    for reward in ("NOPE", "coffee", "FREE-WASH-2"):
        r = post_json(world, "redeem", {"card": world[1].number, "reward": reward})
        assert r.status_code in (404, 422), r.text
        assert_problem(r, r.status_code)
    r = post_json(world, "redeem", {"card": world[1].number, "reward": "bad code!"})
    assert "reward" in field_errors(assert_problem(r, 422))
    check()


def test_refunding_more_than_was_bought_is_refused(world: World) -> None:
    """Refunding more units than a line had, or a line it lacks, is a 4xx problem and reverses nothing."""
    check = unchanged(world)
    for lines in (
        [{"line": 0, "quantity": 3}],
        [{"line": 0, "quantity": 100_000}],
        [{"line": 5, "quantity": 1}],
        [{"line": 0, "quantity": 1}, {"line": 0, "quantity": 2}],
    ):
        r = post_json(world, "refund", {"lines": lines})
        assert r.status_code in (409, 422), (lines, r.text)
        assert_problem(r, r.status_code)
    check()


# --- Idempotency-Key ---

TILL_WRITES = ("activate", "purchase", "refund", "redeem")


def test_a_till_write_without_an_idempotency_key_is_a_400(world: World) -> None:
    """Every till write without an Idempotency-Key header is a 400 problem, and nothing is booked."""
    api, s = world
    check = unchanged(world)
    for name in TILL_WRITES:
        url, role, body = JSON_ENDPOINTS[name](api, s)
        assert_problem(api.client.post(url, json=body, headers=api.a.headers(role)), 400)
    r = api.client.post(f"/v1/till/redemptions/{s.redemption_id}/cancellations", headers=api.a.headers())
    assert_problem(r, 400)
    check()


@pytest.mark.parametrize("key", ["", "k" * 256, "k" * 10_000, "a\tb"], ids=["empty", "256", "10k", "tab"])
def test_a_malformed_idempotency_key_is_a_4xx(world: World, key: str) -> None:
    """An empty, overlong or non-printable Idempotency-Key is a 4xx problem, and nothing is booked."""
    api, s = world
    check = unchanged(world)
    for name in TILL_WRITES:
        url, role, body = JSON_ENDPOINTS[name](api, s)
        r = api.client.post(url, json=body, headers=api.a.headers(role, **{"Idempotency-Key": key}))
        assert 400 <= r.status_code < 500, (name, r.text)
        assert_problem(r, r.status_code)
    check()


# --- program documents ---

BAD_DOCUMENTS = {
    "unknown-field": PROGRAM.replace("currency: EUR", "currency: EUR\ncolour: blue"),
    "misspelt-attribute": PROGRAM.replace("item.category ==", "item.categroy =="),
    "type-mismatch": PROGRAM.replace('item.category == "organic"', "item.category == 3"),
    "forbidden-construct": PROGRAM.replace('item.category == "organic"', '__import__("os").system("true")'),
    "yaml-syntax": "program: [unclosed\nrules: {",
    "json-syntax": '{"program": "x", "rules": [}',
    "empty": "",
    "just-a-list": "- 1\n- 2\n",
    "wrong-types": PROGRAM.replace("expire_after_months: 24", "expire_after_months: soon"),
    "alias-bomb": "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: [*b, *b, *b, *b, *b, *b, *b, *b]\n",
    "deep-yaml": "[" * 5_000 + "]" * 5_000,
    "deep-json": "[" * 5_000 + "]" * 5_000,
    "tab-indented": "program: x\n\tcurrency: EUR\n",
}


@pytest.mark.parametrize("doc", BAD_DOCUMENTS.values(), ids=BAD_DOCUMENTS.keys())
def test_an_invalid_program_draft_is_a_422_with_positions(world: World, doc: str) -> None:
    """An invalid draft is a 422 listing errors of {line, column, path, message, hint}; nothing is saved."""
    api, _ = world
    check = unchanged(world)
    media = {"Content-Type": "application/json"} if doc.startswith("{") else YAML
    for url in ("/v1/program/validate", "/v1/program/drafts"):
        body = assert_problem(
            api.client.post(url, content=doc, headers=api.a.headers("marketer", **media)), 422
        )
        assert isinstance(body.get("errors"), list) and body["errors"], body
        for error in body["errors"]:
            assert set(error) == {"line", "column", "path", "message", "hint"}, error
            assert isinstance(error["message"], str) and error["message"]
    check()


def test_a_misspelt_name_in_a_rule_gets_a_position_and_a_hint(world: World) -> None:
    """``item.categroy`` is reported at its line and column with a hint naming item.category."""
    api, _ = world
    doc = BAD_DOCUMENTS["misspelt-attribute"]
    body = assert_problem(
        api.client.post("/v1/program/validate", content=doc, headers=api.a.headers("marketer", **YAML)), 422
    )
    [error] = [e for e in body["errors"] if "categroy" in e["message"] or "categroy" in (e["hint"] or "")]
    line = doc.splitlines()[error["line"] - 1]
    assert "categroy" in line and error["column"] >= 1
    assert "item.category" in (error["hint"] or "")


# --- media types ---


def test_a_program_document_of_another_media_type_is_a_415(world: World) -> None:
    """A draft sent as HTML, XML, a form or a binary blob is a 415 problem, and nothing is saved."""
    api, _ = world
    check = unchanged(world)
    for media in (
        "text/html",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "application/octet-stream",
        "image/png",
    ):
        for url in ("/v1/program/validate", "/v1/program/drafts"):
            r = api.client.post(
                url, content=PROGRAM, headers=api.a.headers("marketer", **{"Content-Type": media})
            )
            assert_problem(r, 415)
    r = api.client.post(
        "/v1/program/drafts", content=b"\xff\xfe\x00program", headers=api.a.headers("marketer", **YAML)
    )
    assert_problem(r, 415)
    check()


@pytest.mark.parametrize("media", ["application/xml", "application/x-www-form-urlencoded", "text/html"])
def test_a_json_endpoint_refuses_another_media_type_with_415(world: World, media: str) -> None:
    """A JSON endpoint sent a body declared as XML, a form or HTML answers 415, whatever the bytes are."""
    api, s = world
    check = unchanged(world)
    import json

    each_endpoint(
        world,
        lambda name: post_raw(
            world, name, json.dumps(JSON_ENDPOINTS[name](api, s)[2]).encode(), {"Content-Type": media}
        ),
        415,
    )
    check()
