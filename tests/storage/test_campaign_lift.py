"""The lift report on a synthetic history: a planted effect is recovered within its interval, and
where none was planted, none is found. Members' behaviour follows their (deterministic) group, the
report reads only the postings."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

import rules
from loyalty.errors import InvalidInput
from loyalty.members import membership
from loyalty.storage.db import Database
from loyalty.value import campaigns

from .conftest import NOW, PROGRAM, SETUP, World, make_world
from .helpers import post

DAY = timedelta(days=1)
CAMPAIGN = (
    PROGRAM
    + """\
  - id: winback
    when: member.days_since_last_visit > 30
    earn: {points: 100}
    limit: {per_member: 1}
    holdout: 0.5
"""
)
MEMBERS = 80


async def _history(world: World, *, treated_visits: tuple[int, ...], control_visits: tuple[int, ...]) -> None:
    """Every member shops once, stays away for 50 days, comes back (the campaign's exposure), then
    shops a number of times over the next 60 days drawn from their group's choices."""
    draws = random.Random(7)
    for n in range(MEMBERS):
        member = (await membership.create_member(world.db, world.tenant_id, now=SETUP)).id
        control = rules.in_control("winback", str(member), 0.5)
        await post(world, f"{n}-first", 1000, member, at=NOW - 200 * DAY)
        back = NOW - 150 * DAY + n * timedelta(minutes=7)
        await post(world, f"{n}-back", 1000, member, at=back)
        for visit in range(draws.choice(control_visits if control else treated_visits)):
            await post(world, f"{n}-v{visit}", 1000, member, at=back + (5 + 12 * visit) * DAY)


async def _lift(world: World) -> campaigns.Lift:
    return await campaigns.lift(
        world.db, world.tenant_id, "winback", now=NOW, since=NOW - 160 * DAY, until=NOW - 140 * DAY
    )


async def test_a_planted_effect_is_recovered_within_its_interval(db: Database) -> None:
    world = await make_world(db, CAMPAIGN)
    # Treated members come back 3 more times on average (2-4), control members once (0-2): +2 visits.
    await _history(world, treated_visits=(2, 3, 4), control_visits=(0, 1, 2))
    report = await _lift(world)
    assert report.treated + report.control == MEMBERS and min(report.treated, report.control) >= 25
    visits = {m.name: m for m in report.metrics}["visits"]
    assert visits.low <= 2 <= visits.high and visits.significant
    revenue = {m.name: m for m in report.metrics}["revenue"]
    assert revenue.low <= 2000 <= revenue.high
    cost = {m.name: m for m in report.metrics}["points_cost"]
    # The effect itself: 100 points to each treated member, none to the control group.
    assert (cost.treated, cost.control) == (100, 0) and report.points_given == 100 * report.treated


async def test_no_effect_is_found_where_none_was_planted(db: Database) -> None:
    world = await make_world(db, CAMPAIGN)
    await _history(world, treated_visits=(0, 1, 2), control_visits=(0, 1, 2))
    visits = {m.name: m for m in (await _lift(world)).metrics}["visits"]
    assert visits.low <= 0 <= visits.high and not visits.significant


async def test_a_rule_without_a_control_group_has_no_lift(world: World) -> None:
    with pytest.raises(InvalidInput, match="no control group"):
        await campaigns.lift(world.db, world.tenant_id, "base", now=NOW)
