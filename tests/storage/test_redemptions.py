"""Redeeming rewards: nearest expiry first, never overdrawn, cancellable the same day."""

from __future__ import annotations

from datetime import timedelta

import pytest

from loyalty.errors import Conflict, InsufficientPoints, NotAllowed
from loyalty.members import membership
from loyalty.ops import jobs
from loyalty.points import balances, redemptions

from .conftest import NOW, World
from .helpers import member_with, post
from .invariants import assert_books_balance


async def test_redemption_draws_nearest_expiry_first(world: World) -> None:
    """Spending takes the lot that expires first, and records the draws."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await post(world, "old", 20_000, member, at=NOW - timedelta(days=40), now=NOW - timedelta(days=40))
    await post(world, "new", 20_000, member, at=NOW - timedelta(days=20), now=NOW - timedelta(days=20))
    await jobs.release_pending(world.db, world.tenant_id, now=NOW)
    result = await redemptions.redeem(world.db, world.tenant_id, member, "COFFEE", now=NOW)
    assert [amount for _, amount in result.draws] == [200, 100]
    assert result.available_after == 100
    await assert_books_balance(world.db, world.tenant_id)


async def test_insufficient_points_writes_nothing(world: World) -> None:
    """A reward the balance does not cover is refused and the balance stays as it was."""
    member = await member_with(world, 299)
    with pytest.raises(InsufficientPoints) as err:
        await redemptions.redeem(world.db, world.tenant_id, member, "COFFEE", now=NOW)
    assert (err.value.available, err.value.cost) == (299, 300)
    assert (await balances.balance(world.db, world.tenant_id, member, now=NOW)).available == 299


async def test_reward_above_tier_is_refused(world: World) -> None:
    """A reward with a minimum tier is refused to a member below it."""
    member = await member_with(world, 500)
    with pytest.raises(NotAllowed):
        await redemptions.redeem(world.db, world.tenant_id, member, "LOUNGE", now=NOW)


async def test_cancel_same_day_restores_exact_lots(world: World) -> None:
    """Cancelling on the same day gives each drawn lot back exactly what was taken from it."""
    member = await member_with(world, 250)
    await membership.create_member(world.db, world.tenant_id, now=NOW)
    from loyalty.points import adjustments

    await adjustments.adjust(world.db, world.tenant_id, member, 100, reason="second lot", actor="t", now=NOW)
    done = await redemptions.redeem(world.db, world.tenant_id, member, "COFFEE", now=NOW)
    cancelled = await redemptions.cancel(
        world.db, world.tenant_id, done.redemption_id, now=NOW + timedelta(hours=2)
    )
    assert cancelled.restored == 300 and cancelled.available_after == 350
    with pytest.raises(Conflict):
        await redemptions.cancel(world.db, world.tenant_id, done.redemption_id, now=NOW + timedelta(hours=3))
    await assert_books_balance(world.db, world.tenant_id)


async def test_cancel_next_day_is_refused(world: World) -> None:
    """A redemption cannot be cancelled on a later day."""
    member = await member_with(world, 300)
    done = await redemptions.redeem(world.db, world.tenant_id, member, "COFFEE", now=NOW)
    with pytest.raises(NotAllowed):
        await redemptions.cancel(world.db, world.tenant_id, done.redemption_id, now=NOW + timedelta(days=1))


async def test_voucher_is_used_once(world: World) -> None:
    """A stamp-card voucher can be redeemed once; the second attempt is a conflict."""
    from loyalty.points import transactions

    from .conftest import basket

    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="w",
        occurred_at=NOW,
        items=basket(("WASH", 800, 5)),
        member_id=member,
        now=NOW,
    )
    [voucher] = posting.voucher_ids
    used = await redemptions.use_voucher(world.db, world.tenant_id, member, voucher, now=NOW)
    assert used.reward_code == "FREE-WASH" and used.cost == 0
    with pytest.raises(Conflict):
        await redemptions.use_voucher(world.db, world.tenant_id, member, voucher, now=NOW)
