"""Refunds: points of returned items reversed, debt when they were spent, never beyond what was bought."""

from __future__ import annotations

from datetime import timedelta

import pytest

from loyalty.errors import InvalidInput
from loyalty.members import membership
from loyalty.ops import jobs
from loyalty.points import balances, redemptions, transactions

from .conftest import NOW, World, basket
from .helpers import post
from .invariants import assert_books_balance

LATER = NOW + timedelta(days=15)


async def test_partial_refund_reverses_the_items_points(world: World) -> None:
    """Returning one of three units reverses a third of that line's points."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="r",
        occurred_at=NOW,
        items=basket(("A", 1000, 3), ("B", 500, 1)),
        member_id=member,
        now=NOW,
    )
    assert posting.points == 35
    result = await transactions.refund(
        world.db, world.tenant_id, posting.transaction_id, lines={0: 1}, now=NOW
    )
    assert (result.points, result.debt, result.amount) == (10, 0, 1000)
    assert (await balances.balance(world.db, world.tenant_id, member, now=NOW)).pending == 25
    rest = await transactions.refund(world.db, world.tenant_id, posting.transaction_id, now=NOW)
    assert rest.points == 25 and rest.lines == {0: 2, 1: 1}
    await assert_books_balance(world.db, world.tenant_id)


async def test_refund_more_than_bought_is_an_error(world: World) -> None:
    """Refunding more units than were bought (or are left) is refused."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await post(world, "r", 1000, member, quantity=2)
    await transactions.refund(world.db, world.tenant_id, posting.transaction_id, lines={0: 1}, now=NOW)
    with pytest.raises(InvalidInput, match="more than was bought"):
        await transactions.refund(world.db, world.tenant_id, posting.transaction_id, lines={0: 2}, now=NOW)
    with pytest.raises(InvalidInput):
        await transactions.refund(world.db, world.tenant_id, posting.transaction_id, lines={5: 1}, now=NOW)


async def test_refund_after_spending_leaves_debt_paid_by_later_points(world: World) -> None:
    """A refund after the points were spent leaves a debt, and later points pay it off first."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await post(world, "big", 40_000, member)
    await jobs.release_pending(world.db, world.tenant_id, now=LATER)
    await redemptions.redeem(world.db, world.tenant_id, member, "COFFEE", now=LATER)
    result = await transactions.refund(world.db, world.tenant_id, posting.transaction_id, now=LATER)
    assert (result.points, result.debt) == (400, 300)
    view = await balances.balance(world.db, world.tenant_id, member, now=LATER)
    assert (view.available, view.debt) == (0, 300)
    await post(world, "next", 50_000, member, at=LATER, now=LATER)
    await jobs.release_pending(world.db, world.tenant_id, now=LATER + timedelta(days=15))
    view = await balances.balance(world.db, world.tenant_id, member, now=LATER + timedelta(days=15))
    assert (view.available, view.debt) == (200, 0)
    await assert_books_balance(world.db, world.tenant_id)


async def test_reward_on_refunded_purchase_stays_redeemed(world: World) -> None:
    """A reward redeemed with a purchase stays redeemed when the purchase is refunded, charged once."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    from loyalty.points import adjustments

    await adjustments.adjust(world.db, world.tenant_id, member, 300, reason="gift", actor="t", now=NOW)
    posting = await post(world, "p", 1000, member)
    done = await redemptions.redeem(
        world.db,
        world.tenant_id,
        member,
        "COFFEE",
        now=NOW,
        transaction_id=posting.transaction_id,
        outlet_id=world.outlet_id,
    )
    await transactions.refund(world.db, world.tenant_id, posting.transaction_id, now=NOW)
    view = await balances.balance(world.db, world.tenant_id, member, now=NOW)
    assert (view.available, view.pending, view.debt) == (0, 0, 0)
    history = await balances.history(world.db, world.tenant_id, member)
    assert [r.cause for r in history.rows].count("redemption") == 1
    assert done.cost == 300
    await assert_books_balance(world.db, world.tenant_id)


async def test_refund_with_same_external_id_applies_once(world: World) -> None:
    """A refund retried with its external id is applied once."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await post(world, "p", 1000, member, quantity=3)
    one = await transactions.refund(
        world.db, world.tenant_id, posting.transaction_id, lines={0: 1}, external_id="ret-1", now=NOW
    )
    two = await transactions.refund(
        world.db, world.tenant_id, posting.transaction_id, lines={0: 1}, external_id="ret-1", now=NOW
    )
    assert two.replayed and two.refund_id == one.refund_id
    assert (await balances.balance(world.db, world.tenant_id, member, now=NOW)).pending == 20
