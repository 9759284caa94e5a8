"""Write bugs of the old posting path, each pinned by the behaviour it broke (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from loyalty.members import membership
from loyalty.ops import jobs
from loyalty.points import balances, redemptions, transactions
from loyalty.storage.db import Database

from .conftest import NOW, PROGRAM, World, basket, make_world
from .helpers import post
from .invariants import assert_books_balance

# Earned on 2025-03-10 with expire_after_months 2: expires at the end of May 2025 (Berlin time).
END_OF_MAY = datetime(2025, 5, 31, 22, 0, tzinfo=UTC)

DAILY = (
    PROGRAM
    + """\
  - id: first-of-the-day
    earn: {points: 50}
    limit: {per_day: 1}
"""
)


async def _post(world: World, receipt: str, member: int, *, at: datetime, now: datetime, cents: int = 100):
    return await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id=receipt,
        occurred_at=at,
        items=basket(("ITEM", cents, 1)),
        member_id=member,
        now=now,
    )


async def test_a_late_receipt_counts_against_its_own_day_limit(db: Database) -> None:
    """A per-day limit holds on each day, also when a till posts an earlier day's receipt late."""
    world = await make_world(db, DAILY)
    member = (await membership.create_member(db, world.tenant_id, now=NOW)).id
    day2 = NOW + timedelta(days=1)
    first = await _post(world, "day2-a", member, at=day2, now=day2)
    late = await _post(world, "day1-late", member, at=NOW, now=day2 + timedelta(hours=1))
    again = await _post(world, "day2-b", member, at=day2 + timedelta(hours=2), now=day2 + timedelta(hours=2))
    assert [first.points, late.points, again.points] == [51, 51, 1], "one bonus per day, on each day"


async def test_refunding_points_that_expired_unspent_leaves_no_debt(world: World) -> None:
    """Points that expired unspent were never spent: returning their purchase creates no debt."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await post(world, "p", 10_000, member)
    await jobs.release_pending(world.db, world.tenant_id, now=NOW + timedelta(days=15))
    expired = await jobs.expire_lots(world.db, world.tenant_id, now=END_OF_MAY)
    assert expired.points == 100
    done = await transactions.refund(world.db, world.tenant_id, posting.transaction_id, now=END_OF_MAY)
    assert (done.points, done.debt) == (100, 0)
    view = await balances.balance(world.db, world.tenant_id, member, now=END_OF_MAY)
    assert (view.available, view.pending, view.debt) == (0, 0, 0)
    await assert_books_balance(world.db, world.tenant_id)


async def test_a_partly_spent_lot_that_expired_owes_only_what_was_spent(world: World) -> None:
    """Of a returned purchase's points, only the spent part becomes debt; the expired part does not."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await post(world, "p", 40_000, member)  # 400 points
    await jobs.release_pending(world.db, world.tenant_id, now=NOW + timedelta(days=15))
    await redemptions.redeem(world.db, world.tenant_id, member, "COFFEE", now=NOW + timedelta(days=15))
    await jobs.expire_lots(world.db, world.tenant_id, now=END_OF_MAY)  # the other 100 expire
    done = await transactions.refund(world.db, world.tenant_id, posting.transaction_id, now=END_OF_MAY)
    assert (done.points, done.debt) == (400, 300)
    await assert_books_balance(world.db, world.tenant_id)


async def _stamps(db: Database, tenant_id: int, member: int) -> tuple[int, list[str]]:
    async with db.read() as s:
        stamps = (
            await s.execute(
                text("SELECT stamps FROM stamp_cards WHERE tenant_id = :t AND member_id = :m"),
                {"t": tenant_id, "m": member},
            )
        ).scalar()
        vouchers = (
            await s.execute(
                text("SELECT status FROM vouchers WHERE tenant_id = :t AND member_id = :m ORDER BY id"),
                {"t": tenant_id, "m": member},
            )
        ).scalars()
        return int(stamps or 0), list(vouchers)


async def test_a_refund_takes_back_the_stamps_and_an_unused_voucher(world: World) -> None:
    """Returning washes takes their stamps off the card; a voucher they completed, still unused, goes."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="washes",
        occurred_at=NOW,
        items=basket(("WASH", 500, 6)),
        member_id=member,
        now=NOW,
    )
    assert len(posting.voucher_ids) == 1
    assert await _stamps(world.db, world.tenant_id, member) == (1, ["issued"])
    await transactions.refund(world.db, world.tenant_id, posting.transaction_id, lines={0: 1}, now=NOW)
    assert await _stamps(world.db, world.tenant_id, member) == (0, ["issued"])
    await transactions.refund(world.db, world.tenant_id, posting.transaction_id, lines={0: 2}, now=NOW)
    assert await _stamps(world.db, world.tenant_id, member) == (3, ["revoked"])


async def test_a_used_voucher_stays_used_and_stamps_never_go_below_zero(world: World) -> None:
    """A free wash already taken stays taken when its washes come back; the card stops at zero."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="washes",
        occurred_at=NOW,
        items=basket(("WASH", 500, 5)),
        member_id=member,
        now=NOW,
    )
    await redemptions.use_voucher(world.db, world.tenant_id, member, posting.voucher_ids[0], now=NOW)
    await transactions.refund(world.db, world.tenant_id, posting.transaction_id, lines={0: 2}, now=NOW)
    assert await _stamps(world.db, world.tenant_id, member) == (0, ["used"])


async def test_a_lot_still_pending_at_its_expiry_date_expires_then(db: Database) -> None:
    """A lot whose return window outlasts its expiry date expires on that date, out of pending."""
    slow = PROGRAM.replace(
        "expire_after_months: 2, pending_days: 14", "expire_after_months: 1, pending_days: 90"
    )
    world = await make_world(db, slow)
    member = (await membership.create_member(db, world.tenant_id, now=NOW)).id
    await post(world, "p", 10_000, member)
    end_of_april = datetime(2025, 4, 30, 22, 0, tzinfo=UTC)
    done = await jobs.expire_lots(db, world.tenant_id, now=end_of_april)
    assert (done.lots, done.points) == (1, 100)
    view = await balances.balance(db, world.tenant_id, member, now=end_of_april)
    assert (view.available, view.pending) == (0, 0)
    released = await jobs.release_pending(db, world.tenant_id, now=NOW + timedelta(days=91))
    assert released.lots == 0, "an expired lot is not released afterwards"
    await assert_books_balance(db, world.tenant_id)


async def test_a_refund_takes_from_the_purchases_own_lot_once(world: World) -> None:
    """Its own lot partly spent, a purchase's return takes what the lot still holds, then the member's
    other points, then debt: the own lot is not drawn a second time among the others."""
    from loyalty.points import adjustments

    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posting = await post(world, "p", 10_000, member)  # 100 points, expiring end of May
    later = NOW + timedelta(days=15)
    await jobs.release_pending(world.db, world.tenant_id, now=later)
    await adjustments.adjust(world.db, world.tenant_id, member, -80, reason="spent", actor="t", now=later)
    await adjustments.adjust(
        world.db, world.tenant_id, member, 50, reason="gift", actor="t", now=later + timedelta(days=15)
    )
    done = await transactions.refund(
        world.db, world.tenant_id, posting.transaction_id, now=later + timedelta(days=16)
    )
    assert (done.points, done.debt) == (100, 30)
    view = await balances.balance(world.db, world.tenant_id, member, now=later + timedelta(days=16))
    assert (view.available, view.debt) == (0, 30)
    await assert_books_balance(world.db, world.tenant_id)
