"""Fuzzing with hypothesis (issue 12, scenario 6): the condition language, the card-code and token
parser, the import reader and the API's request bodies. Whatever goes in, only the errors each part
declares come out, and no input takes more than a second (hypothesis' deadline).

``FUZZ_EXAMPLES`` sets the examples per test (`make soak` runs more).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rules
from loyalty.cards.errors import CardError
from loyalty.cards.secrets import Secrets
from loyalty.errors import LoyaltyError
from loyalty.members import lookup
from loyalty.ops import importer

from .helpers import open_world

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

# --- the condition language ----------------------------------------------------------------------

WORDS = [
    "item.category",
    "item.sku",
    "item.quantity",
    "item.unit_price",
    "item.amount",
    "item.tags",
    "tx.total",
    "tx.items",
    "tx.time",
    "member.tier",
    "member.points",
    "member.visits",
    "member.days_since_last_visit",
    "member.tags",
    "outlet.partner",
    "weekday(tx.time)",
    "hour(tx.time)",
    "sum(tx.items.amount)",
    "count(item.tags)",
    "and",
    "or",
    "not",
    "in",
    "not in",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "**",
    "(",
    ")",
    "[",
    "]",
    ",",
    "'coffee'",
    '"tue"',
    "1",
    "0",
    "10**10**10",
    "1e308",
    "-1",
    "3.5",
    "True",
    "None",
    "lambda",
    "__import__",
    "x.__class__",
    "[1] * 10**9",
    "'a' * 10**9",
    "{}",
    ":",
    ".",
    "if",
    "else",
]
conditions = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join),
)


def _program(condition: str) -> str:
    return json.dumps(
        {
            "program": "Fuzz",
            "currency": "EUR",
            "timezone": "Europe/Berlin",
            "rules": [
                {"id": "r", "for_each": "item", "where": condition, "earn": {"per_currency_unit": 1}},
                {"id": "t", "when": condition, "earn": {"points": 5}},
            ],
        }
    )


@FUZZ
@given(condition=conditions)
def test_any_condition_is_checked_or_refused_with_a_program_error(condition: str) -> None:
    try:
        program = rules.load_program(_program(condition))
    except rules.ProgramError:
        return
    basket = rules.Transaction(
        time=datetime(2026, 11, 3, 15, tzinfo=UTC), items=(rules.Item("LATTE", 450, 2, "coffee", ("hot",)),)
    )
    with contextlib.suppress(rules.EvaluationError):
        rules.evaluate(program, basket)


# --- card codes and customer tokens ----------------------------------------------------------------

TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_=./:?#%"
codes = st.one_of(
    st.text(max_size=400),
    st.text(alphabet=TOKEN_ALPHABET, max_size=200),
    st.text(alphabet=TOKEN_ALPHABET, max_size=60).map(lambda t: f"https://bonus.example.com/c/{t}"),
    st.binary(max_size=60).map(lambda b: b.hex()),
    st.from_regex(r"[0-9 ]{12,24}", fullmatch=True),
)


@FUZZ
@given(code=codes)
def test_any_card_code_or_token_is_read_or_refused_with_a_card_error(secrets: Secrets, code: str) -> None:
    now = datetime.now(UTC)
    with contextlib.suppress(CardError, LoyaltyError):
        lookup.parse_code(code, secrets, 1, now=now)
    with contextlib.suppress(CardError, LoyaltyError):
        lookup.verify_customer_token(code, secrets, now=now)


# --- the import reader -------------------------------------------------------------------------------

CSV_HEADER = "outlet,external_id,card,occurred_at,sku,category,quantity,unit_price,tags\n"
cells = st.one_of(
    st.text(max_size=30), st.sampled_from(["", "1", "-1", "1e9", "2026-03-01T10:00:00Z", "x,y", '"'])
)
csv_files = st.one_of(
    st.text(max_size=2000),
    st.lists(st.lists(cells, min_size=0, max_size=11).map(",".join), max_size=20).map(
        lambda rows: CSV_HEADER + "\n".join(rows)
    ),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
jsonl_files = st.one_of(
    st.text(max_size=2000),
    st.lists(json_values.map(json.dumps), max_size=20).map("\n".join),
)


def _read(text: str, fmt: str) -> Iterator[Any]:
    try:
        yield from importer.read_file(io.StringIO(text), fmt)
    except importer.ImportFileError:
        return


@FUZZ
@given(text=csv_files)
def test_any_csv_file_is_read_into_purchases_and_row_errors(text: str) -> None:
    for parsed in _read(text, "csv"):
        assert isinstance(parsed, (importer.Purchase, importer.RowError))


@FUZZ
@given(text=jsonl_files)
def test_any_jsonl_file_is_read_into_purchases_and_row_errors(text: str) -> None:
    for parsed in _read(text, "jsonl"):
        assert isinstance(parsed, (importer.Purchase, importer.RowError))


# --- request bodies ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=("sqlite", "postgresql"))
def fuzz_api(request: pytest.FixtureRequest, secrets: Secrets) -> Iterator[Any]:
    url = str(request.getfixturevalue(f"{request.param}_url"))
    with open_world(url, secrets) as api:
        yield api


ENDPOINTS = [
    ("/v1/till/transactions", "cashier"),
    ("/v1/till/redemptions", "cashier"),
    ("/v1/till/lookup", "cashier"),
    ("/v1/till/activations", "cashier"),
    ("/v1/admin/partners", "admin"),
    ("/v1/admin/keys", "admin"),
]
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"card": st.one_of(st.text(max_size=40), st.integers()), "external_id": json_values},
        optional={
            "items": st.lists(
                st.dictionaries(
                    st.sampled_from(["sku", "quantity", "unit_price", "category", "tags"]), json_values
                ),
                max_size=3,
            ),
            "occurred_at": st.one_of(st.text(max_size=30), st.integers()),
            "reward": json_values,
            "name": json_values,
            "code": json_values,
            "role": json_values,
        },
    ),
)


@FUZZ
@given(body=bodies, endpoint=st.sampled_from(ENDPOINTS))
def test_any_request_body_gets_an_answer_never_a_server_error(
    fuzz_api: Any, body: Any, endpoint: tuple[str, str]
) -> None:
    import uuid

    path, role = endpoint
    headers = fuzz_api.a.headers(role, **{"Idempotency-Key": uuid.uuid4().hex})
    r = fuzz_api.client.post(
        path, content=json.dumps(body).encode(), headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status_code < 500, f"{r.status_code} {r.text[:300]} for {body!r}"
    if r.status_code >= 400:
        problem = r.json()
        assert (
            r.headers["content-type"].startswith("application/problem+json")
            and problem["status"] == r.status_code
        )
