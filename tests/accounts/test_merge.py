"""Merging a second account of one person into the first: the books stay exact, nothing is lost."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from loyalty.errors import Conflict, InvalidInput, NotFound
from loyalty.members import membership
from loyalty.members.merge import merge
from loyalty.ops import audit, jobs, reports
from loyalty.points import redemptions, refunds, transactions
from loyalty.storage import outbox
from loyalty.storage.models import AuditEntry, Event, Member, PointLot, StampCard, TierChange, Voucher
from tests.storage.conftest import NOW, World, basket, make_world
from tests.storage.helpers import member_with
from tests.storage.invariants import assert_books_balance

MERGED_AT = NOW + timedelta(hours=1)


async def _card_member(world: World, number: str) -> int:
    return (await membership.resolve_card(world.db, world.tenant_id, number, now=NOW - timedelta(days=60))).id


async def _buy(world: World, ext: str, member: int, at: datetime, *lines: tuple[str, int, int]) -> int:
    """A purchase posted at ``at`` (the till's clock); returns its points."""
    posting = await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id=ext,
        occurred_at=at,
        items=basket(*lines),
        member_id=member,
        now=at,
    )
    return posting.points


@dataclass(frozen=True)
class Figures:
    available: int
    pending: int
    debt: int
    visits: int
    last_visit_at: datetime | None
    tier: str | None
    state: str
    merged_into: int | None
    closed_at: datetime | None


async def _figures(world: World, member_id: int) -> Figures:
    async with world.db.read() as s:
        m = await s.scalar(select(Member).where(Member.tenant_id == world.tenant_id, Member.id == member_id))
    assert m is not None
    return Figures(
        m.available, m.pending, m.debt, m.visits, m.last_visit_at, m.tier, m.state, m.merged_into, m.closed_at
    )


async def _lots(world: World, member_id: int) -> dict[int, tuple[str, int, datetime, datetime | None]]:
    """Lot id -> (state, remaining, pending_until, expires_at) of the member's lots."""
    async with world.db.read() as s:
        rows = await s.scalars(
            select(PointLot).where(PointLot.tenant_id == world.tenant_id, PointLot.member_id == member_id)
        )
        return {lot.id: (lot.state, lot.remaining, lot.pending_until, lot.expires_at) for lot in rows}


async def _stamps(world: World, member_id: int) -> dict[str, int]:
    async with world.db.read() as s:
        rows = await s.scalars(
            select(StampCard).where(StampCard.tenant_id == world.tenant_id, StampCard.member_id == member_id)
        )
        return {r.card: r.stamps for r in rows}


async def _events(world: World, type: str) -> list[tuple[int, dict[str, Any]]]:
    async with world.db.read() as s:
        rows = await s.scalars(
            select(Event).where(Event.tenant_id == world.tenant_id, Event.type == type).order_by(Event.id)
        )
        return [(e.member_id, e.data) for e in rows]


async def _assert_audit_clean(world: World) -> None:
    report = await audit.audit(world.db, world.tenant_id)
    assert report.ok, report.findings
    await assert_books_balance(world.db, world.tenant_id)


async def test_merge_moves_lots_stamps_voucher_tier_and_cards(world: World) -> None:
    """After a merge the target holds both accounts' points in their own lots (expiry and pending dates
    kept), the stamps add up, the voucher and the cards are its own, it keeps the higher tier, the
    source is closed holding nothing, and the books, the audit and the liability are unchanged."""
    numbers = await membership.issue_cards(
        world.db, world.tenant_id, 2, actor="t", now=NOW - timedelta(days=60)
    )
    source, target = await _card_member(world, numbers[0]), await _card_member(world, numbers[1])
    # The source: 1,060 points in January (silver, a voucher and one stamp left), 150 pending now.
    a = await _buy(world, "a", source, NOW - timedelta(days=40), ("ITEM", 100_000, 1), ("WASH", 1_000, 6))
    p = await _buy(world, "p", source, NOW - timedelta(days=1), ("ITEM", 10_000, 1))
    # The target: 400 + 30 points in February, three wash stamps, no tier above bronze.
    b = await _buy(world, "b", target, NOW - timedelta(days=20), ("ITEM", 40_000, 1))
    d = await _buy(world, "d", target, NOW - timedelta(days=19), ("WASH", 1_000, 3))
    await jobs.release_pending(world.db, world.tenant_id, now=NOW)

    before_source, before_target = await _figures(world, source), await _figures(world, target)
    assert (before_source.available, before_source.pending) == (a, p)
    assert (before_target.available, before_target.pending) == (b + d, 0)
    assert before_source.tier == "silver" and before_target.tier != "silver"
    source_lots, target_lots = await _lots(world, source), await _lots(world, target)
    assert len({lot[3] for lot in source_lots.values()} | {lot[3] for lot in target_lots.values()}) >= 2
    liability = await reports.liability(world.db, world.tenant_id)

    result = await merge(world.db, world.tenant_id, source, into=target, actor="admin:1", now=MERGED_AT)

    assert (result.points_moved, result.debt_moved) == (a + p, 0)
    assert result.cards_moved == (numbers[0],)
    after = await _figures(world, target)
    assert (after.available, after.pending, after.debt) == (a + b + d, p, 0)
    assert (result.member.available, result.member.pending, result.member.debt) == (a + b + d, p, 0)
    assert after.visits == before_source.visits + before_target.visits == 4
    assert after.last_visit_at == NOW - timedelta(days=1)
    assert after.tier == "silver" and result.member.tier == "silver"
    closed = await _figures(world, source)
    assert (closed.available, closed.pending, closed.debt) == (0, 0, 0)
    assert (closed.state, closed.merged_into, closed.closed_at) == ("merged", target, MERGED_AT)
    # Every lot of the source is the target's now, as it was: state, points, pending and expiry dates.
    assert await _lots(world, source) == {}
    assert await _lots(world, target) == source_lots | target_lots
    assert await _stamps(world, target) == {"wash": 1 + 3}
    assert await _stamps(world, source) == {"wash": 0}
    async with world.db.read() as s:
        vouchers = (
            await s.scalars(select(Voucher.member_id).where(Voucher.tenant_id == world.tenant_id))
        ).all()
        tier_rows = (
            await s.scalars(
                select(TierChange).where(
                    TierChange.tenant_id == world.tenant_id, TierChange.reason == "merge"
                )
            )
        ).all()
        logged = (
            await s.scalars(
                select(AuditEntry).where(
                    AuditEntry.tenant_id == world.tenant_id, AuditEntry.action == "merge_members"
                )
            )
        ).all()
    assert vouchers == [target]
    assert [(t.member_id, t.from_tier, t.to_tier) for t in tier_rows] == [
        (target, before_target.tier, "silver")
    ]
    assert [(e.entity_id, e.actor, e.details["into"]) for e in logged] == [(str(source), "admin:1", target)]
    merged_events = await _events(world, "member.merged")
    assert merged_events == [
        (source, {"into_member_id": target, "points_moved": a + p}),
        (target, {"into_member_id": target, "points_moved": a + p}),
    ]
    for _, data in merged_events + await _events(world, "tier.changed"):
        outbox.check("member.merged" if "into_member_id" in data else "tier.changed", data)
    assert (await membership.get_card(world.db, world.tenant_id, numbers[0])).member_id == target

    await _assert_audit_clean(world)
    assert await reports.liability(world.db, world.tenant_id) == liability

    # The merged points are spent nearest expiry first: the source's January lot goes before the
    # target's February ones.
    (january_lot,) = [i for i, lot in source_lots.items() if lot[0] == "available"]
    spent = await redemptions.redeem(world.db, world.tenant_id, target, "COFFEE", now=MERGED_AT)
    assert spent.draws == ((january_lot, 300),)
    # A till posting with the source's old card books on the target.
    posting = await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="after",
        occurred_at=MERGED_AT,
        items=basket(("ITEM", 2_000, 1)),
        card_number=numbers[0],
        now=MERGED_AT,
    )
    assert posting.member_id == target
    assert (await _figures(world, source)).available == 0
    await _assert_audit_clean(world)


async def test_source_debt_is_paid_from_the_targets_points(world: World) -> None:
    """A source that owes points hands its debt over, and the target pays it at once from its own
    available points (debt is paid first): nobody ends owing while holding points."""
    source = await member_with(world, 0)
    earned = await _buy(world, "s1", source, NOW - timedelta(days=20), ("ITEM", 30_000, 1))
    await jobs.release_pending(world.db, world.tenant_id, now=NOW)
    await redemptions.redeem(world.db, world.tenant_id, source, "COFFEE", now=NOW)
    async with world.db.read() as s:
        tx = await s.scalar(text("SELECT id FROM transactions WHERE tenant_id = :t"), {"t": world.tenant_id})
    await refunds.refund(world.db, world.tenant_id, int(tx), now=NOW)
    assert (await _figures(world, source)).debt == earned == 300
    target = await member_with(world, 1_000)
    liability = await reports.liability(world.db, world.tenant_id)

    result = await merge(world.db, world.tenant_id, source, into=target, actor="admin", now=MERGED_AT)

    assert (result.points_moved, result.debt_moved) == (0, 300)
    after = await _figures(world, target)
    assert (after.available, after.pending, after.debt) == (700, 0, 0)
    assert (await _figures(world, source)).debt == 0
    await _assert_audit_clean(world)
    assert (await reports.liability(world.db, world.tenant_id)).net == liability.net


async def test_target_debt_is_paid_from_the_merged_points(world: World) -> None:
    """A target that owes points pays its debt from the points the source brings."""
    target = await member_with(world, 0)
    await _buy(world, "t1", target, NOW - timedelta(days=20), ("ITEM", 30_000, 1))
    await jobs.release_pending(world.db, world.tenant_id, now=NOW)
    await redemptions.redeem(world.db, world.tenant_id, target, "COFFEE", now=NOW)
    async with world.db.read() as s:
        tx = await s.scalar(text("SELECT id FROM transactions WHERE tenant_id = :t"), {"t": world.tenant_id})
    await refunds.refund(world.db, world.tenant_id, int(tx), now=NOW)
    source = await member_with(world, 250)
    await merge(world.db, world.tenant_id, source, into=target, actor="admin", now=MERGED_AT)
    after = await _figures(world, target)
    assert (after.available, after.debt) == (0, 50)
    await _assert_audit_clean(world)


async def test_a_source_purchase_returned_after_the_merge_books_on_the_target(world: World) -> None:
    """The source's purchases belong to the target after a merge: returning one takes the points back
    from its own lot, now the target's, and never leaves a debt on the closed account."""
    source = await member_with(world, 0)
    target = await member_with(world, 100)
    await _buy(world, "s1", source, NOW - timedelta(days=20), ("ITEM", 20_000, 1))
    await jobs.release_pending(world.db, world.tenant_id, now=NOW)
    await merge(world.db, world.tenant_id, source, into=target, actor="admin", now=MERGED_AT)
    async with world.db.read() as s:
        tx = await s.scalar(text("SELECT id FROM transactions WHERE tenant_id = :t"), {"t": world.tenant_id})
    done = await refunds.refund(world.db, world.tenant_id, int(tx), now=MERGED_AT)
    assert (done.member_id, done.points, done.debt) == (target, 200, 0)
    assert (await _figures(world, target)).available == 100
    closed = await _figures(world, source)
    assert (closed.available, closed.debt) == (0, 0)
    await _assert_audit_clean(world)


async def test_merge_of_a_member_into_itself_is_refused(world: World) -> None:
    """A member cannot be merged into itself."""
    member = await member_with(world, 10)
    with pytest.raises(InvalidInput):
        await merge(world.db, world.tenant_id, member, into=member, actor="admin", now=MERGED_AT)


async def test_merge_across_tenants_is_not_found(world: World) -> None:
    """Another tenant's member is not found, either way round, and nothing changes."""
    other = await make_world(world.db)
    mine = await member_with(world, 10)
    theirs = await member_with(other, 20)
    with pytest.raises(NotFound):
        await merge(world.db, world.tenant_id, mine, into=theirs, actor="admin", now=MERGED_AT)
    with pytest.raises(NotFound):
        await merge(world.db, world.tenant_id, theirs, into=mine, actor="admin", now=MERGED_AT)
    assert (await _figures(world, mine)).available == 10
    assert (await _figures(other, theirs)).available == 20


async def test_a_merged_member_cannot_be_merged_again(world: World) -> None:
    """A merged account is closed: neither merged again nor merged into; nothing is written."""
    source, target, third = (
        await member_with(world, 10),
        await member_with(world, 20),
        await member_with(world, 30),
    )
    await merge(world.db, world.tenant_id, source, into=target, actor="admin", now=MERGED_AT)
    with pytest.raises(Conflict):
        await merge(world.db, world.tenant_id, source, into=third, actor="admin", now=MERGED_AT)
    with pytest.raises(Conflict):
        await merge(world.db, world.tenant_id, third, into=source, actor="admin", now=MERGED_AT)
    assert (await _figures(world, third)).available == 30
    assert (await _figures(world, target)).available == 30
    await _assert_audit_clean(world)


async def test_merge_racing_postings_keeps_the_books(world: World) -> None:
    """Postings with the source's card while it is merged book either before the merge (and move)
    or after it (on the target): every point arrives once, and the books add up."""
    numbers = await membership.issue_cards(
        world.db, world.tenant_id, 2, actor="t", now=NOW - timedelta(days=60)
    )
    source, target = await _card_member(world, numbers[0]), await _card_member(world, numbers[1])
    await _buy(world, "s0", source, NOW - timedelta(days=1), ("ITEM", 10_000, 1))

    async def till(i: int) -> int:
        posting = await transactions.post_transaction(
            world.db,
            world.tenant_id,
            outlet_id=world.outlet_id,
            external_id=f"race-{i}",
            occurred_at=MERGED_AT,
            items=basket(("ITEM", 1_000, 1)),
            card_number=numbers[0],
            now=MERGED_AT,
        )
        return posting.points

    merging = merge(world.db, world.tenant_id, source, into=target, actor="admin", now=MERGED_AT)
    results = await asyncio.gather(merging, *(till(i) for i in range(8)))
    points = sum(results[1:])
    assert points == 8 * 10
    after = await _figures(world, target)
    assert after.available + after.pending == 100 + points
    closed = await _figures(world, source)
    assert (closed.available, closed.pending, closed.state) == (0, 0, "merged")
    await _assert_audit_clean(world)


async def test_two_merges_of_the_same_pair_at_once_make_one(world: World) -> None:
    """Merging A into B and B into A at the same moment: one wins, the other finds a merged member and
    is refused, and the points are counted once."""
    first, second = await member_with(world, 40), await member_with(world, 60)
    outcomes = await asyncio.gather(
        merge(world.db, world.tenant_id, first, into=second, actor="admin", now=MERGED_AT),
        merge(world.db, world.tenant_id, second, into=first, actor="admin", now=MERGED_AT),
        return_exceptions=True,
    )
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(done) == 1 and len(refused) == 1 and isinstance(refused[0], Conflict), outcomes
    survivor = done[0].target_id
    assert (await _figures(world, survivor)).available == 100
    assert (await _figures(world, done[0].source_id)).state == "merged"
    await _assert_audit_clean(world)
