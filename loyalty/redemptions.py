"""Redeeming rewards for points or vouchers, and cancelling a redemption made by mistake.

Race safety: the points come off with one conditional statement,
``UPDATE members SET available = available - :cost WHERE ... AND available >= :cost``. Whoever runs it
second sees the first one's result (PostgreSQL re-checks the condition on the locked row; SQLite
runs writers one at a time), so concurrent redemptions never overdraw. The update also takes the
member's row lock, so the lots are then drawn by one transaction at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

import rules
from loyalty import ledger, programs, tiers
from loyalty.calendar import local_day
from loyalty.db import Database
from loyalty.errors import Conflict, InsufficientPoints, NotAllowed, NotFound
from loyalty.models import LotDraw, Member, Outlet, PointLot, Redemption, Transaction, Voucher


@dataclass(frozen=True, slots=True)
class RedemptionResult:
    redemption_id: int
    member_id: int
    reward_code: str
    cost: int
    #: (lot id, points) drawn, nearest expiry first; empty for a voucher.
    draws: tuple[tuple[int, int], ...]
    available_after: int
    voucher_id: int | None = None


@dataclass(frozen=True, slots=True)
class CancelResult:
    redemption_id: int
    restored: int
    available_after: int


def _reward(program: rules.CheckedProgram, code: str) -> rules.document.Reward:
    for reward in program.document.rewards:
        if reward.code == code:
            return reward
    raise NotFound(f"reward {code!r} is not in the program")


def _tier_allows(program: rules.CheckedProgram, min_tier: str | None, tier: str | None) -> bool:
    if min_tier is None:
        return True
    names = [lv.name for lv in tiers.levels(program)]
    mine = tiers.known_tier(program, tier) or (names[0] if names else None)
    return mine is not None and min_tier in names and names.index(mine) >= names.index(min_tier)


async def _check_refs(
    s: AsyncSession, tenant_id: int, member_id: int, outlet_id: int | None, transaction_id: int | None
) -> None:
    if (
        outlet_id is not None
        and await s.scalar(select(Outlet.id).where(Outlet.tenant_id == tenant_id, Outlet.id == outlet_id))
        is None
    ):
        raise NotFound(f"outlet {outlet_id} not found")
    if (
        transaction_id is not None
        and await s.scalar(
            select(Transaction.id).where(
                Transaction.tenant_id == tenant_id,
                Transaction.member_id == member_id,
                Transaction.id == transaction_id,
            )
        )
        is None
    ):
        raise NotFound(f"transaction {transaction_id} not found for this member")


async def redeem(
    db: Database,
    tenant_id: int,
    member_id: int,
    reward_code: str,
    *,
    now: datetime,
    outlet_id: int | None = None,
    transaction_id: int | None = None,
) -> RedemptionResult:
    """Spend points on a reward of the program in force; InsufficientPoints writes nothing."""
    async with db.write() as s:
        priced = await programs.version_at(s, tenant_id, now)
        reward = _reward(priced.program, reward_code)
        if reward.cost is None:
            raise NotAllowed(f"reward {reward_code!r} is only issued as a voucher")
        cost = reward.cost
        tier = await s.scalar(
            select(Member.tier).where(Member.tenant_id == tenant_id, Member.id == member_id)
        )
        if (
            tier is None
            and await s.scalar(select(Member.id).where(Member.tenant_id == tenant_id, Member.id == member_id))
            is None
        ):
            raise NotFound(f"member {member_id} not found")
        if not _tier_allows(priced.program, reward.min_tier, tier):
            raise NotAllowed(f"reward {reward_code!r} needs tier {reward.min_tier}")
        await _check_refs(s, tenant_id, member_id, outlet_id, transaction_id)
        left = await s.scalar(
            update(Member)
            .where(Member.tenant_id == tenant_id, Member.id == member_id, Member.available >= cost)
            .values(available=Member.available - cost)
            .returning(Member.available)
        )
        if left is None:
            available = await s.scalar(select(Member.available).where(Member.id == member_id)) or 0
            raise InsufficientPoints(
                f"reward {reward_code!r} costs {cost} points; {available} available",
                available=available,
                cost=cost,
            )
        redemption_id = await s.scalar(
            insert(Redemption)
            .values(
                tenant_id=tenant_id,
                member_id=member_id,
                reward_code=reward_code,
                cost=cost,
                status="active",
                outlet_id=outlet_id,
                transaction_id=transaction_id,
                voucher_id=None,
                created_at=now,
                cancelled_at=None,
            )
            .returning(Redemption.id)
        )
        assert redemption_id is not None
        draws = await ledger.draw_lots(
            s, tenant_id, member_id, cost, cause="redemption", ref_id=redemption_id, at=now
        )
        await ledger.add_entries(
            s,
            tenant_id,
            member_id,
            cause="redemption",
            ref_id=redemption_id,
            at=now,
            moves={ledger.AVAILABLE: -cost, ledger.REDEEMED: cost},
        )
    return RedemptionResult(redemption_id, member_id, reward_code, cost, tuple(draws), left)


async def use_voucher(
    db: Database,
    tenant_id: int,
    member_id: int,
    voucher_id: int,
    *,
    now: datetime,
    outlet_id: int | None = None,
    transaction_id: int | None = None,
) -> RedemptionResult:
    """Redeem a stamp-card voucher; a voucher is used once (a conditional update decides)."""
    async with db.write() as s:
        await _check_refs(s, tenant_id, member_id, outlet_id, transaction_id)
        code = await s.scalar(
            update(Voucher)
            .where(
                Voucher.tenant_id == tenant_id,
                Voucher.member_id == member_id,
                Voucher.id == voucher_id,
                Voucher.status == "issued",
            )
            .values(status="used", used_at=now)
            .returning(Voucher.reward_code)
        )
        if code is None:
            exists = await s.scalar(
                select(Voucher.id).where(
                    Voucher.tenant_id == tenant_id, Voucher.member_id == member_id, Voucher.id == voucher_id
                )
            )
            if exists is None:
                raise NotFound(f"voucher {voucher_id} not found")
            raise Conflict(f"voucher {voucher_id} was already used")
        redemption_id = await s.scalar(
            insert(Redemption)
            .values(
                tenant_id=tenant_id,
                member_id=member_id,
                reward_code=code,
                cost=0,
                status="active",
                outlet_id=outlet_id,
                transaction_id=transaction_id,
                voucher_id=voucher_id,
                created_at=now,
                cancelled_at=None,
            )
            .returning(Redemption.id)
        )
        available = await s.scalar(select(Member.available).where(Member.id == member_id))
    assert redemption_id is not None
    return RedemptionResult(redemption_id, member_id, code, 0, (), available or 0, voucher_id)


async def cancel(db: Database, tenant_id: int, redemption_id: int, *, now: datetime) -> CancelResult:
    """Undo a redemption on the day it was made (in the program's time zone): the very lots it drew
    get their points back (a lot that has expired since cannot take them: Conflict)."""
    async with db.write() as s:
        row = (
            await s.execute(
                select(
                    Redemption.member_id,
                    Redemption.status,
                    Redemption.created_at,
                    Redemption.cost,
                    Redemption.voucher_id,
                ).where(Redemption.tenant_id == tenant_id, Redemption.id == redemption_id)
            )
        ).first()
        if row is None:
            raise NotFound(f"redemption {redemption_id} not found")
        member = await ledger.lock_member(s, tenant_id, row.member_id)
        status = await s.scalar(select(Redemption.status).where(Redemption.id == redemption_id))
        if status != "active":
            raise Conflict(f"redemption {redemption_id} is already cancelled")
        zone = (await programs.version_at(s, tenant_id, row.created_at)).program.zone
        if local_day(now, zone) != local_day(row.created_at, zone) or now < row.created_at:
            raise NotAllowed("a redemption can only be cancelled on the day it was made")
        draws = (
            await s.execute(
                select(LotDraw.lot_id, LotDraw.amount, PointLot.state)
                .join(PointLot, PointLot.id == LotDraw.lot_id)
                .where(
                    LotDraw.cause == "redemption",
                    LotDraw.ref_id == redemption_id,
                    LotDraw.tenant_id == tenant_id,
                )
            )
        ).all()
        if any(state == "expired" for _, _, state in draws):
            raise Conflict("points of this redemption came from a lot that has expired since")
        await s.execute(
            update(Redemption)
            .where(Redemption.id == redemption_id)
            .values(status="cancelled", cancelled_at=now)
        )
        if row.voucher_id is not None:
            await s.execute(
                update(Voucher).where(Voucher.id == row.voucher_id).values(status="issued", used_at=None)
            )
        for lot_id, amount, _ in draws:
            await s.execute(
                update(PointLot).where(PointLot.id == lot_id).values(remaining=PointLot.remaining + amount)
            )
        if draws:
            await s.execute(
                insert(LotDraw),
                [
                    {
                        "tenant_id": tenant_id,
                        "member_id": member.id,
                        "lot_id": lot_id,
                        "amount": -amount,
                        "cause": "redemption_cancel",
                        "ref_id": redemption_id,
                        "created_at": now,
                    }
                    for lot_id, amount, _ in draws
                ],
            )
        cost = row.cost
        if cost:
            await s.execute(
                update(Member).where(Member.id == member.id).values(available=Member.available + cost)
            )
            await ledger.add_entries(
                s,
                tenant_id,
                member.id,
                cause="redemption_cancel",
                ref_id=redemption_id,
                at=now,
                moves={ledger.AVAILABLE: cost, ledger.REDEEMED: -cost},
            )
            member.available += cost
            await ledger.settle_debt(
                s, tenant_id, member, cause="redemption_cancel", ref_id=redemption_id, at=now
            )
    return CancelResult(redemption_id, cost, member.available)
