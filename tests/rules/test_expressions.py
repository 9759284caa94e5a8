"""The condition language: what parses, what type-checks, and where errors point."""

from __future__ import annotations

import pytest

import rules
from rules import check as ir
from rules.errors import Issue
from rules.schema import BOOL, NUMBER, STRING

HEAD = "program: T\ncurrency: EUR\ntimezone: Europe/Berlin\n"
TIERS = "tiers:\n  levels: [{name: bronze, min: 0}, {name: silver, min: 100}]\n"
REWARDS = "rewards: [{code: COFFEE, name: Coffee}]\n"


def issues(text: str) -> list[Issue]:
    """Every issue of a document, which must be invalid."""
    with pytest.raises(rules.ProgramError) as caught:
        rules.load_program(text)
    return list(caught.value.issues)


def one_rule(cond: str, *, item: bool = False, key: str | None = None) -> str:
    """A document with one rule whose condition line is ``<key>: <cond>`` (quoted as given)."""
    key = key or ("where" if item else "when")
    each = "    for_each: item\n" if item else ""
    return (
        HEAD
        + TIERS
        + "rules:\n  - id: r\n"
        + each
        + f"    {key}: {cond}\n"
        + ("    earn: {per_currency_unit: 1}\n" if item else "    earn: {points: 1}\n")
    )


def only(text: str) -> Issue:
    [issue] = issues(text)
    return issue


def line_of(document: str, needle: str) -> int:
    """1-based number of the first line of ``document`` holding ``needle``."""
    return next(i for i, text in enumerate(document.splitlines(), 1) if needle in text)


def column_of(document: str, needle: str, line: int) -> int:
    """1-based character column of ``needle`` on ``line`` of ``document``."""
    return document.splitlines()[line - 1].index(needle) + 1


def check(cond: str, *, item: bool = False) -> ir.Node:
    """The checked tree of a valid condition."""
    program = rules.load_program(one_rule(_quote(cond), item=item))
    node = program.rules[0].where if item else program.rules[0].when
    assert node is not None
    return node


def _quote(cond: str) -> str:
    return "'" + cond.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------------
# Unknown names, with positions and hints


def test_unknown_field_has_hint_line_and_column() -> None:
    """A misspelled field is reported with a "did you mean" hint at its exact line and column."""
    doc = one_rule('item.categroy == "organic"', item=True)
    issue = only(doc)
    assert issue.message == "unknown field item.categroy"
    assert issue.hint == "did you mean item.category?"
    assert issue.path == "rules[0].where"
    line = line_of(doc, "where:")
    assert (issue.line, issue.column) == (line, column_of(doc, "item.categroy", line))
    assert issue.source_line == doc.splitlines()[line - 1]
    assert issue.format("p.yaml") == (
        f"p.yaml:{line}:12: rules[0].where: unknown field item.categroy (did you mean item.category?)"
    )


def test_columns_count_characters_not_bytes() -> None:
    """With non-ASCII text earlier on the line, the column still counts characters."""
    doc = one_rule("\"item.sku == 'Grüße-Café' and item.categroy == 'x'\"", item=True)
    issue = only(doc)
    line = line_of(doc, "where:")
    assert (issue.line, issue.column) == (line, column_of(doc, "item.categroy", line))
    assert doc.splitlines()[line - 1][issue.column - 1 :].startswith("item.categroy")


def test_columns_in_a_flow_mapping_rule() -> None:
    """A rule written on one line in flow style gets the column of the mistake within that line."""
    doc = (
        HEAD
        + "rules:\n  - {id: r, for_each: item, where: \"lower(item.sku) == 'ä' and item.categroy == 'x'\", "
        "earn: {per_currency_unit: 1}}\n"
    )
    issue = only(doc)
    assert (issue.line, issue.column) == (5, column_of(doc, "item.categroy", 5))


def test_columns_skip_blanks_yaml_stripped() -> None:
    """Leading blanks inside a quoted condition do not shift the reported column."""
    doc = one_rule("'   item.categroy == ''x'''", item=True)
    assert only(doc).column == column_of(doc, "item.categroy", line_of(doc, "where:"))


@pytest.mark.parametrize("style", [">", "|", "plain", "double"])
def test_positions_in_multi_line_conditions(style: str) -> None:
    """In a condition spread over lines, the error points at the line and column where it is written."""
    first, second = "tx.total > 1 and", 'member.tierr == "x"'
    if style in (">", "|"):
        cond = f"{style}\n      {first}\n      {second}"
    elif style == "plain":
        cond = f"{first}\n      {second}"
    else:
        cond = f'"{first}\n      {second.replace(chr(34), chr(39))}"'
    doc = one_rule(cond)
    issue = only(doc)
    line = next(i for i, text in enumerate(doc.splitlines(), 1) if "member.tierr" in text)
    assert (issue.line, issue.column) == (line, column_of(doc, "member.tierr", line))
    assert issue.hint == "did you mean member.tier?"


def test_positions_in_json_documents() -> None:
    """JSON documents get line and column too."""
    doc = (
        '{"program": "T", "currency": "EUR", "timezone": "UTC",\n'
        ' "rules": [{"id": "r", "for_each": "item",\n'
        '            "where": "item.categroy == \\"x\\"", "earn": {"per_currency_unit": 1}}]}\n'
    )
    issue = only(doc)
    assert (issue.line, issue.column) == (3, column_of(doc, "item.categroy", 3))


def test_positions_without_a_text_are_relative_to_the_condition() -> None:
    """A document given as Python data has no lines: the column is within the condition."""
    data = {
        "program": "T",
        "currency": "EUR",
        "timezone": "UTC",
        "rules": [{"id": "r", "when": "tx.total > 1 and tx.totl > 2", "earn": {"points": 1}}],
    }
    with pytest.raises(rules.ProgramError) as caught:
        rules.load_program_data(data)
    [issue] = caught.value.issues
    assert (issue.line, issue.column, issue.hint) == (1, 18, "did you mean tx.total?")


@pytest.mark.parametrize(
    ("cond", "message", "hint"),
    [
        ("itm.sku == 'A'", "unknown name itm", "did you mean item?"),
        ("true", "unknown name true", "did you mean True?"),
        ("item == 'A'", "item is a record; read one of its fields", "for example item.sku"),
        ("weekday == 'mon'", "weekday is a function; call it", None),
        ("weekdy(tx.time) == 'mon'", "unknown function weekdy", "did you mean weekday?"),
        ("tx.itemz.sku == 'A'", "unknown field tx.itemz", "did you mean tx.items?"),
        ("count(tx.items.skuu) > 1", "unknown item field skuu", "did you mean tx.items.sku?"),
        ("member.tier == 'silvr'", "unknown tier 'silvr'", "did you mean silver?"),
        ("member.tier in ['bronze', 'gld']", "unknown tier 'gld'", None),
    ],
)
def test_unknown_names(cond: str, message: str, hint: str | None) -> None:
    """Unknown names, fields, functions and tier names are errors, with a hint where one is close."""
    issue = only(one_rule(_quote(cond), item=True))
    assert issue.message == message
    if hint is not None:
        assert issue.hint == hint


# ---------------------------------------------------------------------------------------------------
# Types


@pytest.mark.parametrize(
    ("cond", "message"),
    [
        ('tx.total == "5"', "cannot compare number with string using '=='"),
        ("item.sku > 5", "cannot compare string with number using '>'"),
        ("item.quantity + 'x' > 1", "'+' needs numbers, got number and string"),
        ("-item.sku == 'x'", "unary '-' needs a number, got string"),
        ("not item.quantity", "'not' needs true/false, got number"),
        ("item.quantity and True", "'and' needs true/false on both sides, got number"),
        ("True < False", "'<' does not order boolean values"),
        ("item.tags == ['a']", "'==' cannot compare lists"),
        ("item.quantity in ['a']", "'in' looks for number in a list of string"),
        ("item.sku in 5", "'in' needs a list (or a string) on its right, got number"),
        ("item.sku in ['a', 1]", "list mixes string and number"),
        ("item.sku in []", "empty list literal"),
        ("item.quantity / item.quantity > 1", "'/' needs a constant number on its right"),
        ("item.quantity % 0 > 1", "division by zero"),
        ("date(tx.time) == tx.time", "cannot compare date with datetime using '=='"),
        ("date('2026-13-01') < date(tx.time)", "not a date: '2026-13-01'"),
    ],
)
def test_type_errors(cond: str, message: str) -> None:
    """Operators and comparisons accept only values of the right types."""
    issue = only(one_rule(_quote(cond), item=True))
    assert issue.message.startswith(message), issue.message


def test_comparing_string_with_number_has_a_hint() -> None:
    """Comparing a string to a number explains how to fix it."""
    assert only(one_rule("'item.sku == 5'", item=True)).hint == (
        "quote numbers that are codes, or drop the quotes around a number"
    )


@pytest.mark.parametrize(
    ("cond", "message"),
    [
        ("weekday() == 'mon'", "weekday(): takes 1 argument, got 0"),
        ("weekday(tx.time, tx.time) == 'mon'", "weekday(): takes 1 argument, got 2"),
        ("weekday(item.sku) == 'mon'", "weekday(): needs a datetime, got string"),
        ("hour() > 1", "hour(): takes 1 argument, got 0"),
        ("hour(5) > 1", "hour(): needs a datetime, got number"),
        ("date(5) == date(tx.time)", "date(): needs a datetime or a 'YYYY-MM-DD' string, got number"),
        ("date(tx.time, tx.time) == date(tx.time)", "date(): takes 1 argument, got 2"),
        ("days_since() > 1", "days_since(): takes 1 argument, got 0"),
        ("days_since(item.sku) > 1", "days_since(): needs a datetime or date, got string"),
        ("count() > 1", "count(): takes 1 or 2 arguments, got 0"),
        ("count(item.sku) > 1", "count(): needs a list, got string"),
        ("count(item.tags, 5) > 1", "count(): counts string values, got number"),
        ("count(item.tags, 'a', 'b') > 1", "count(): takes 1 or 2 arguments, got 3"),
        ("sum(item.tags) > 1", "sum(): needs a list of numbers, got list of string"),
        ("sum(1, 2) > 1", "sum(): takes 1 argument, got 2"),
        ("any(item.tags)", "any(): needs a list of booleans, got list of string"),
        ("any(item.tags, [1])", "any(): needs two lists of the same kind"),
        ("any()", "any(): takes 1 or 2 arguments, got 0"),
        ("min() > 1", "min(): takes a list or at least two numbers"),
        ("min(item.tags) > 1", "min(): needs a list of numbers, got list of string"),
        ("max(1, 'a') > 1", "max(): needs numbers, got string"),
        ("lower(5) == 'a'", "lower(): needs a string, got number"),
        ("lower('A', 'B') == 'a'", "lower(): takes 1 argument, got 2"),
    ],
)
def test_function_arity_and_types(cond: str, message: str) -> None:
    """Every function checks how many arguments it gets and their types, naming the function."""
    issue = only(one_rule(_quote(cond), item=True))
    assert issue.message.startswith(message), issue.message
    assert issue.hint  # the function's signature


@pytest.mark.parametrize("cond", ["item.quantity", "item.sku", "tx.items", "lower(item.sku)", "1 + 2"])
def test_condition_must_be_boolean(cond: str) -> None:
    """A condition must give true or false."""
    issue = only(one_rule(_quote(cond), item=True))
    assert issue.message.startswith("this must give boolean, but gives ")


def test_stamp_count_must_be_a_number() -> None:
    """A stamp count expression must give a number."""
    doc = (
        HEAD + REWARDS + "rules:\n  - id: s\n    for_each: item\n"
        "    stamp: {card: c, count: item.sku, reward_at: 5, reward: COFFEE}\n"
    )
    assert only(doc).message == "this must give number, but gives string"


def test_item_fields_need_for_each_item() -> None:
    """item.* in a transaction-level rule is an error that suggests for_each: item."""
    doc = one_rule("item.sku == 'A'")
    issue = only(doc)
    assert issue.message == "item.sku is only available in rules with for_each: item"
    assert issue.hint == "add for_each: item, or read tx.items"
    line = line_of(doc, "when:")
    assert (issue.line, issue.column) == (line, column_of(doc, "item.sku", line))


def test_one_mistake_is_reported_once() -> None:
    """A subexpression that already failed does not cause follow-on errors."""
    assert len(issues(one_rule("'lower(item.categroy) == 5 and item.categroy > 1'", item=True))) == 2


def test_all_errors_of_a_document_come_in_one_pass() -> None:
    """Every problem of a document is reported at once, in document order, not only the first."""
    doc = (
        HEAD + TIERS + "rules:\n"
        "  - {id: a, for_each: item, where: item.categroy == 'x', earn: {per_currency_unit: 1}}\n"
        "  - {id: b, when: tx.total == 'x', earn: {points: 1}}\n"
        "  - {id: c, when: 'weekday(tx.time, 1) == 2 or member.tierr', earn: {points: 1}}\n"
        "  - {id: d, when: 'tx.total > 1', earn: {points: 1},"
        " valid_from: 2026-01-02, valid_until: 2026-01-01}\n"
        "  - {id: a, when: '[x for x in tx.items]', earn: {points: 1}}\n"
    )
    found = issues(doc)
    assert [(i.line, i.path) for i in found] == [
        (7, "rules[0].where"),
        (8, "rules[1].when"),
        (9, "rules[2].when"),
        (9, "rules[2].when"),
        (10, "rules[3].valid_until"),
        (11, "rules[4].id"),
        (11, "rules[4].when"),
    ]
    assert found[0].hint == "did you mean item.category?"


def test_document_and_expression_errors_are_both_reported() -> None:
    """A document with schema errors still has its conditions checked: one pass reports both."""
    doc = HEAD + "rules:\n  - {id: a, when: tx.totl > 1, earn: {points: 1}, limt: {per_day: 1}}\n"
    condition, schema = issues(doc)
    assert condition.message == "unknown field tx.totl"
    assert condition.hint == "did you mean tx.total?"
    assert schema.message == "unknown field 'limt'"
    assert schema.hint == "did you mean limit?"
    assert (condition.line, condition.column) < (schema.line, schema.column)


# ---------------------------------------------------------------------------------------------------
# Valid conditions and their typed trees


@pytest.mark.parametrize(
    "cond",
    [
        'weekday(tx.time) == "tue" and 14 <= hour(tx.time) < 17',
        "member.days_since_last_visit > 90",
        'item.category not in ["tobacco", "giftcard"]',
        "item.amount >= 10.50 or item.quantity * 2 > 5",
        "item.unit_price % 2 == 0.5 and -item.quantity < 0",
        "item.amount / 3 > 1",
        '"vegan" in item.tags and any(member.tags, ["vip", "staff"])',
        'count(tx.items) > 3 and count(tx.items.category, "coffee") >= 2',
        "sum(tx.items.quantity) >= 10 and min(tx.items.amount) > 1 and max(1, 2, item.quantity) == 2",
        'lower(item.sku) == "wash" and "AS" in item.sku',
        'date(tx.time) >= date("2026-12-24") and days_since(date("2026-01-01")) < 400',
        "days_since(tx.time) == 0",
        'member.tier in ["silver"] and outlet.partner != "" and event.kind == "purchase"',
        'tx.channel + "x" == "tillx"',
        "any([item.quantity > 1, item.amount > 5])",
        "not (item.quantity > 1) and True",
        "item.sku < 'M'",
        "item.quantity in (1, 2) or 1.5 in [1, 2]",
    ],
)
def test_valid_conditions_pass(cond: str) -> None:
    """Conditions built from the schema, the operators and the function set are accepted."""
    assert check(cond, item=True).type == BOOL


def test_checked_nodes_know_their_types() -> None:
    """Every node of a checked tree carries its result type, fixed when the tree is built."""
    node = check('hour(tx.time) + 1 > 2 and lower(item.sku) == "a"', item=True)
    assert isinstance(node, ir.BoolOp)
    left, right = node.values
    assert isinstance(left, ir.Compare) and isinstance(left.left, ir.Arith)
    assert left.left.type == NUMBER
    assert isinstance(left.left.left, ir.Call) and left.left.left.type == NUMBER
    assert isinstance(right, ir.Compare) and right.left.type == STRING


def test_number_literals_are_exact_decimals() -> None:
    """Number literals become exact Decimals from their text, never floats."""
    node = check("item.amount > 0.1", item=True)
    assert isinstance(node, ir.Compare)
    [const] = node.comparators
    assert isinstance(const, ir.Const)
    assert str(const.value) == "0.1"


def test_date_literals_are_checked_constants() -> None:
    """date("YYYY-MM-DD") is turned into a date when checked, not at every evaluation."""
    node = check('date(tx.time) == date("2026-12-24")')
    assert isinstance(node, ir.Compare)
    assert isinstance(node.comparators[0], ir.Const)


def test_positions_in_a_document_with_windows_line_ends() -> None:
    """CRLF line ends do not shift lines or columns."""
    doc = one_rule("lower(item.sku) == 'é' and item.categroy == 'x'", item=True).replace("\n", "\r\n")
    issue = only(doc)
    line = line_of(doc, "where:")
    assert (issue.line, issue.column) == (line, column_of(doc, "item.categroy", line))


def test_negative_literals_ignore_the_callers_decimal_context() -> None:
    """Checking a condition never rounds its numbers, whatever decimal context the caller set."""
    import decimal

    with decimal.localcontext(decimal.Context(prec=2)):
        node = check("item.amount > -1.2345", item=True)
    assert isinstance(node, ir.Compare)
    [const] = node.comparators
    assert isinstance(const, ir.Const)
    assert str(const.value) == "-1.2345"
