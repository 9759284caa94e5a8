"""Segments in the program document: checked like every other condition, with positions, and
evaluated in document order over a member and their figures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import rules

HEAD = "program: T\ncurrency: EUR\ntimezone: Europe/Berlin\n"
SEGMENTS = """\
segments:
  - name: champions
    when: customer.recency_score >= 4 and customer.frequency_score >= 4 and customer.monetary_score >= 4
  - name: at_risk
    description: drifting away from their own rhythm, worth a win-back offer
    when: customer.at_risk and customer.spend >= 20
  - name: lapsed
    when: customer.days_since_purchase > 180
  - name: new
    when: customer.purchase_days <= 1 and member.days_since_enrolled < 60
"""
NOW = datetime(2026, 6, 1, tzinfo=UTC)
MEMBER = rules.Member(enrolled_at=datetime(2025, 1, 1, tzinfo=UTC))


def issues(text: str) -> list[rules.Issue]:
    with pytest.raises(rules.ProgramError) as raised:
        rules.load_program(text)
    return raised.value.issues


@pytest.mark.parametrize(
    ("customer", "segment"),
    [
        (
            rules.Customer(recency_score=5, frequency_score=4, monetary_score=4, at_risk=True, spend=9000),
            "champions",
        ),
        (rules.Customer(at_risk=True, spend=2000, days_since_purchase=400), "at_risk"),
        (rules.Customer(at_risk=True, spend=1999, days_since_purchase=400), "lapsed"),
        (rules.Customer(purchase_days=1, days_since_purchase=3), ""),
    ],
)
def test_the_first_segment_that_holds_is_the_members(customer: rules.Customer, segment: str) -> None:
    """Document order decides: a champion who is also at risk is a champion; money reads in currency
    units (20 EUR is 2000 cents); a member in no segment gets ""."""
    program = rules.load_program(HEAD + SEGMENTS)
    assert rules.segment_of(program, MEMBER, customer, now=NOW) == segment


def test_a_new_member_is_judged_on_member_fields_too() -> None:
    program = rules.load_program(HEAD + SEGMENTS)
    newcomer = rules.Member(enrolled_at=datetime(2026, 5, 20, tzinfo=UTC))
    assert rules.segment_of(program, newcomer, rules.Customer(purchase_days=1), now=NOW) == "new"


def test_segment_conditions_are_checked_with_positions() -> None:
    text = HEAD + SEGMENTS.replace("customer.at_risk and", "customer.at_rsk and").replace(
        "customer.days_since_purchase > 180", "tx.total > 180"
    )
    found = {(i.line, i.message, i.hint) for i in issues(text)}
    assert (9, "unknown field customer.at_rsk", "did you mean customer.at_risk?") in {
        (line, m, h) for line, m, h in found
    }
    assert any(
        line == 11 and message == "a segment condition reads member and customer only, not tx"
        for line, message, _ in found
    )


def test_rules_read_the_segment_not_the_figures() -> None:
    """Figures exist at a segment run, not at a till: a rule reads member.segment, and a misspelt
    segment name is caught like a misspelt tier."""
    rule = "rules:\n  - id: winback\n    when: {when}\n    earn: {{points: 100}}\n"
    (figures,) = issues(HEAD + SEGMENTS + rule.format(when="customer.at_risk"))
    assert figures.message == "customer.at_risk is read by segment conditions only"
    assert (figures.line, figures.column, figures.path) == (16, 11, "rules[0].when")
    (typo,) = issues(HEAD + SEGMENTS + rule.format(when='member.segment == "at_rsk"'))
    assert (typo.message, typo.hint) == ("unknown segment 'at_rsk'", "did you mean at_risk?")


def test_segment_names_are_unique_and_conditions_boolean() -> None:
    doc = HEAD + "segments:\n  - {name: a, when: customer.spend > 1}\n  - {name: a, when: customer.spend}\n"
    messages = sorted(i.message for i in issues(doc))
    assert messages == ["duplicate segment 'a'", "this must give boolean, but gives number"]


def test_a_rule_on_the_segment_earns_at_the_till() -> None:
    program = rules.load_program(
        HEAD
        + SEGMENTS
        + "rules:\n  - id: winback\n    when: member.segment == 'at_risk'\n    earn: {points: 100}\n"
    )
    tx = rules.Transaction(time=NOW)
    assert rules.evaluate(program, tx, rules.Member(segment="at_risk")).total == 100
    assert rules.evaluate(program, tx, rules.Member(segment="champions")).total == 0
    assert rules.evaluate(program, tx, rules.Member()).total == 0
