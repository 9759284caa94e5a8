"""Customer figures on a small history computed by hand: rhythm, at-risk, RFM quintiles, refunds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from loyalty.members import membership
from loyalty.points import refunds
from loyalty.value import figures
from loyalty.value.figures import Settings

from .conftest import NOW, SETUP, World
from .helpers import post

DAY = timedelta(days=1)


async def _member(world: World) -> int:
    return (await membership.create_member(world.db, world.tenant_id, now=SETUP)).id


async def test_figures_of_a_small_history(world: World) -> None:
    steady, lapsing, once, twice_a_day, refunded = [await _member(world) for _ in range(5)]
    # Every ten days, last seen ten days ago: right on rhythm.
    for days in (30, 20, 10):
        await post(world, f"s{days}", 1000, steady, at=NOW - days * DAY)
    # The same rhythm, silent for 80 days since: eight intervals overdue.
    for days in (100, 90, 80):
        await post(world, f"l{days}", 1000, lapsing, at=NOW - days * DAY)
    await post(world, "o", 500, once, at=NOW - 5 * DAY)
    # Two purchases on one day are one purchase day.
    await post(world, "t1", 700, twice_a_day, at=NOW - 50 * DAY)
    await post(world, "t2", 700, twice_a_day, at=NOW - 50 * DAY + timedelta(hours=2))
    # Returned in full: nothing was bought; and a purchase older than the window does not count.
    gone = await post(world, "r", 900, refunded, at=NOW - 3 * DAY)
    await refunds.refund(world.db, world.tenant_id, gone.transaction_id, now=NOW - 3 * DAY)
    await post(world, "old", 5000, steady, at=NOW - 400 * DAY)

    found, fit = await figures.compute(world.db, world.tenant_id, now=NOW, settings=Settings(window_days=365))
    by = {f.member_id: f for f in found}
    assert set(by) == {steady, lapsing, once, twice_a_day}
    assert fit is None  # four members: too few to fit the value models

    s, lap, o, t = by[steady], by[lapsing], by[once], by[twice_a_day]
    assert (s.purchase_days, s.spend, s.typical_interval_days) == (3, 3000, pytest.approx(10.0))
    assert s.recency_days == pytest.approx(10.0) and s.expected_visit_in_days == pytest.approx(0.0)
    assert not s.at_risk
    assert lap.typical_interval_days == pytest.approx(10.0)
    assert lap.expected_visit_in_days == pytest.approx(-70.0) and lap.at_risk
    # Fewer than three purchase days: no rhythm yet, so never at risk by it.
    assert (o.typical_interval_days, o.expected_visit_in_days, o.at_risk) == (None, None, False)
    assert (t.purchase_days, t.spend, t.at_risk) == (1, 1400, False)

    # Quintiles by percent rank: ties share the lowest score of their group, the highest is 5.
    # last purchase: lapsing 0, twice_a_day 1/3, steady 2/3, once 1.
    assert [by[m].r for m in (lapsing, twice_a_day, steady, once)] == [1, 2, 4, 5]
    # purchase days: once and twice_a_day 1 (both rank first), steady and lapsing 3 (2/3).
    assert [by[m].f for m in (once, twice_a_day, steady, lapsing)] == [1, 1, 4, 4]
    # spend: 500, 1400, then 3000 twice (2/3).
    assert [by[m].m for m in (once, twice_a_day, steady, lapsing)] == [1, 2, 4, 4]
    assert s.rfm == "444"


async def test_at_risk_follows_each_members_own_rhythm(world: World) -> None:
    """Thirty days of silence is nothing for a monthly customer and a warning for a weekly one."""
    weekly, monthly = await _member(world), await _member(world)
    for i in range(4):
        await post(world, f"w{i}", 1000, weekly, at=NOW - (30 + 7 * (3 - i)) * DAY)
        await post(world, f"m{i}", 1000, monthly, at=NOW - (30 + 30 * (3 - i)) * DAY)
    found, _ = await figures.compute(world.db, world.tenant_id, now=NOW)
    by = {f.member_id: f for f in found}
    assert by[weekly].at_risk and not by[monthly].at_risk
    assert by[weekly].recency_days == by[monthly].recency_days == pytest.approx(30.0)


async def test_value_models_fitted_on_the_tenant_rank_the_steady_above_the_lapsed(world: World) -> None:
    """With enough repeat buyers the tenant's own BG/NBD and Gamma-Gamma fits give each member a
    chance of being alive and a predicted value: the same history, stopped long ago, is worth less."""
    steady, lapsed = [], []
    for n in range(40):
        member = await _member(world)
        stop = 0 if n % 2 == 0 else 120  # half of them stopped coming four months ago
        for visit in range(4):
            days = stop + 10 + 15 * visit + n % 5
            await post(world, f"v{n}-{visit}", 1000 + 100 * (n % 7), member, at=NOW - days * DAY)
        (steady if stop == 0 else lapsed).append(member)
    found, fit = await figures.compute(world.db, world.tenant_id, now=NOW)
    assert fit is not None
    by = {f.member_id: f for f in found}
    alive = [by[m].alive for m in steady], [by[m].alive for m in lapsed]
    value = [by[m].predicted_value for m in steady], [by[m].predicted_value for m in lapsed]
    assert min(a for a in alive[0] if a is not None) > max(a for a in alive[1] if a is not None)
    assert min(v for v in value[0] if v is not None) > max(v for v in value[1] if v is not None) >= 0
    assert all(by[m].at_risk for m in lapsed) and not any(by[m].at_risk for m in steady)
