"""Backtests of drafts on stored purchases, and points earned per rule over a period."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from loyalty.members import membership
from loyalty.points import transactions
from loyalty.programs import backtest, versions
from loyalty.storage.db import Database

from .conftest import NOW, PROGRAM, World, basket, make_world

DAY = timedelta(days=1)
SINCE = NOW - 30 * DAY
UNTIL = NOW
#: The test program with an organic multiplier, so that purchases earn under two rules.
ORGANIC = PROGRAM.replace(
    "  - id: wash-stamps",
    """\
  - id: organic-double
    for_each: item
    where: item.category == "organic"
    earn: {multiplier: 2}
  - id: wash-stamps""",
)


async def _buy(
    world: World,
    ref: str,
    member_id: int,
    *lines: tuple[str, int, int] | tuple[str, int, int, str],
    at: datetime = NOW - DAY,
) -> transactions.Posting:
    return await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id=ref,
        occurred_at=at,
        items=basket(*lines),
        member_id=member_id,
        now=at,
    )


async def _member(world: World) -> int:
    return (await membership.create_member(world.db, world.tenant_id, now=SINCE - DAY)).id


async def _shop(world: World) -> dict[str, int]:
    """Three members: one buying food and organic produce, one only organic, one only tobacco."""
    ids = {name: await _member(world) for name in ("food", "organic", "smoker")}
    await _buy(world, "f1", ids["food"], ("BREAD", 350, 2), ("APPLE", 250, 4, "organic"), at=SINCE + DAY)
    await _buy(world, "f2", ids["food"], ("MILK", 129, 3), at=SINCE + 2 * DAY)
    await _buy(world, "o1", ids["organic"], ("KALE", 499, 5, "organic"), at=SINCE + 3 * DAY)
    await _buy(world, "s1", ids["smoker"], ("CIG", 900, 2, "tobacco"), at=SINCE + 4 * DAY)
    return ids


@pytest.fixture
def organic_world(db: Database, runner: asyncio.Runner) -> World:
    return runner.run(make_world(db, ORGANIC))


async def test_identical_draft_shows_no_difference(organic_world: World) -> None:
    """A draft identical to the published program changes no points, no rule, no member and no tier."""
    await _shop(organic_world)
    report = await backtest.backtest(
        organic_world.db, organic_world.tenant_id, versions.check(ORGANIC), since=SINCE, until=UNTIL
    )
    assert report.transactions == 4
    assert report.actual_points == report.draft_points > 0
    assert (report.difference, report.difference_share) == (0, 0.0)
    assert {r.rule for r in report.rules} == {"base", "organic-double"}
    assert all(r.difference == 0 and r.actual == r.draft for r in report.rules)
    assert (report.members, report.members_changed, report.top_members) == (3, 0, ())
    assert (report.tier_changes, report.tier_shifts) == (0, ())
    assert report.transactions_per_second > 0
    assert report.as_dict()["rules"][0]["actual"] == str(report.rules[0].actual)


async def test_doubled_rule_shows_its_cost_and_the_members_it_changes(organic_world: World) -> None:
    """Raising the organic multiplier shows that rule's extra points and the members buying organic."""
    ids = await _shop(organic_world)
    draft = versions.check(ORGANIC.replace("earn: {multiplier: 2}", "earn: {multiplier: 3}"))
    report = await backtest.backtest(
        organic_world.db, organic_world.tenant_id, draft, since=SINCE, until=UNTIL
    )
    by_rule = {r.rule: r for r in report.rules}
    # Organic lines (4 x 2.50, 5 x 4.99) booked one extra part each; the draft gives them one more:
    # the food buyer 27 -> 37 points, the organic buyer 49 (49.90) -> 74 (74.85).
    assert by_rule["organic-double"].actual == Decimal("34.95")
    assert by_rule["organic-double"].draft == Decimal("69.90")
    assert by_rule["organic-double"].difference == Decimal("34.95")
    assert by_rule["base"].difference == 0
    assert report.rules[0].rule == "organic-double", "the largest difference comes first"
    assert report.difference == 10 + 25 and report.members_changed == 2
    assert [(m.member_id, m.difference) for m in report.top_members] == [
        (ids["organic"], 25),
        (ids["food"], 10),
    ]
    assert report.top_members[0].draft == report.top_members[0].actual + 25
    assert report.difference_share == pytest.approx(35 / report.actual_points)


async def test_period_includes_since_and_excludes_until(world: World) -> None:
    """Only purchases with since <= occurred_at < until are replayed."""
    member = await _member(world)
    for ref, at in (
        ("before", SINCE - timedelta(microseconds=1)),
        ("first", SINCE),
        ("last", UNTIL - DAY),
        ("end", UNTIL),
    ):
        await _buy(world, ref, member, ("BREAD", 1000, 1), at=at)
    report = await backtest.backtest(
        world.db, world.tenant_id, versions.check(PROGRAM), since=SINCE, until=UNTIL
    )
    assert report.transactions == 2 and report.actual_points == 20
    totals = await backtest.points_per_rule(world.db, world.tenant_id, since=SINCE, until=UNTIL)
    assert [(t.rule, t.transactions, t.points) for t in totals] == [("base", 2, Decimal("20.00"))]


async def test_pages_replay_every_purchase_once_in_time_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Purchases sharing one instant across page boundaries are each replayed once, with progress reported."""
    monkeypatch.setattr(backtest, "BATCH_SIZE", 3)
    member = await _member(world)
    for i in range(7):
        await _buy(world, f"r{i}", member, ("BREAD", 100 * (i + 1), 1), at=SINCE + DAY * (i // 4))
    seen: list[tuple[int, int]] = []
    report = await backtest.backtest(
        world.db,
        world.tenant_id,
        versions.check(PROGRAM),
        since=SINCE,
        until=UNTIL,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.transactions == 7 and report.actual_points == report.draft_points == 28
    assert seen == [(3, 7), (6, 7), (7, 7)]


async def test_refunds_count_the_kept_lines(world: World) -> None:
    """A partly refunded purchase is priced on its kept lines on both sides; a fully refunded one is not."""
    member = await _member(world)
    part = await _buy(world, "part", member, ("BREAD", 1000, 2), ("MILK", 500, 1))
    whole = await _buy(world, "whole", member, ("CAKE", 700, 1))
    await transactions.refund(world.db, world.tenant_id, part.transaction_id, now=NOW, lines={0: 1})
    await transactions.refund(world.db, world.tenant_id, whole.transaction_id, now=NOW)
    same = await backtest.backtest(
        world.db, world.tenant_id, versions.check(PROGRAM), since=SINCE, until=UNTIL
    )
    assert (same.transactions, same.partly_refunded, same.fully_refunded) == (1, 1, 1)
    assert same.actual_points == same.draft_points == 15 and same.difference == 0
    doubled = versions.check(PROGRAM.replace("per_currency_unit: 1", "per_currency_unit: 2"))
    report = await backtest.backtest(world.db, world.tenant_id, doubled, since=SINCE, until=UNTIL)
    assert (report.actual_points, report.draft_points) == (15, 30)


async def test_tier_changes_follow_the_drafts_ladder(world: World) -> None:
    """Lowering silver's threshold moves the members whose period points reach it, and no one else."""
    big, small = await _member(world), await _member(world)
    await _buy(world, "b1", big, ("TV", 60_000, 1))
    await _buy(world, "s1", small, ("PEN", 10_000, 1))
    draft = versions.check(PROGRAM.replace("min: 1000", "min: 500"))
    report = await backtest.backtest(world.db, world.tenant_id, draft, since=SINCE, until=UNTIL)
    assert report.difference == 0 and report.members_changed == 0
    assert report.tier_changes == 1
    assert report.tier_shifts == (backtest.TierShift("bronze", "silver", 1),)
    assert report.top_tier_changes == (backtest.TierDiff(big, "bronze", "silver", 600, 600),)


async def test_points_per_rule_add_up_to_the_booked_evaluations(organic_world: World) -> None:
    """Points per rule over a period equal the sum of the per-rule points stored with each purchase."""
    await _shop(organic_world)
    await _buy(
        organic_world, "late", await _member(organic_world), ("PEAR", 300, 1, "organic"), at=UNTIL + DAY
    )
    totals = await backtest.points_per_rule(
        organic_world.db, organic_world.tenant_id, since=SINCE, until=UNTIL
    )
    booked: dict[str, Decimal] = {}
    for ref in ("f1", "f2", "o1", "s1"):
        posting = await transactions.find_transaction(
            organic_world.db, organic_world.tenant_id, organic_world.outlet_id, ref
        )
        for r in posting.evaluation["rules"]:
            booked[r["rule"]] = booked.get(r["rule"], Decimal(0)) + Decimal(r["points"])
    assert {t.rule: t.points for t in totals} == booked
    assert [t.rule for t in totals] == ["base", "organic-double"], "most points first"
    assert {t.rule: (t.applications, t.transactions) for t in totals} == {
        "base": (4, 3),
        "organic-double": (2, 2),
    }


async def test_empty_period_reports_nothing(world: World) -> None:
    """A period without purchases replays nothing, reports zeros and still calls progress once."""
    member = await _member(world)
    await _buy(world, "r1", member, ("BREAD", 1000, 1), at=SINCE - DAY)
    seen: list[tuple[int, int]] = []
    report = await backtest.backtest(
        world.db,
        world.tenant_id,
        versions.check(PROGRAM),
        since=SINCE,
        until=UNTIL,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (report.transactions, report.actual_points, report.draft_points, report.difference) == (0, 0, 0, 0)
    assert report.difference_share is None and report.rules == () and report.members == 0
    assert seen == [(0, 0)]
    assert await backtest.points_per_rule(world.db, world.tenant_id, since=SINCE, until=UNTIL) == []


async def test_a_once_per_member_bonus_used_before_the_period_is_not_granted_again(db) -> None:  # type: ignore[no-untyped-def]
    """Replaying the booked program shows no difference for a per-member-limited rule used before `since`."""
    document = PROGRAM.replace(
        "  - id: wash-stamps",
        "  - id: welcome\n    earn: {points: 100}\n    limit: {per_member: 1}\n  - id: wash-stamps",
    )
    world = await make_world(db, document)
    member = await membership.create_member(world.db, world.tenant_id, now=SINCE - 10 * DAY)
    first = SINCE - 9 * DAY
    await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="p-1",
        occurred_at=first,
        items=basket(("ITEM", 1000, 1)),
        member_id=member.id,
        now=first,
    )
    later = SINCE + 5 * DAY
    await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="p-2",
        occurred_at=later,
        items=basket(("ITEM", 1000, 1)),
        member_id=member.id,
        now=later,
    )
    report = await backtest.backtest(
        world.db, world.tenant_id, versions.check(document), since=SINCE, until=UNTIL
    )
    assert report.transactions == 1 and report.actual_points == 10  # the welcome bonus went with p-1
    assert report.difference == 0, report.rules


async def test_a_draft_campaign_costs_only_its_treated_members(world: World) -> None:
    """A draft rule with a control group: the backtest gives its points only to members outside the
    control group, the very members the tills would give them to, so the estimate is the real cost."""
    import rules

    members = [(await membership.create_member(world.db, world.tenant_id, now=SINCE)).id for _ in range(30)]
    for n, member in enumerate(members):
        await _buy(world, f"c{n}", member, ("BREAD", 300, 1), at=SINCE + DAY + n * timedelta(minutes=5))
    bonus = PROGRAM + "  - id: welcome\n    when: member.visits == 0\n    earn: {points: 10}\n"
    everyone = await backtest.backtest(
        world.db, world.tenant_id, versions.check(bonus), since=SINCE, until=UNTIL
    )
    held = versions.check(bonus + "    holdout: 0.3\n")
    treated = [m for m in members if not rules.in_control("welcome", str(m), 0.3)]
    campaign = await backtest.backtest(world.db, world.tenant_id, held, since=SINCE, until=UNTIL)
    assert {r.rule: r.draft for r in everyone.rules}["welcome"] == 10 * len(members)
    assert {r.rule: r.draft for r in campaign.rules}["welcome"] == 10 * len(treated) < 10 * len(members)
