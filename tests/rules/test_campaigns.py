"""Control groups: a stable, deterministic draw per member and campaign, the declared share, and a
control member never gets the held-out rule's effect (compiled engine and interpreter alike)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import rules
from rules.campaigns import draw
from rules.interpret import interpret

PROGRAM = """\
program: T
currency: EUR
timezone: Europe/Berlin
rules:
  - id: base
    earn: {per_currency_unit: 1}
    for_each: item
  - id: winback
    when: member.days_since_last_visit > 30
    earn: {points: 100}
    holdout: 0.1
"""
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
BACK = rules.Member(id="", last_visit_at=datetime(2026, 3, 1, tzinfo=UTC))
TX = rules.Transaction(time=NOW, items=(rules.Item("A", 1000),))


def test_the_same_member_always_lands_in_the_same_group() -> None:
    first = [rules.in_control("winback", str(m), 0.1) for m in range(1000)]
    assert first == [rules.in_control("winback", str(m), 0.1) for m in range(1000)]
    # A known value pins the draw itself: a change of the hash would regroup every running campaign.
    assert draw("winback", "42") == pytest.approx(0.156124273)
    assert draw("winback", "1") == pytest.approx(0.710361072)
    # Another campaign draws afresh: the groups are independent.
    other = [rules.in_control("birthday", str(m), 0.1) for m in range(1000)]
    assert first != other


def test_the_share_holds_on_ten_thousand_members() -> None:
    control = sum(rules.in_control("winback", str(m), 0.1) for m in range(10_000))
    # Binomial(10000, 0.1): sd 30; four sd either way.
    assert 880 <= control <= 1120


def test_a_control_member_never_gets_the_effect() -> None:
    program = rules.load_program(PROGRAM)
    members = [str(m) for m in range(400)]
    held = [m for m in members if rules.holdout_of(program, m)]
    assert held and len(held) < len(members)
    for m in members[:200]:
        member = rules.Member(id=m, last_visit_at=BACK.last_visit_at, holdout=rules.holdout_of(program, m))
        compiled = rules.evaluate(program, TX, member, now=NOW)
        walked = interpret(program, TX, member, now=NOW)
        expected = 10 if m in held else 110
        assert compiled.total == walked.total == expected
        assert ("winback" in {r.rule for r in compiled.rules}) == (m not in held)


def test_the_holdout_share_is_bounded() -> None:
    for share, ok in (("0", False), ("0.1", True), ("0.5", True), ("0.6", False)):
        text = PROGRAM.replace("holdout: 0.1", f"holdout: {share}")
        if ok:
            assert rules.load_program(text).rules[1].holdout == float(share)
        else:
            with pytest.raises(rules.ProgramError) as raised:
                rules.load_program(text)
            assert raised.value.issues[0].path == "rules[1].holdout"
