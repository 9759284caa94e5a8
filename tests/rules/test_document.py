"""The program document: loading YAML or JSON, the model's fields, and positioned validation errors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

import rules
from rules.document import MAX_DOCUMENT_BYTES
from rules.errors import Issue

DEMO = Path(__file__).parents[2] / "examples" / "kaffeehaus.yaml"
HEAD = "program: T\ncurrency: EUR\ntimezone: Europe/Berlin\n"

FULL = """\
program: Full Program
currency: CHF
timezone: Europe/Zurich
public_base_url: https://bonus.example.ch
points:
  expire_after_months: 36
  pending_days: 30
  rounding: half_up
tiers:
  qualify_on: spend
  window_months: 6
  levels:
    - {name: blue, min: 0}
    - {name: silver, min: 500.50, earn_multiplier: 1.1}
rewards:
  - {code: MUG, name: A mug, cost: 900, min_tier: silver}
  - {code: WASH, name: Free wash}
rules:
  - id: base
    description: Two points per franc
    for_each: item
    where: item.category != "tobacco"
    earn: {per_currency_unit: 2}
    budget: 100000
    valid_from: 2026-01-01
    valid_until: 2027-01-01T00:00:00+01:00
    partners: [P1, P2]
    outlets: [O1]
  - id: promo
    when: weekday(tx.time) == "sat"
    earn: {multiplier: 1.5}
    stacking: max
    limit: {per_member: 10, per_day: 1, per_transaction: 1}
  - id: hello
    earn: {points: 50}
  - id: wash
    for_each: item
    where: item.sku == "WASH"
    stamp: {card: wash, count: item.quantity, reward_at: 5, reward: WASH}
"""


def issues(text: str) -> tuple[Issue, ...]:
    with pytest.raises(rules.ProgramError) as caught:
        rules.load_program(text)
    return caught.value.issues


def only(text: str) -> Issue:
    [issue] = issues(text)
    return issue


def column_of(document: str, needle: str) -> tuple[int, int]:
    """(line, column), 1-based, of the first ``needle`` in ``document``."""
    for number, line in enumerate(document.splitlines(), 1):
        if needle in line:
            return number, line.index(needle) + 1
    raise AssertionError(needle)


# ---------------------------------------------------------------------------------------------------
# Loading


def test_every_field_is_read() -> None:
    """Every field of the document model is read from YAML with its value and type."""
    d = rules.load_program(FULL).document
    assert (d.program, d.currency, d.timezone, d.public_base_url) == (
        "Full Program",
        "CHF",
        "Europe/Zurich",
        "https://bonus.example.ch",
    )
    assert (d.points.expire_after_months, d.points.pending_days, d.points.rounding) == (36, 30, "half_up")
    assert d.tiers is not None
    assert (d.tiers.qualify_on, d.tiers.window_months) == ("spend", 6)
    assert [(lv.name, lv.min, lv.earn_multiplier) for lv in d.tiers.levels] == [
        ("blue", 0, 1),
        ("silver", Decimal("500.50"), Decimal("1.1")),
    ]
    assert [(r.code, r.name, r.cost, r.min_tier) for r in d.rewards] == [
        ("MUG", "A mug", 900, "silver"),
        ("WASH", "Free wash", None, None),
    ]
    base, promo, hello, wash = d.rules
    assert (base.id, base.description, base.for_each, base.where) == (
        "base",
        "Two points per franc",
        "item",
        'item.category != "tobacco"',
    )
    assert (
        base.earn is not None and base.earn.per_currency_unit == 2 and base.earn.kind == "per_currency_unit"
    )
    assert base.budget == 100000
    assert base.valid_from == date(2026, 1, 1)
    assert base.valid_until == datetime(2027, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert (base.partners, base.outlets) == (["P1", "P2"], ["O1"])
    assert promo.when == 'weekday(tx.time) == "sat"' and promo.for_each == "transaction"
    assert promo.earn is not None and promo.earn.multiplier == Decimal("1.5") and promo.stacking == "max"
    assert promo.limit is not None
    assert (promo.limit.per_member, promo.limit.per_day, promo.limit.per_transaction) == (10, 1, 1)
    assert hello.earn is not None and hello.earn.points == 50 and hello.stacking == "additive"
    assert wash.stamp is not None
    assert (wash.stamp.card, wash.stamp.count, wash.stamp.reward_at, wash.stamp.reward) == (
        "wash",
        "item.quantity",
        5,
        "WASH",
    )


def test_defaults() -> None:
    """Left-out fields take documented defaults: floor rounding, no pending days, whole transactions."""
    d = rules.load_program(HEAD + "rules: [{id: r, earn: {points: 1}}]\n").document
    assert (d.points.rounding, d.points.pending_days, d.points.expire_after_months) == ("floor", 0, None)
    assert (d.tiers, d.rewards) == (None, [])
    [r] = d.rules
    assert (r.for_each, r.stacking, r.limit, r.budget, r.partners, r.outlets) == (
        "transaction",
        "additive",
        None,
        None,
        None,
        None,
    )


def test_yaml_and_json_give_the_same_program() -> None:
    """The same document in YAML and in JSON is the same program version (same digest)."""
    data = yaml.safe_load(DEMO.read_text())
    as_json = json.dumps(data, default=str)
    assert rules.load_program(as_json).digest == rules.load_program(DEMO.read_text()).digest
    assert rules.load_program_data(json.loads(as_json)).digest == rules.load_program(as_json).digest


def test_yaml_flow_document_is_yaml_not_broken_json() -> None:
    """A YAML document written in flow style ({program: X, ...}) loads like any YAML."""
    program = rules.load_program(
        "{program: T, currency: EUR, timezone: UTC, rules: [{id: r, earn: {points: 1}}]}"
    )
    assert program.rules[0].id == "r"


def test_decimals_are_exact() -> None:
    """Decimal fields keep the written value exactly, never going through a float."""
    program = rules.load_program(HEAD + "rules: [{id: r, for_each: item, earn: {per_currency_unit: 0.1}}]\n")
    assert program.rules[0].amount == Decimal("0.1")
    as_json = (
        '{"program": "T", "currency": "EUR", "timezone": "UTC", '
        '"rules": [{"id": "r", "for_each": "item", "earn": {"per_currency_unit": 0.1}}]}'
    )
    assert rules.load_program(as_json).rules[0].amount == Decimal("0.1")


def test_digest_ignores_formatting_but_not_content() -> None:
    """The version digest depends on the document's content, not on comments or layout."""
    text = DEMO.read_text()
    same = rules.load_program("# a comment\n" + text.replace("{name: gold,   min", "{name: gold, min"))
    changed = rules.load_program(text.replace("cost: 300", "cost: 301"))
    assert same.digest == rules.load_program(text).digest
    assert changed.digest != same.digest


def test_a_dumped_document_loads_again() -> None:
    """A document dumped from the model (all defaults spelled out) loads back to the same version."""
    program = rules.load_program(FULL)
    dumped = program.document.model_dump(mode="json")
    assert rules.load_program_data(dumped).digest == program.digest


def test_plain_dates_in_json_are_dates() -> None:
    """valid_from "2026-05-01" in JSON is a plain date (local midnight), not a naive datetime."""
    data = {
        "program": "T",
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "rules": [{"id": "r", "earn": {"points": 1}, "valid_from": "2026-05-01"}],
    }
    program = rules.load_program_data(data)
    assert program.rules[0].valid_from == datetime(2026, 4, 30, 22, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------------
# Positioned errors


def test_error_names_path_line_and_column() -> None:
    """A bad value is reported with its path and the line and column of the value."""
    doc = HEAD + "points:\n  rounding: nearest\n"
    issue = only(doc)
    assert issue.path == "points.rounding"
    assert (issue.line, issue.column) == column_of(doc, "nearest")
    assert issue.source_line == "  rounding: nearest"
    assert "floor" in issue.message


def test_misspelled_key_gets_a_hint_at_the_key() -> None:
    """A misspelled key is reported at the key, with "did you mean" the right one."""
    doc = HEAD + "rules:\n  - id: r\n    for_eahc: item\n    earn: {points: 1}\n"
    issue = only(doc)
    assert issue.message == "unknown field 'for_eahc'"
    assert issue.hint == "did you mean for_each?"
    assert (issue.line, issue.column) == column_of(doc, "for_eahc")


@pytest.mark.parametrize(
    ("snippet", "key", "hint"),
    [
        ("rewardz: []\n", "rewardz", "did you mean rewards?"),
        ("pionts: {rounding: floor}\n", "pionts", "did you mean points?"),
        ("points: {roundng: floor}\n", "roundng", "did you mean rounding?"),
        (
            "tiers: {levels: [{name: a, min: 0, earn_multiplyer: 2}]}\n",
            "earn_multiplyer",
            "did you mean earn_multiplier?",
        ),
        ("rewards: [{code: A, name: A, cots: 5}]\n", "cots", "did you mean cost?"),
        ("rules: [{id: r, earn: {points: 1}, limit: {per_dya: 1}}]\n", "per_dya", "did you mean per_day?"),
        ("rules: [{id: r, earn: {point: 1}}]\n", "point", "did you mean points?"),
    ],
)
def test_misspelled_keys_anywhere(snippet: str, key: str, hint: str) -> None:
    """Misspelled keys at every level of the document get a "did you mean" hint."""
    doc = HEAD + snippet
    found = issues(doc)
    issue = next(i for i in found if i.message == f"unknown field {key!r}")
    assert issue.hint == hint
    assert (issue.line, issue.column) == column_of(doc, key)


@pytest.mark.parametrize(
    ("snippet", "path", "needle"),
    [
        ("currency: euro\n", "currency", "euro"),
        ("timezone: Mars/Olympus\n", "timezone", "Mars/Olympus"),
        ("points: {pending_days: -1}\n", "points.pending_days", "-1"),
        ("rewards: [{code: A, name: A, cost: 0}]\n", "rewards[0].cost", "0}"),
        ("rewards: [{code: 'has space', name: A}]\n", "rewards[0].code", "'has space'"),
        ("rules: [{id: r, earn: {per_currency_unit: -1}}]\n", "rules[0].earn.per_currency_unit", "-1"),
        ("rules: [{id: r, earn: {points: 1}, budget: 0}]\n", "rules[0].budget", "0}"),
        ("rules: [{id: r, earn: {points: 1}, for_each: line}]\n", "rules[0].for_each", "line"),
    ],
)
def test_bad_values(snippet: str, path: str, needle: str) -> None:
    """Out-of-range or malformed values are errors at the value's position."""
    doc = (HEAD + snippet).replace("timezone: Europe/Berlin\ntimezone", "timezone")
    doc = doc.replace("currency: EUR\ncurrency", "currency")
    issue = next(i for i in issues(doc) if i.path == path)
    assert (issue.line, issue.column) == column_of(doc, needle)


def test_yaml_syntax_error_has_a_position() -> None:
    """Broken YAML is a syntax error with line and column."""
    issue = only(HEAD + "rules:\n  - {id: r, earn: {points: 1}\n")
    assert issue.message.startswith("syntax error")
    assert issue.line is not None and issue.column is not None


def test_json_syntax_error() -> None:
    """Broken JSON is a syntax error with a position."""
    issue = only('{"program": "T",\n "currency": "EUR",, "timezone": "UTC"}')
    assert issue.message.startswith("syntax error")
    assert issue.line == 2


@pytest.mark.parametrize("text", ["", "# nothing\n", "- a list\n", "just text\n"])
def test_documents_that_are_no_mapping(text: str) -> None:
    """An empty document or one that is not a mapping is refused with a clear message."""
    assert only(text).message in (
        "the document is empty",
        "the document must be a mapping of program, currency, timezone, ...",
    )


def test_missing_required_fields() -> None:
    """program, currency and timezone are required; a missing field points at the mapping lacking it."""
    found = issues("rules: []\n")
    assert {i.path for i in found} == {"program", "currency", "timezone"}
    assert {(i.line, i.column) for i in found} == {(1, 1)}
    issue = only(HEAD + "rewards:\n  - {code: A}\n")
    assert (issue.path, issue.message, issue.line, issue.column) == (
        "rewards[0].name",
        "Field required",
        5,
        5,
    )


def test_aliases_and_anchors_are_refused_with_position() -> None:
    """YAML anchors and aliases are refused, pointing at the alias."""
    doc = HEAD + "rewards:\n  - &r {code: A, name: A}\n  - *r\n"
    issue = only(doc)
    assert "aliases are not allowed" in issue.message
    assert (issue.line, issue.column) == column_of(doc, "*r")


def test_oversized_document_is_refused() -> None:
    """A document larger than the cap is refused before parsing."""
    doc = HEAD + "# " + "x" * MAX_DOCUMENT_BYTES + "\n"
    assert "larger than" in only(doc).message


def test_naive_valid_from_is_refused() -> None:
    """A valid_from with a time but no offset is refused: instants must be unambiguous."""
    issue = only(HEAD + "rules: [{id: r, earn: {points: 1}, valid_from: '2026-05-01T10:00:00'}]\n")
    assert "valid_from needs a timezone offset" in issue.message


def test_valid_until_must_follow_valid_from() -> None:
    """A validity window must not end before it starts."""
    issue = only(
        HEAD + "rules: [{id: r, earn: {points: 1}, valid_from: 2026-05-02, valid_until: 2026-05-01}]\n"
    )
    assert (issue.path, issue.message) == ("rules[0].valid_until", "valid_until must be after valid_from")


def test_duplicate_rule_ids() -> None:
    """Two rules with one id are an error at the second one."""
    doc = HEAD + "rules:\n  - {id: r, earn: {points: 1}}\n  - {id: r, earn: {points: 2}}\n"
    issue = only(doc)
    assert issue.message == "duplicate rule id 'r' (also rules[0])"
    assert (issue.path, issue.line) == ("rules[1].id", 6)


def test_duplicate_reward_codes() -> None:
    """Two rewards with one code are an error."""
    issue = only(HEAD + "rewards: [{code: A, name: A}, {code: A, name: B}]\n")
    assert (issue.path, issue.message) == ("rewards[1].code", "duplicate reward code 'A'")


def test_unknown_reward_in_stamp() -> None:
    """A stamp card's reward must be one of the program's rewards; a close one is suggested."""
    doc = HEAD + (
        "rewards: [{code: FREE-WASH, name: W}]\n"
        "rules: [{id: s, stamp: {card: c, reward_at: 5, reward: FREE-WAHS}}]\n"
    )
    issue = only(doc)
    assert (issue.message, issue.hint) == ("unknown reward 'FREE-WAHS'", "did you mean FREE-WASH?")
    assert (issue.line, issue.column) == column_of(doc, "FREE-WAHS")


def test_stamp_card_fills_one_way() -> None:
    """Rules stamping the same card must agree on reward_at and reward."""
    doc = HEAD + (
        "rewards: [{code: A, name: A}]\nrules:\n"
        "  - {id: s1, stamp: {card: c, reward_at: 5, reward: A}}\n"
        "  - {id: s2, stamp: {card: c, reward_at: 6, reward: A}}\n"
    )
    assert "stamp card 'c' has a different reward_at or reward" in only(doc).message


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ("[{name: a, min: 10}]", "the first tier level must have min: 0"),
        ("[{name: a, min: 0}, {name: b, min: 100}, {name: c, min: 100}]", "strictly increasing min"),
        ("[{name: a, min: 0}, {name: b, min: 100}, {name: c, min: 50}]", "strictly increasing min"),
        ("[{name: a, min: 0}, {name: a, min: 100}]", "tier names must be unique"),
        ("[]", "at least 1"),
    ],
)
def test_tier_ordering(levels: str, message: str) -> None:
    """Tier levels start at 0, rise strictly, and have unique names."""
    issue = only(HEAD + f"tiers: {{levels: {levels}}}\n")
    assert message in issue.message
    assert issue.path.startswith("tiers")


def test_reward_min_tier_must_exist() -> None:
    """A reward's minimum tier must be one of the program's tiers."""
    doc = HEAD + "tiers: {levels: [{name: gold, min: 0}]}\nrewards: [{code: A, name: A, min_tier: glod}]\n"
    issue = only(doc)
    assert (issue.message, issue.hint) == ("unknown tier 'glod'", "did you mean gold?")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{id: r}", "a rule needs exactly one effect"),
        (
            "{id: r, earn: {points: 1}, stamp: {card: c, reward_at: 1, reward: A}}",
            "a rule needs exactly one effect",
        ),
        ("{id: r, earn: {points: 1, multiplier: 2}}", "earn needs exactly one of"),
        ("{id: r, earn: {}}", "earn needs exactly one of"),
        ("{id: r, where: 'item.sku == \"A\"', earn: {points: 1}}", "where filters items"),
        ("{id: r, earn: {points: 1}, stacking: max}", "stacking applies only to multiplier rules"),
        ("{id: r, earn: {multiplier: 0.5}}", "an additive multiplier must be at least 1"),
        ("{id: r, stamp: {card: c, reward_at: 1, reward: A}, budget: 5}", "a stamp rule gives none"),
        ("{id: r, stamp: {card: c, reward_at: 1, reward: A, count: 0}}", "count must be at least 1"),
        ("{id: r, stamp: {card: c, reward_at: 1, reward: A, count: true}}", "count must be a whole number"),
    ],
)
def test_rule_shape(rule: str, message: str) -> None:
    """A rule has exactly one effect, and its options must fit that effect."""
    found = issues(HEAD + "rewards: [{code: A, name: A}]\nrules: [" + rule + "]\n")
    assert any(message in i.message for i in found), found


def test_lower_multipliers_are_fine_when_they_do_not_stack() -> None:
    """Exclusive and max multipliers may lower points (x0 on sale items), additive ones may not."""
    rules.load_program(
        HEAD + "rules: [{id: r, earn: {multiplier: 0}, stacking: exclusive},"
        " {id: s, earn: {multiplier: 0.5}, stacking: max}]\n"
    )


def test_demo_program_is_valid() -> None:
    """The bundled demo program loads and checks."""
    program = rules.load_program(DEMO.read_text())
    assert [r.id for r in program.rules] == [
        "base",
        "organic-double",
        "tuesday-afternoon",
        "win-back",
        "car-wash-stamps",
    ]
    assert [r.kind for r in program.rules] == ["base", "multiplier", "multiplier", "points", "stamp"]


def test_issue_formats_as_one_line() -> None:
    """An issue formats as file:line:col: path: message (hint), one line per problem."""
    issue = Issue("unknown field item.categroy", "rules[0].where", 7, 12, "did you mean item.category?")
    assert issue.format("p.yaml") == (
        "p.yaml:7:12: rules[0].where: unknown field item.categroy (did you mean item.category?)"
    )
    assert issue.as_dict()["line"] == 7
    assert str(rules.ProgramError([issue, issue])).endswith("(and 1 more)")
