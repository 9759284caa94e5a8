"""Differential tests: the compiled engine and the tree-walking reference interpreter must agree.

A hypothesis strategy writes random *valid* program documents (every rule kind, item and transaction
level, typed conditions built from rules/schema.py and the function set, limits, budgets, validity
windows, partner/outlet filters, tiers, rounding modes) and random baskets, members and outlets.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rules
from rules.interpret import Interpreted, interpret

SKUS = ["A", "B", "WASH", "Kaffee"]
CATEGORIES = ["coffee", "organic", "tobacco", "bakery", ""]
TAGS = ["x", "y", "vegan"]
TIERS = ["bronze", "silver", "gold"]
PARTNERS = ["P1", "P2"]
OUTLETS = ["O1", "O2", "O3"]
CARDS = ["wash", "coffee"]
ZONES = ["Europe/Berlin", "UTC", "America/New_York", "Asia/Kolkata"]
STRINGS = [*SKUS, *CATEGORIES, *TAGS, *TIERS, "mon", "tue", "sat", "purchase", "signup", "till", "app"]

# ---------------------------------------------------------------------------------------------------
# Conditions, typed by construction


def _number(draw: Any, item: bool, depth: int) -> str:
    leaves = [
        "tx.total",
        "member.points",
        "member.visits",
        "member.days_since_last_visit",
        "member.days_since_enrolled",
        "hour(tx.time)",
        "count(tx.items)",
        "days_since(tx.time)",
    ]
    if item:
        leaves += ["item.quantity", "item.unit_price", "item.amount", "count(item.tags)"]
    literal = st.one_of(st.integers(-5, 3000).map(str), st.sampled_from(["0.5", "1.25", "2.0", "10", "0.01"]))
    if depth <= 0 or draw(st.booleans()):
        return draw(st.one_of(literal, st.sampled_from(leaves)))
    kind = draw(st.sampled_from(["arith", "div", "neg", "sum", "minmax", "minmax_list", "count2", "days"]))
    sub = lambda: _number(draw, item, depth - 1)  # noqa: E731
    if kind == "arith":
        return f"({sub()} {draw(st.sampled_from(['+', '-', '*']))} {sub()})"
    if kind == "div":
        return (
            f"({sub()} {draw(st.sampled_from(['/', '%']))} {draw(st.sampled_from(['2', '3', '0.5', '7']))})"
        )
    if kind == "neg":
        return f"-({sub()})"
    if kind == "sum":
        return f"sum(tx.items.{draw(st.sampled_from(['amount', 'quantity', 'unit_price']))})"
    if kind == "minmax":
        return f"{draw(st.sampled_from(['min', 'max']))}({sub()}, {sub()})"
    if kind == "minmax_list":
        return f"{draw(st.sampled_from(['min', 'max']))}(tx.items.amount)"
    if kind == "count2":
        return f"count({_string_list(draw, item)}, {_string(draw, item, depth - 1)})"
    return f'days_since(date("{draw(st.dates(date(2025, 6, 1), date(2027, 6, 1))).isoformat()}"))'


def _string(draw: Any, item: bool, depth: int) -> str:
    leaves = [
        "lower(member.tier)",
        "member.id",
        "outlet.id",
        "outlet.partner",
        "event.kind",
        "tx.channel",
        "weekday(tx.time)",
    ]
    if item:
        leaves += ["item.sku", "item.category"]
    if depth <= 0 or draw(st.booleans()):
        return draw(st.one_of(st.sampled_from(STRINGS).map(json.dumps), st.sampled_from(leaves)))
    if draw(st.booleans()):
        return f"lower({_string(draw, item, depth - 1)})"
    return f"({_string(draw, item, depth - 1)} + {_string(draw, item, depth - 1)})"


def _string_list(draw: Any, item: bool) -> str:
    choices = ["member.tags", "outlet.tags", "tx.items.category", "tx.items.sku"]
    if item:
        choices.append("item.tags")
    literal = (
        "["
        + ", ".join(json.dumps(s) for s in draw(st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3)))
        + "]"
    )
    return draw(st.sampled_from([*choices, literal]))


def _bool(draw: Any, item: bool, depth: int) -> str:
    kind = draw(
        st.sampled_from(
            [
                "cmp",
                "cmp",
                "chain",
                "scmp",
                "in",
                "substr",
                "any2",
                "anyb",
                "const",
                "date",
                "tier",
                "and",
                "or",
                "not",
            ]
            if depth > 0
            else ["cmp", "scmp", "in", "const", "date"]
        )
    )
    d = depth - 1
    if kind == "cmp":
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
        return f"{_number(draw, item, d)} {op} {_number(draw, item, d)}"
    if kind == "chain":
        return f"{_number(draw, item, d)} <= {_number(draw, item, d)} < {_number(draw, item, d)}"
    if kind == "scmp":
        op = draw(st.sampled_from(["==", "!=", "<", ">="]))
        return f"{_string(draw, item, d)} {op} {_string(draw, item, d)}"
    if kind == "in":
        return (
            f"{_string(draw, item, d)} {draw(st.sampled_from(['in', 'not in']))} {_string_list(draw, item)}"
        )
    if kind == "substr":
        return f"{_string(draw, item, d)} in {_string(draw, item, d)}"
    if kind == "any2":
        return f"any({_string_list(draw, item)}, {_string_list(draw, item)})"
    if kind == "anyb":
        return f"any([{_bool(draw, item, d)}, {_bool(draw, item, d)}])"
    if kind == "const":
        return draw(st.sampled_from(["True", "False"]))
    if kind == "tier":
        if draw(st.booleans()):
            tier = json.dumps(draw(st.sampled_from(TIERS)))
            return f"member.tier {draw(st.sampled_from(['==', '!=']))} {tier}"
        return f"member.tier {draw(st.sampled_from(['in', 'not in']))} {json.dumps(TIERS[1:])}"
    if kind == "date":
        op = draw(st.sampled_from(["<", ">=", "==", "!="]))
        return (
            f'date(tx.time) {op} date("{draw(st.dates(date(2025, 12, 1), date(2027, 1, 31))).isoformat()}")'
        )
    if kind == "not":
        return f"not ({_bool(draw, item, d)})"
    return f"({_bool(draw, item, d)}) {kind} ({_bool(draw, item, d)})"


# ---------------------------------------------------------------------------------------------------
# Programs


@st.composite
def programs(draw: Any) -> dict[str, Any]:
    """A random valid program document as plain data."""
    tiers = None
    if draw(st.booleans()):
        mults = draw(
            st.lists(st.sampled_from(["1", "1.25", "1.5", "2", "0.5", "1.1"]), min_size=3, max_size=3)
        )
        tiers = {
            "qualify_on": draw(st.sampled_from(["points", "spend", "visits"])),
            "levels": [
                {"name": n, "min": m, "earn_multiplier": x}
                for n, m, x in zip(TIERS, [0, 1000, 5000], mults, strict=True)
            ],
        }
    rewards = [{"code": "FREE-WASH", "name": "Free wash"}, {"code": "COFFEE", "name": "Coffee", "cost": 300}]
    card_shape = {
        card: (draw(st.integers(1, 6)), draw(st.sampled_from(["FREE-WASH", "COFFEE"]))) for card in CARDS
    }
    rules_: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(["base", "base", "multiplier", "multiplier", "points", "stamp"]))
        item = draw(st.booleans()) if kind != "base" else draw(st.sampled_from([True, True, False]))
        rule: dict[str, Any] = {"id": f"r{i}", "for_each": "item" if item else "transaction"}
        if draw(st.integers(0, 2)) == 0:
            rule["when"] = _bool(draw, False, 2)
        if item and draw(st.integers(0, 2)) > 0:
            rule["where"] = _bool(draw, True, 2)
        if kind == "base":
            rule["earn"] = {"per_currency_unit": draw(st.sampled_from(["1", "2", "0.5", "0.1", "3.33", "0"]))}
        elif kind == "multiplier":
            stacking = draw(st.sampled_from(["additive", "max", "exclusive"]))
            low = ["0", "0.5"] if stacking != "additive" else []
            rule["earn"] = {"multiplier": draw(st.sampled_from([*low, "1", "1.5", "2", "3", "2.25"]))}
            if stacking != "additive" or draw(st.booleans()):
                rule["stacking"] = stacking
        elif kind == "points":
            rule["earn"] = {"points": draw(st.sampled_from([0, 1, 5, 50, 200]))}
        else:
            card = draw(st.sampled_from(CARDS))
            reward_at, reward = card_shape[card]
            count: Any = draw(
                st.sampled_from(
                    [1, 2, "item.quantity" if item else "count(tx.items)", "sum(tx.items.quantity)"]
                )
            )
            rule["stamp"] = {"card": card, "count": count, "reward_at": reward_at, "reward": reward}
        if draw(st.integers(0, 3)) == 0:
            limit = {
                k: draw(st.integers(1, 3))
                for k in ("per_member", "per_day", "per_transaction")
                if draw(st.booleans())
            }
            if limit:
                rule["limit"] = limit
        if kind != "stamp" and draw(st.integers(0, 3)) == 0:
            rule["budget"] = draw(st.integers(1, 300))
        if draw(st.integers(0, 4)) == 0:
            start = draw(st.dates(date(2025, 12, 1), date(2026, 12, 1)))
            if draw(st.booleans()):
                rule["valid_from"] = start.isoformat()
            else:
                rule["valid_from"] = f"{start.isoformat()}T{draw(st.integers(0, 23)):02d}:30:00+01:00"
            if draw(st.booleans()):
                # Two days on at least: a date is local midnight in the program's zone, which one day
                # after a late valid_from (23:30+01:00) can still lie before it (Asia/Kolkata).
                rule["valid_until"] = (start + timedelta(days=draw(st.integers(2, 200)))).isoformat()
        if draw(st.integers(0, 5)) == 0:
            rule["partners"] = draw(st.lists(st.sampled_from(PARTNERS), min_size=1, max_size=2, unique=True))
        if draw(st.integers(0, 5)) == 0:
            rule["outlets"] = draw(st.lists(st.sampled_from(OUTLETS), min_size=1, max_size=2, unique=True))
        rules_.append(rule)
    doc: dict[str, Any] = {
        "program": "Random",
        "currency": draw(st.sampled_from(["EUR", "EUR", "JPY", "KWD"])),
        "timezone": draw(st.sampled_from(ZONES)),
        "points": {"rounding": draw(st.sampled_from(["floor", "half_up", "ceil"]))},
        "rewards": rewards,
        "rules": rules_,
    }
    if tiers:
        doc["tiers"] = tiers
    return doc


# ---------------------------------------------------------------------------------------------------
# Inputs

_zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
_instants = st.datetimes(datetime(2025, 12, 1), datetime(2027, 1, 31), timezones=_zones)
_items = st.builds(
    rules.Item,
    sku=st.sampled_from(SKUS),
    unit_price=st.one_of(st.integers(0, 5000), st.sampled_from([1, 99, 333, 1005])),
    quantity=st.integers(0, 5),
    category=st.sampled_from(CATEGORIES),
    tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True).map(tuple),
)
_transactions = st.builds(
    rules.Transaction,
    time=_instants,
    items=st.lists(_items, max_size=6).map(tuple),
    channel=st.sampled_from(["till", "app"]),
)
_uses = st.dictionaries(
    st.sampled_from([f"r{i}" for i in range(7)]), st.tuples(st.integers(0, 3), st.integers(0, 2)), max_size=4
)


def _members(tiered: bool) -> st.SearchStrategy[rules.Member]:
    return st.builds(
        rules.Member,
        id=st.sampled_from(["m1", "m2"]),
        tier=st.sampled_from([None, *TIERS]) if tiered else st.none(),
        points=st.integers(0, 6000),
        visits=st.integers(0, 50),
        last_visit_at=st.one_of(st.none(), _instants),
        enrolled_at=st.one_of(st.none(), _instants),
        tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True).map(tuple),
        stamps=st.dictionaries(st.sampled_from(CARDS), st.integers(0, 9), max_size=2),
        rule_uses=_uses,
    )


_outlets = st.builds(
    rules.Outlet,
    id=st.sampled_from(OUTLETS),
    partner=st.sampled_from(PARTNERS),
    tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True).map(tuple),
)
_events = st.builds(rules.Event, kind=st.sampled_from(["purchase", "signup"]))
_budgets = st.dictionaries(st.sampled_from([f"r{i}" for i in range(7)]), st.integers(0, 400), max_size=3)


def _figures(result: rules.Result) -> Interpreted:
    return Interpreted(
        total=result.total,
        rule_points={r.rule: r.points for r in result.rules},
        rule_applications={r.rule: r.applications for r in result.rules},
        item_points=tuple(i.points for i in result.items),
        stamps=dict(result.stamps),
        rewards_unlocked=result.rewards_unlocked,
    )


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """What ``fn`` returns, or the class of the EvaluationError it raised (both sides must agree)."""
    try:
        return fn(*args, **kwargs)
    except rules.EvaluationError as exc:
        return type(exc)


@st.composite
def cases(draw: Any) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    doc = draw(programs())
    tiered = "tiers" in doc
    inputs = draw(
        st.lists(
            st.tuples(
                _transactions, _members(tiered), _outlets, _events, _budgets, st.one_of(st.none(), _instants)
            ),
            min_size=1,
            max_size=4,
        )
    )
    return doc, inputs


@settings(
    max_examples=int(os.environ.get("RULES_DIFF_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cases())
def test_compiled_engine_and_interpreter_agree(case: tuple[dict[str, Any], list[tuple[Any, ...]]]) -> None:
    """On any valid program and basket the compiled engine gives exactly the interpreter's figures."""
    doc, inputs = case
    program = rules.load_program_data(doc)
    compiled = rules.compile_program(program)
    for tx, member, outlet, event, budgets, now in inputs:
        args = (tx, member, outlet, event)
        got = _outcome(compiled.evaluate, *args, now=now, budgets=budgets)
        want = _outcome(interpret, program, *args, now=now, budgets=budgets)
        if isinstance(got, rules.Result):
            got = _figures(got)
        assert got == want, (doc, tx, member, outlet, event, budgets, now)
        if isinstance(got, Interpreted):
            assert (
                sum(got.item_points) + sum(p for r, p in got.rule_points.items() if _tx_points_rule(doc, r))
                == got.total
            )


def _tx_points_rule(doc: dict[str, Any], rule_id: str) -> bool:
    rule = next(r for r in doc["rules"] if r["id"] == rule_id)
    return rule.get("for_each") == "transaction" and "points" in rule.get("earn", {})


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_explain_changes_no_figure(case: tuple[dict[str, Any], list[tuple[Any, ...]]]) -> None:
    """Evaluating with explain=True gives the same figures as without, and explains every rule."""
    doc, inputs = case
    program = rules.load_program_data(doc)
    for tx, member, outlet, event, budgets, now in inputs:
        args = (program, tx, member, outlet, event)
        plain = _outcome(rules.evaluate, *args, now=now, budgets=budgets)
        traced = _outcome(rules.evaluate, *args, now=now, budgets=budgets, explain=True)
        if not isinstance(plain, rules.Result):
            assert plain == traced
            continue
        assert isinstance(traced, rules.Result)
        assert _figures(plain) == _figures(traced)
        assert plain.as_dict() | {"explanation": []} == traced.as_dict() | {"explanation": []}
        assert [e.rule for e in traced.explanation] == [r["id"] for r in doc["rules"]]
        for e, rule in zip(traced.explanation, doc["rules"], strict=True):
            assert e.matched == (e.applications > 0)
            if rule.get("for_each") == "item":
                # An item rule applies once per item, and the explanation says on which items.
                assert sum(d.status == "applied" for d in e.items) == e.applications


@pytest.mark.parametrize("rounding", ["floor", "half_up", "ceil"])
def test_interpreter_matches_engine_on_the_demo(rounding: str) -> None:
    """The interpreter agrees with the engine on the demo program under every rounding mode."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "examples" / "kaffeehaus.yaml").read_text()
    program = rules.load_program(text.replace("rounding: floor", f"rounding: {rounding}"))
    tx = rules.Transaction(
        datetime(2026, 3, 3, 15, 10, tzinfo=UTC),
        (rules.Item("A", 1234, 2, "organic"), rules.Item("WASH", 999, 3), rules.Item("B", 333, 1, "bakery")),
    )
    member = rules.Member(tier="silver", stamps={"wash": 8})
    assert _figures(rules.evaluate(program, tx, member)) == interpret(program, tx, member)
    assert interpret(program, tx, member).rule_points["base"] == Decimal("57.98")
