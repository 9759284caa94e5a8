"""Jobs: pending points turn available, lots expire without collapse, tiers follow the rolling window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loyalty.members import membership
from loyalty.ops import jobs
from loyalty.points import adjustments, balances, redemptions

from .conftest import NOW, World
from .helpers import post
from .invariants import assert_books_balance

# Earned on 2025-03-10 with expire_after_months 2: expires at the end of May 2025 (Berlin time).
END_OF_MAY = datetime(2025, 5, 31, 22, 0, tzinfo=UTC)


async def test_pending_points_become_available_after_window(world: World) -> None:
    """Points stay pending for the return window and turn available afterwards, once."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await post(world, "p", 1000, member)
    early = await jobs.release_pending(world.db, world.tenant_id, now=NOW + timedelta(days=13))
    assert early.lots == 0
    done = await jobs.release_pending(world.db, world.tenant_id, now=NOW + timedelta(days=14))
    again = await jobs.release_pending(world.db, world.tenant_id, now=NOW + timedelta(days=14))
    assert (done.lots, done.points, again.lots) == (1, 10, 0)
    view = await balances.balance(world.db, world.tenant_id, member, now=NOW + timedelta(days=14))
    assert (view.available, view.pending) == (10, 0)
    await assert_books_balance(world.db, world.tenant_id)


async def test_expiry_at_end_of_month_takes_only_what_remains(world: World) -> None:
    """A lot expires at the end of the policy's month and loses only its unspent points."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await adjustments.adjust(world.db, world.tenant_id, member, 500, reason="gift", actor="t", now=NOW)
    await redemptions.redeem(world.db, world.tenant_id, member, "COFFEE", now=NOW)
    before = await jobs.expire_lots(world.db, world.tenant_id, now=END_OF_MAY - timedelta(seconds=1))
    assert before.lots == 0
    result = await jobs.expire_lots(world.db, world.tenant_id, now=END_OF_MAY)
    assert (result.lots, result.points) == (1, 200)
    assert (await jobs.expire_lots(world.db, world.tenant_id, now=END_OF_MAY)).lots == 0
    view = await balances.balance(world.db, world.tenant_id, member, now=END_OF_MAY)
    assert view.available == 0
    await assert_books_balance(world.db, world.tenant_id)


async def test_balance_shows_points_expiring_by_month(world: World) -> None:
    """The balance lists the points expiring in this and the next two months."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await adjustments.adjust(world.db, world.tenant_id, member, 120, reason="gift", actor="t", now=NOW)
    view = await balances.balance(world.db, world.tenant_id, member, now=NOW + timedelta(days=30))
    assert [(e.month, e.points) for e in view.expiring] == [("2025-04", 0), ("2025-05", 120), ("2025-06", 0)]


async def test_tier_upgrades_on_earn_and_downgrades_only_at_evaluation(world: World) -> None:
    """Earning past a threshold upgrades at once; falling out of the window downgrades only at evaluation."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await post(world, "big", 100_000, member)
    assert (await membership.get_member(world.db, world.tenant_id, member)).tier == "silver"
    a_year_later = NOW + timedelta(days=400)
    assert (await membership.get_member(world.db, world.tenant_id, member)).tier == "silver"
    result = await jobs.evaluate_tiers(world.db, world.tenant_id, now=a_year_later)
    assert result.members >= 1
    assert (await membership.get_member(world.db, world.tenant_id, member)).tier == "bronze"
    assert (await jobs.evaluate_tiers(world.db, world.tenant_id, now=a_year_later)).members == 0


async def test_balance_shows_tier_progress_and_rewards_in_reach(world: World) -> None:
    """The balance says how far the next tier is and which rewards the points cover."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await post(world, "p", 40_000, member)
    await adjustments.adjust(world.db, world.tenant_id, member, 150, reason="gift", actor="t", now=NOW)
    view = await balances.balance(world.db, world.tenant_id, member, now=NOW)
    assert view.tier is not None and (view.tier.tier, view.tier.value, view.tier.missing) == (
        "bronze",
        400,
        600,
    )
    assert [(r.code, r.affordable) for r in view.rewards] == [("CAKE", True), ("COFFEE", False)]


async def test_history_pages_newest_first(world: World) -> None:
    """History lists one row per operation, newest first, page by page."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    for i in range(5):
        await post(world, f"p{i}", 1000 * (i + 1), member)
    first = await balances.history(world.db, world.tenant_id, member, limit=3)
    assert [r.pending for r in first.rows] == [50, 40, 30] and first.next_before is not None
    second = await balances.history(world.db, world.tenant_id, member, limit=3, before=first.next_before)
    assert [r.pending for r in second.rows] == [20, 10] and second.next_before is None
