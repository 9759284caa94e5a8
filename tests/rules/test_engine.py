"""Evaluation: how a basket's points, stamps and rewards add up (DESIGN "The program document")."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import rules
from rules import EvaluationError, Event, Item, Member, Outlet, Transaction
from rules.interpret import interpret

BERLIN = ZoneInfo("Europe/Berlin")
WEDNESDAY = datetime(2026, 3, 4, 10, 0, tzinfo=BERLIN)
TUESDAY_3PM = datetime(2026, 3, 3, 15, 0, tzinfo=BERLIN)

NOBODY, NOWHERE, PURCHASE = Member(), Outlet(), Event()

MakeProgram = Callable[..., rules.CheckedProgram]

BASE = """
- id: base
  for_each: item
  earn: {per_currency_unit: 1}
"""


def tx(*items: Item, time: datetime = WEDNESDAY, channel: str = "till") -> Transaction:
    return Transaction(time, tuple(items), channel)


def ev(
    program: rules.CheckedProgram,
    transaction: Transaction,
    member: Member = NOBODY,
    outlet: Outlet = NOWHERE,
    event: Event = PURCHASE,
    **kw: Any,
) -> rules.Result:
    """Evaluate with the engine, and check the reference interpreter gives the same figures."""
    result = rules.evaluate(program, transaction, member, outlet, event, **kw)
    kw.pop("explain", None)
    ref = interpret(program, transaction, member, outlet, event, **kw)
    assert (result.total, tuple(i.points for i in result.items)) == (ref.total, ref.item_points)
    assert {r.rule: r.points for r in result.rules} == ref.rule_points
    assert {r.rule: r.applications for r in result.rules} == ref.rule_applications
    assert (dict(result.stamps), result.rewards_unlocked) == (ref.stamps, ref.rewards_unlocked)
    return result


def points(result: rules.Result) -> dict[str, Decimal]:
    return {r.rule: r.points for r in result.rules}


# ---------------------------------------------------------------------------------------------------
# The DESIGN sketch, on the demo program


def test_demo_base_gives_a_point_per_euro(demo: rules.CheckedProgram) -> None:
    """The base rule gives one point per euro of line amount."""
    result = ev(demo, tx(Item("ESP", 450, 2, "coffee"), Item("CRO", 199, 1, "bakery")))
    assert points(result) == {"base": Decimal("10.99")}
    assert result.total == 10


def test_demo_base_skips_tobacco_and_gift_cards(demo: rules.CheckedProgram) -> None:
    """Tobacco and gift cards earn nothing, so nothing multiplies them either."""
    result = ev(demo, tx(Item("CIG", 800, 1, "tobacco"), Item("GC", 5000, 1, "giftcard"), time=TUESDAY_3PM))
    assert result.total == 0
    assert result.rules == ()


def test_demo_organic_earns_double(demo: rules.CheckedProgram) -> None:
    """An organic item earns twice its base points."""
    result = ev(demo, tx(Item("MILK", 250, 2, "organic"), Item("ESP", 300, 1, "coffee")))
    assert points(result) == {"base": Decimal("8.00"), "organic-double": Decimal("5.00")}
    assert result.total == 13


def test_demo_tuesday_afternoon_triples_and_replaces_organic_double(demo: rules.CheckedProgram) -> None:
    """The exclusive Tuesday-afternoon triple replaces the organic double instead of stacking with it."""
    result = ev(demo, tx(Item("MILK", 250, 2, "organic"), Item("ESP", 300, 1, "coffee"), time=TUESDAY_3PM))
    assert points(result) == {"base": Decimal("8.00"), "tuesday-afternoon": Decimal("16.00")}
    assert result.total == 24


@pytest.mark.parametrize(
    ("hour", "minute", "applies"), [(13, 59, False), (14, 0, True), (16, 59, True), (17, 0, False)]
)
def test_demo_tuesday_afternoon_window(
    demo: rules.CheckedProgram, hour: int, minute: int, applies: bool
) -> None:
    """Tuesday afternoon means 14:00 up to (not including) 17:00 Berlin time."""
    result = ev(demo, tx(Item("ESP", 1000, 1, "coffee"), time=TUESDAY_3PM.replace(hour=hour, minute=minute)))
    assert result.total == (30 if applies else 10)


def test_demo_win_back_after_ninety_days_once(demo: rules.CheckedProgram) -> None:
    """A member away for more than 90 days gets 200 points, only once in their life."""
    basket = tx(Item("ESP", 300, 1, "coffee"))
    away = Member(last_visit_at=WEDNESDAY - timedelta(days=91))
    assert ev(demo, basket, away).total == 203
    assert ev(demo, basket, Member(last_visit_at=WEDNESDAY - timedelta(days=90))).total == 3
    used = dataclasses.replace(away, rule_uses={"win-back": (1, 0)})
    assert ev(demo, basket, used).total == 3


def test_demo_first_visit_is_no_win_back(demo: rules.CheckedProgram) -> None:
    """A newcomer's first visit is not a comeback: days_since_last_visit reads 0 without a last visit."""
    assert "win-back" not in points(ev(demo, tx(Item("ESP", 300, 1, "coffee")), Member()))


def test_demo_win_back_is_not_multiplied_by_the_tier(demo: rules.CheckedProgram) -> None:
    """Fixed points are added after the tier multiplier, never multiplied by it."""
    gold = Member(tier="gold", last_visit_at=WEDNESDAY - timedelta(days=200))
    result = ev(demo, tx(Item("MILK", 500, 1, "organic")), gold)
    assert result.total == 10 * Decimal("1.5") + 200
    assert result.tier == "gold"
    assert result.tier_multiplier == Decimal("1.5")


def test_demo_car_wash_stamps_and_free_wash(demo: rules.CheckedProgram) -> None:
    """Each wash adds a stamp; the 10th fills the card, unlocks a free wash, and the rest carries over."""
    result = ev(demo, tx(Item("WASH", 1200, 3, "wash")), Member(stamps={"wash": 8}))
    assert dict(result.stamps) == {"wash": 3}
    assert result.rewards_unlocked == ("FREE-WASH",)
    assert dict(result.stamp_cards) == {"wash": 1}
    assert result.total == 36  # stamps never change points


# ---------------------------------------------------------------------------------------------------
# Stacking

STACK = (
    BASE
    + """
- id: double
  for_each: item
  where: item.category == "organic"
  earn: {multiplier: 2}
- id: triple
  when: tx.channel == "till"
  earn: {multiplier: 3}
"""
)


def test_additive_multipliers_add_their_extra_parts(make_program: MakeProgram) -> None:
    """Additive multipliers add their extra parts: x2 and x3 on one item give x4, not x6."""
    result = ev(make_program(STACK), tx(Item("A", 1000, 1, "organic")))
    assert points(result) == {"base": 10, "double": 10, "triple": 20}
    assert result.total == 40


def test_max_multipliers_apply_only_the_largest(make_program: MakeProgram) -> None:
    """Among matching max multipliers only the largest applies."""
    program = make_program(
        BASE
        + """
    - {id: x2, for_each: item, earn: {multiplier: 2}, stacking: max}
    - {id: x3, for_each: item, earn: {multiplier: 3}, stacking: max}
    - {id: x1-5, for_each: item, earn: {multiplier: 1.5}, stacking: max}
    """
    )
    result = ev(program, tx(Item("A", 1000, 1)), explain=True)
    assert points(result) == {"base": 10, "x3": 20}
    explained = {e.rule: e for e in result.explanation}
    assert explained["x2"].items[0].status == "a larger max multiplier applied"


def test_max_multiplier_stacks_with_additive_ones(make_program: MakeProgram) -> None:
    """The largest max multiplier's extra part adds to the additive ones' extra parts."""
    program = make_program(
        BASE
        + """
    - {id: add2, for_each: item, earn: {multiplier: 2}}
    - {id: max3, for_each: item, earn: {multiplier: 3}, stacking: max}
    """
    )
    assert ev(program, tx(Item("A", 1000, 1))).total == 10 + 10 + 20


def test_a_non_matching_max_multiplier_leaves_the_next_largest(make_program: MakeProgram) -> None:
    """When the largest max multiplier does not match an item, the largest matching one applies."""
    program = make_program(
        BASE
        + """
    - {id: x5, for_each: item, where: item.sku == "B", earn: {multiplier: 5}, stacking: max}
    - {id: x2, for_each: item, earn: {multiplier: 2}, stacking: max}
    """
    )
    result = ev(program, tx(Item("A", 1000, 1), Item("B", 1000, 1)))
    assert points(result) == {"base": 20, "x5": 40, "x2": 10}


def test_exclusive_multiplier_replaces_every_other_multiplier(make_program: MakeProgram) -> None:
    """An exclusive multiplier replaces every other multiplier on the items it matches."""
    program = make_program(
        STACK
        + """
    - {id: ten, for_each: item, where: item.sku == "A", earn: {multiplier: 10}, stacking: exclusive}
    """
    )
    result = ev(program, tx(Item("A", 1000, 1, "organic"), Item("B", 1000, 1, "organic")), explain=True)
    assert points(result) == {"base": 20, "double": 10, "triple": 20, "ten": 90}
    assert [i.points for i in result.items] == [100, 40]
    double = next(e for e in result.explanation if e.rule == "double")
    assert double.items[0].status == "overridden by an exclusive multiplier"
    assert double.items[1].status == "applied"


def test_first_exclusive_multiplier_in_document_order_wins(make_program: MakeProgram) -> None:
    """When two exclusive multipliers match, the first in document order wins even if it is smaller."""
    program = make_program(
        BASE
        + """
    - {id: first, for_each: item, earn: {multiplier: 2}, stacking: exclusive}
    - {id: second, for_each: item, earn: {multiplier: 5}, stacking: exclusive}
    """
    )
    result = ev(program, tx(Item("A", 1000, 1)))
    assert points(result) == {"base": 10, "first": 10}


def test_exclusive_multiplier_below_one_lowers_points(make_program: MakeProgram) -> None:
    """An exclusive multiplier of 0 takes an item's points away, whatever else would apply."""
    program = make_program(
        STACK
        + """
    - id: none-on-sale
      for_each: item
      where: '"sale" in item.tags'
      earn: {multiplier: 0}
      stacking: exclusive
    """
    )
    result = ev(program, tx(Item("A", 1000, 1, "organic", ("sale",)), Item("B", 1000, 1)))
    assert [i.points for i in result.items] == [0, 30]


def test_multipliers_only_scale_items_with_base_points(make_program: MakeProgram) -> None:
    """A multiplier scales base points only: without a base rule match an item earns nothing."""
    program = make_program("""
    - {id: base, for_each: item, where: item.category != "tobacco", earn: {per_currency_unit: 1}}
    - {id: triple, when: tx.channel == "till", earn: {multiplier: 3}}
    """)
    result = ev(program, tx(Item("CIG", 1000, 1, "tobacco")))
    assert result.total == 0
    assert "triple" not in points(result)  # no item to multiply: the rule did not apply


def test_transaction_multiplier_counts_one_application(make_program: MakeProgram) -> None:
    """A transaction-level multiplier applies once per transaction, however many items it scales."""
    result = ev(make_program(STACK), tx(Item("A", 1000, 1), Item("B", 500, 2)))
    assert {r.rule: r.applications for r in result.rules} == {"base": 2, "triple": 1}


def test_overridden_transaction_multiplier_does_not_use_its_limit(make_program: MakeProgram) -> None:
    """A limited transaction multiplier that an exclusive one overrode everywhere is not used up."""
    program = make_program(
        BASE
        + """
    - {id: welcome, when: tx.channel == "till", earn: {multiplier: 2}, limit: {per_member: 1}}
    - {id: promo, for_each: item, earn: {multiplier: 3}, stacking: exclusive}
    """
    )
    result = ev(program, tx(Item("A", 1000, 1)))
    assert points(result) == {"base": 10, "promo": 20}


# ---------------------------------------------------------------------------------------------------
# Tiers and fixed points


def test_tier_multiplier_scales_base_and_multipliers(make_program: MakeProgram) -> None:
    """The member's tier earn_multiplier scales what base and multipliers gave."""
    program = make_program(STACK, tiers=True)
    basket = tx(Item("A", 1000, 1, "organic"))
    assert ev(program, basket, Member(tier="silver")).total == 50
    assert ev(program, basket, Member(tier="gold")).total == 60
    assert ev(program, basket, Member()).total == 40  # no tier given: the lowest level


def test_rule_points_are_reported_before_the_tier(make_program: MakeProgram) -> None:
    """Per-rule points are the rule's own figure; the tier's share is reported separately."""
    result = ev(make_program(BASE, tiers=True), tx(Item("A", 1000, 1)), Member(tier="gold"))
    assert points(result) == {"base": 10}
    assert result.tier_points == Decimal(5)
    assert Decimal(result.as_dict()["tier_points"]) == 5


def test_fixed_points_are_never_multiplied(make_program: MakeProgram) -> None:
    """Fixed points are added after multipliers and tier, never scaled by them."""
    program = make_program(
        STACK
        + """
    - {id: bonus, when: tx.total >= 5, earn: {points: 100}}
    - {id: per-unit, for_each: item, where: item.sku == "A", earn: {points: 7}}
    """,
        tiers=True,
    )
    result = ev(program, tx(Item("A", 1000, 2, "organic")), Member(tier="gold"))
    assert result.total == 20 * 4 * Decimal("1.5") + 100 + 2 * 7
    assert [i.points for i in result.items] == [120 + 14]


def test_unknown_member_tier_is_an_evaluation_error(make_program: MakeProgram) -> None:
    """A member tier the program does not define is refused."""
    with pytest.raises(EvaluationError, match="tier"):
        rules.evaluate(make_program(BASE, tiers=True), tx(), Member(tier="platinum"))


# ---------------------------------------------------------------------------------------------------
# Limits and budgets


def test_per_transaction_limit_caps_item_applications_in_basket_order(make_program: MakeProgram) -> None:
    """An item rule limited per transaction applies to the first matching lines only."""
    program = make_program("""
    - {id: base, for_each: item, earn: {per_currency_unit: 1}, limit: {per_transaction: 2}}
    """)
    result = ev(program, tx(Item("A", 100, 1), Item("B", 200, 1), Item("C", 400, 1)))
    assert [i.points for i in result.items] == [1, 2, 0]
    assert result.rules[0].applications == 2


def test_per_member_limit_counts_earlier_uses(make_program: MakeProgram) -> None:
    """A per-member limit counts the member's earlier uses of the rule."""
    program = make_program("""
    - {id: base, for_each: item, earn: {per_currency_unit: 1}, limit: {per_member: 3}}
    """)
    basket = tx(Item("A", 100, 1), Item("B", 200, 1), Item("C", 400, 1))
    assert ev(program, basket, Member(rule_uses={"base": (2, 0)})).total == 1
    assert ev(program, basket, Member(rule_uses={"base": (3, 0)})).total == 0


def test_per_day_limit_counts_todays_uses(make_program: MakeProgram) -> None:
    """A per-day limit counts only the uses of the transaction's day."""
    program = make_program("""
    - {id: daily, when: tx.total > 0, earn: {points: 10}, limit: {per_day: 1}}
    """)
    basket = tx(Item("A", 100, 1))
    assert ev(program, basket, Member(rule_uses={"daily": (7, 0)})).total == 10
    assert ev(program, basket, Member(rule_uses={"daily": (7, 1)})).total == 0


def test_transaction_rule_applies_at_most_once(make_program: MakeProgram) -> None:
    """A transaction-level points rule gives its points once per transaction."""
    program = make_program("- {id: visit, earn: {points: 10}, limit: {per_transaction: 5}}")
    result = ev(program, tx(Item("A", 100, 1), Item("B", 100, 1)))
    assert result.total == 10
    assert result.rules[0].applications == 1


def test_budget_caps_points_over_the_rules_life(make_program: MakeProgram) -> None:
    """A rule's budget caps what it gives: only the rest of it is given."""
    program = make_program("- {id: bonus, earn: {points: 200}, budget: 500}")
    assert ev(program, tx(), budgets={"bonus": 400}).total == 100
    assert ev(program, tx(), budgets={}).total == 200


def test_used_up_budget_means_the_rule_does_not_apply(make_program: MakeProgram) -> None:
    """Once its budget is used up a rule no longer applies (and uses no limit)."""
    program = make_program("- {id: bonus, earn: {points: 200}, budget: 500, limit: {per_member: 1}}")
    result = ev(program, tx(), budgets={"bonus": 500}, explain=True)
    assert result.rules == ()
    assert result.explanation[0].decided_by == "budget used up"


def test_budget_caps_base_points_item_by_item(make_program: MakeProgram) -> None:
    """A base rule's budget is spent along the basket; later items get what is left."""
    program = make_program("- {id: base, for_each: item, earn: {per_currency_unit: 1}, budget: 15}")
    result = ev(program, tx(Item("A", 1000, 1), Item("B", 1000, 1), Item("C", 1000, 1)))
    assert [i.points for i in result.items] == [10, 5, 0]
    assert result.rules[0].applications == 2


def test_exclusive_multiplier_with_used_up_budget_stops_overriding(make_program: MakeProgram) -> None:
    """An exclusive promotion whose budget is used up gives way to the other multipliers."""
    program = make_program(
        STACK
        + """
    - {id: promo, for_each: item, earn: {multiplier: 5}, stacking: exclusive, budget: 40}
    """
    )
    result = ev(program, tx(Item("A", 1000, 1), Item("B", 1000, 1)))
    assert points(result) == {"base": 20, "promo": 40, "triple": 20}
    assert [i.points for i in result.items] == [50, 30]


# ---------------------------------------------------------------------------------------------------
# Rounding and per-item points


@pytest.mark.parametrize(("rounding", "total"), [("floor", 1), ("half_up", 2), ("ceil", 2)])
def test_rounding_applies_once_per_transaction(make_program: MakeProgram, rounding: str, total: int) -> None:
    """Rounding applies once to the transaction total, never per item (3 x 0.5 floors to 1, not 0)."""
    result = ev(make_program(BASE, rounding=rounding), tx(*[Item(s, 50, 1) for s in "ABC"]))
    assert result.total == total
    assert result.exact == Decimal("1.50")
    assert sum(i.points for i in result.items) == total


def test_item_points_allocate_by_largest_remainder(make_program: MakeProgram) -> None:
    """Whole item points add up to the total; the leftover point goes to the largest remainder first."""
    result = ev(
        make_program(BASE, rounding="half_up"), tx(Item("A", 130, 1), Item("B", 160, 1), Item("C", 160, 1))
    )
    assert result.total == 5  # 4.50 half up
    assert [i.points for i in result.items] == [1, 2, 2]
    assert [i.exact for i in result.items] == [Decimal("1.30"), Decimal("1.60"), Decimal("1.60")]


def test_item_points_and_transaction_points_sum_to_the_total(make_program: MakeProgram) -> None:
    """Per-item points plus transaction-level fixed points always equal the total."""
    program = make_program(STACK + "- {id: visit, earn: {points: 25}}", tiers=True)
    result = ev(program, tx(Item("A", 333, 3, "organic"), Item("B", 77, 1)), Member(tier="silver"))
    assert sum(i.points for i in result.items) + 25 == result.total


def test_currency_minor_units_follow_the_currency(make_program: MakeProgram) -> None:
    """Amounts are minor units of the program's currency: yen have none, dinars have three."""
    yen = rules.load_program(
        "{program: Y, currency: JPY, timezone: Asia/Tokyo,"
        " rules: [{id: b, for_each: item, earn: {per_currency_unit: 1}}]}"
    )
    assert ev(yen, tx(Item("A", 500, 1))).total == 500
    dinar = rules.load_program(
        "{program: K, currency: KWD, timezone: Asia/Kuwait,"
        " rules: [{id: b, for_each: item, earn: {per_currency_unit: 1}}]}"
    )
    assert ev(dinar, tx(Item("A", 5000, 1))).total == 5


# ---------------------------------------------------------------------------------------------------
# Stamps


STAMPS = """
- id: coffee-card
  for_each: item
  where: item.category == "coffee"
  stamp: {card: coffee, count: item.quantity, reward_at: 5, reward: COFFEE}
"""


def test_stamps_fill_cards_and_carry_over(make_program: MakeProgram) -> None:
    """Stamps beyond a full card carry over; every full card is one voucher."""
    result = ev(make_program(STAMPS), tx(Item("ESP", 300, 12, "coffee")), Member(stamps={"coffee": 4}))
    assert dict(result.stamps) == {"coffee": 12}
    assert result.rewards_unlocked == ("COFFEE", "COFFEE", "COFFEE")
    assert dict(result.stamp_cards) == {"coffee": 1}


def test_transaction_stamp_rule_stamps_once(make_program: MakeProgram) -> None:
    """A transaction-level stamp rule adds its count once per visit."""
    program = make_program("- {id: visit, stamp: {card: visits, count: 1, reward_at: 3, reward: COFFEE}}")
    result = ev(program, tx(Item("A", 100, 4)), Member(stamps={"visits": 2}))
    assert dict(result.stamps) == {"visits": 1}
    assert result.rewards_unlocked == ("COFFEE",)


def test_no_stamps_no_vouchers(make_program: MakeProgram) -> None:
    """A basket without stamped items unlocks nothing, even for a member with a nearly full card."""
    result = ev(make_program(STAMPS), tx(Item("CRO", 300, 1, "bakery")), Member(stamps={"coffee": 4}))
    assert dict(result.stamps) == {}
    assert result.rewards_unlocked == ()


# ---------------------------------------------------------------------------------------------------
# Validity windows, partners, outlets


def test_valid_from_date_means_local_midnight(make_program: MakeProgram) -> None:
    """A plain valid_from date starts at midnight in the program's timezone, not UTC."""
    program = make_program(
        "- {id: promo, earn: {points: 10}, valid_from: 2026-03-10, valid_until: 2026-03-20}"
    )
    assert ev(program, tx(time=datetime(2026, 3, 9, 22, 59, tzinfo=UTC))).total == 0  # 23:59 Berlin
    assert ev(program, tx(time=datetime(2026, 3, 9, 23, 0, tzinfo=UTC))).total == 10  # 00:00 Berlin
    assert ev(program, tx(time=datetime(2026, 3, 19, 22, 59, tzinfo=UTC))).total == 10
    assert ev(program, tx(time=datetime(2026, 3, 19, 23, 0, tzinfo=UTC))).total == 0  # valid_until excluded


def test_valid_from_datetime_with_offset(make_program: MakeProgram) -> None:
    """A valid_from with a time and an offset is that exact instant."""
    program = make_program("- {id: promo, earn: {points: 10}, valid_from: '2026-03-10T12:00:00+01:00'}")
    assert ev(program, tx(time=datetime(2026, 3, 10, 10, 59, tzinfo=UTC))).total == 0
    assert ev(program, tx(time=datetime(2026, 3, 10, 11, 0, tzinfo=UTC))).total == 10


def test_partner_and_outlet_filters(make_program: MakeProgram) -> None:
    """A rule limited to partners or outlets applies only at those."""
    program = make_program("""
    - {id: p, earn: {points: 1}, partners: [BAKERY]}
    - {id: o, earn: {points: 10}, outlets: [B-01, B-02]}
    """)
    assert ev(program, tx(), outlet=Outlet("B-01", "BAKERY")).total == 11
    assert ev(program, tx(), outlet=Outlet("B-03", "BAKERY")).total == 1
    assert ev(program, tx(), outlet=Outlet("B-02", "CAFE")).total == 10
    assert ev(program, tx(), outlet=Outlet()).total == 0


def test_event_kind_condition(make_program: MakeProgram) -> None:
    """Rules can react to events other than purchases, such as a sign-up."""
    program = make_program("- {id: signup, when: event.kind == 'signup', earn: {points: 500}}")
    assert ev(program, tx(), event=Event("signup")).total == 500
    assert ev(program, tx()).total == 0


# ---------------------------------------------------------------------------------------------------
# Time zones


HOUR_RULE = "- {{id: h, when: hour(tx.time) == {hour}, earn: {{points: 1}}}}"


def test_hour_uses_the_program_timezone_across_the_spring_dst_switch(make_program: MakeProgram) -> None:
    """On 2026-03-29 Berlin jumps from 02:00 to 03:00: 01:30 UTC is 03:30 local, 00:30 UTC is 01:30."""
    three = make_program(HOUR_RULE.format(hour=3))
    one = make_program(HOUR_RULE.format(hour=1))
    assert ev(three, tx(time=datetime(2026, 3, 29, 1, 30, tzinfo=UTC))).total == 1
    assert ev(one, tx(time=datetime(2026, 3, 29, 0, 30, tzinfo=UTC))).total == 1
    assert ev(three, tx(time=datetime(2026, 3, 29, 0, 30, tzinfo=UTC))).total == 0


def test_hour_uses_the_program_timezone_across_the_autumn_dst_switch(make_program: MakeProgram) -> None:
    """On 2026-10-25 Berlin repeats 02:00-03:00: both 00:30 and 01:30 UTC are hour 2 local."""
    two = make_program(HOUR_RULE.format(hour=2))
    assert ev(two, tx(time=datetime(2026, 10, 25, 0, 30, tzinfo=UTC))).total == 1
    assert ev(two, tx(time=datetime(2026, 10, 25, 1, 30, tzinfo=UTC))).total == 1
    assert ev(two, tx(time=datetime(2026, 10, 25, 2, 30, tzinfo=UTC))).total == 0


def test_weekday_and_date_switch_at_local_midnight_not_utc(make_program: MakeProgram) -> None:
    """Monday 23:30 UTC is already Tuesday in Berlin: weekday and date follow the program's timezone."""
    program = make_program("""
    - {id: tue, when: weekday(tx.time) == "tue", earn: {points: 1}}
    - {id: day, when: date(tx.time) == date("2026-03-03"), earn: {points: 10}}
    """)
    assert ev(program, tx(time=datetime(2026, 3, 2, 23, 30, tzinfo=UTC))).total == 11
    assert ev(program, tx(time=datetime(2026, 3, 2, 22, 30, tzinfo=UTC))).total == 0
    # The same instant written with another offset is the same local time.
    assert ev(program, tx(time=datetime(2026, 3, 2, 18, 30, tzinfo=ZoneInfo("America/New_York")))).total == 11


def test_days_since_a_date_counts_local_calendar_days(make_program: MakeProgram) -> None:
    """days_since(date) counts calendar days in the program's timezone up to the evaluation time."""
    program = make_program("- {id: d, when: days_since(date('2026-03-01')) == 2, earn: {points: 1}}")
    assert ev(program, tx(time=datetime(2026, 3, 2, 23, 30, tzinfo=UTC))).total == 1
    assert ev(program, tx(time=datetime(2026, 3, 2, 22, 30, tzinfo=UTC))).total == 0


def test_now_anchors_day_counts(make_program: MakeProgram) -> None:
    """Day counts run to ``now`` when given (a till posting later), else to the transaction's time."""
    program = make_program("- {id: d, when: member.days_since_enrolled >= 30, earn: {points: 1}}")
    member = Member(enrolled_at=WEDNESDAY - timedelta(days=29, hours=23))
    assert ev(program, tx(), member).total == 0
    assert ev(program, tx(), member, now=WEDNESDAY + timedelta(hours=1)).total == 1


# ---------------------------------------------------------------------------------------------------
# Input errors


NAIVE = datetime(2026, 3, 4, 10, 0)


@pytest.mark.parametrize(
    ("transaction", "member", "now"),
    [
        (Transaction(NAIVE), Member(), None),
        (tx(), Member(), NAIVE),
        (tx(), Member(last_visit_at=NAIVE), None),
        (tx(), Member(enrolled_at=NAIVE), None),
        (tx(Item("A", 100, -1)), Member(), None),
        (tx(Item("A", -100, 1)), Member(), None),
        (tx(*[Item("A", 1, 1)] * 1001), Member(), None),
    ],
    ids=[
        "naive-tx-time",
        "naive-now",
        "naive-last-visit",
        "naive-enrolled",
        "negative-quantity",
        "negative-price",
        "huge-basket",
    ],
)
def test_unusable_inputs_are_evaluation_errors(
    make_program: MakeProgram, transaction: Transaction, member: Member, now: datetime | None
) -> None:
    """Naive datetimes, negative quantities or prices and oversized baskets raise EvaluationError."""
    program = make_program(BASE + "- {id: w, when: member.days_since_last_visit > 1, earn: {points: 1}}")
    with pytest.raises(EvaluationError):
        rules.evaluate(program, transaction, member, now=now)
    with pytest.raises(EvaluationError):
        interpret(program, transaction, member, now=now)


def test_evaluation_error_is_a_rules_error() -> None:
    """Every engine error shares one root exception."""
    assert issubclass(EvaluationError, rules.RulesError)
    assert issubclass(rules.ProgramError, rules.RulesError)


# ---------------------------------------------------------------------------------------------------
# Explanations


def test_explain_names_the_sub_condition_that_decided(make_program: MakeProgram) -> None:
    """For ``a and b`` with b false, the explanation says b decided it."""
    program = make_program("""
    - id: late
      when: tx.channel == "till" and hour(tx.time) >= 20
      earn: {points: 5}
    """)
    [late] = ev(program, tx(), explain=True).explanation
    assert (late.matched, late.decided_by) == (False, "hour(tx.time) >= 20")
    assert late.summary() == "late: not applied: hour(tx.time) >= 20 was false"
    [late] = ev(program, tx(time=WEDNESDAY.replace(hour=21)), explain=True).explanation
    assert late.matched
    assert late.decided_by == 'tx.channel == "till" and hour(tx.time) >= 20'
    [late] = ev(program, tx(channel="app"), explain=True).explanation
    assert late.decided_by == 'tx.channel == "till"'


def test_explain_or_and_not(make_program: MakeProgram) -> None:
    """For ``a or b`` the first true part decides; ``not`` keeps the part that decided inside it."""
    program = make_program("""
    - {id: r, when: 'tx.channel == "app" or not (hour(tx.time) < 12)', earn: {points: 1}}
    """)
    [r] = ev(program, tx(), explain=True).explanation
    assert (r.matched, r.decided_by) == (False, "hour(tx.time) < 12")
    [r] = ev(program, tx(channel="app"), explain=True).explanation
    assert (r.matched, r.decided_by) == (True, 'tx.channel == "app"')


def test_explain_item_decisions(make_program: MakeProgram) -> None:
    """Item rules explain per item whether they applied and which part of the item condition decided."""
    program = make_program("""
    - id: big-organic
      for_each: item
      where: item.category == "organic" and item.quantity > 1
      earn: {per_currency_unit: 1}
      limit: {per_transaction: 1}
    """)
    basket = tx(
        Item("A", 100, 1, "organic"),
        Item("B", 100, 2, "coffee"),
        Item("C", 100, 2, "organic"),
        Item("D", 100, 3, "organic"),
    )
    [rule] = ev(program, basket, explain=True).explanation
    assert [(d.status, d.decided_by) for d in rule.items] == [
        ("not matched", "item.quantity > 1"),
        ("not matched", 'item.category == "organic"'),
        ("applied", 'item.category == "organic" and item.quantity > 1'),
        ("limit or budget reached", 'item.category == "organic" and item.quantity > 1'),
    ]


def test_without_explain_there_is_no_explanation(demo: rules.CheckedProgram) -> None:
    """Explanations cost time, so they are only built on request."""
    assert rules.evaluate(demo, tx(Item("A", 100, 1))).explanation == ()


def test_explain_lists_every_rule_in_document_order(demo: rules.CheckedProgram) -> None:
    """The explanation has one entry per rule, in document order, matched or not."""
    result = rules.evaluate(demo, tx(Item("ESP", 300, 1, "coffee")), explain=True)
    assert [e.rule for e in result.explanation] == [
        "base",
        "organic-double",
        "tuesday-afternoon",
        "win-back",
        "car-wash-stamps",
    ]
    assert [e.matched for e in result.explanation] == [True, False, False, False, False]
    assert result.explanation[2].decided_by == 'weekday(tx.time) == "tue"'


# ---------------------------------------------------------------------------------------------------
# The result


def test_result_is_immutable(demo: rules.CheckedProgram) -> None:
    """A result cannot be changed after the fact, neither its figures nor its breakdowns."""
    result = rules.evaluate(demo, tx(Item("WASH", 1200, 1, "wash")), explain=True)
    with pytest.raises(AttributeError):
        result.total = 1_000_000  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rules[0].points = Decimal(1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.stamps["wash"] = 99  # type: ignore[index]
    assert isinstance(result.items, tuple)
    assert isinstance(result.explanation, tuple)


def test_money_and_points_are_never_float(demo: rules.CheckedProgram) -> None:
    """No figure is a float: exact values are Decimal, points int, and as_dict holds no float."""
    result = rules.evaluate(
        demo, tx(Item("MILK", 333, 3, "organic"), time=TUESDAY_3PM), Member(tier="silver"), explain=True
    )
    assert isinstance(result.total, int)
    assert isinstance(result.exact, Decimal)
    assert all(isinstance(i.exact, Decimal) and isinstance(i.points, int) for i in result.items)
    assert all(isinstance(r.points, Decimal) for r in result.rules)

    def walk(value: Any) -> None:
        assert not isinstance(value, float), value
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(result.as_dict())


def test_a_caller_decimal_context_changes_nothing(demo: rules.CheckedProgram) -> None:
    """Evaluation uses its own decimal context, not the caller's global one."""
    import decimal

    basket = tx(Item("MILK", 333, 3, "organic"), time=TUESDAY_3PM)
    expected = rules.evaluate(demo, basket, Member(tier="silver")).as_dict()
    with decimal.localcontext(decimal.Context(prec=2, rounding=decimal.ROUND_DOWN)):
        assert rules.evaluate(demo, basket, Member(tier="silver")).as_dict() == expected


def test_result_records_the_program_version(demo: rules.CheckedProgram) -> None:
    """Every result names the digest of the program version that computed it."""
    result = rules.evaluate(demo, tx())
    assert result.version == demo.digest
    assert len(result.version) == 64


def test_compiled_program_is_cached_by_document(demo: rules.CheckedProgram) -> None:
    """Compiling the same document twice gives the same compiled program."""
    again = rules.load_program(demo.document.model_dump_json())
    assert rules.compile_program(again) is rules.compile_program(demo)


def test_compiled_source_is_in_linecache(demo: rules.CheckedProgram) -> None:
    """The generated source is registered in linecache so tracebacks show generated lines."""
    import linecache

    compiled = rules.compile_program(demo)
    filename = f"<rules {demo.digest[:12]}>"
    assert linecache.getline(filename, 1).startswith("def _evaluate(")
    assert compiled.source.splitlines()[0] == linecache.getline(filename, 1).rstrip("\n")


def test_compiling_under_a_caller_decimal_context_changes_nothing(make_program: MakeProgram) -> None:
    """Compiled constants (factor - 1, tier extras) do not depend on the caller's decimal context."""
    import decimal

    program = make_program(
        BASE + "- {id: m, for_each: item, earn: {multiplier: 1.125}}\n", tiers=True, rounding="half_up"
    )
    with decimal.localcontext(decimal.Context(prec=2, rounding=decimal.ROUND_DOWN)):
        result = rules.evaluate(program, tx(Item("A", 100000, 1)), Member(tier="silver"))
    assert result.exact == Decimal("1000.00") * Decimal("1.125") * Decimal("1.25")


def test_money_is_written_in_the_currencys_own_minor_unit() -> None:
    """One table of minor units, one formatter: exact, with the currency's own decimals."""
    from rules.money import format_money, minor_digits, minor_unit

    assert [minor_digits(c) for c in ("EUR", "JPY", "KWD", "usd")] == [2, 0, 3, 2]
    assert minor_unit("JPY") == 1 and str(minor_unit("KWD")) == "0.001"
    assert format_money(123450, "EUR") == "1,234.50 EUR"
    assert format_money(1235, "JPY") == "1,235 JPY"
    assert format_money(1250, "KWD") == "1.250 KWD"
    assert format_money(-5, "EUR") == "-0.05 EUR"
    assert format_money(10**10 + 1, "EUR") == "100,000,000.01 EUR"
