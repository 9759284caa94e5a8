"""Redeeming rewards for points or vouchers, and cancelling a redemption made by mistake.

Race safety comes from the ledger's unit of work: the redemption is written only if the member is
still as it was read (its revision), or, after a collision, under the member's row lock; so
concurrent redemptions never overdraw. A redemption from a till carries the till's id for it
(``external_id``), unique per outlet: sent twice, it is booked once and the first one is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import rules
from loyalty.admin.access import Answer, answered_meanwhile, apply_answered, check_answer
from loyalty.calendar import local_day
from loyalty.errors import Conflict, InsufficientPoints, InvalidInput, NotAllowed, NotFound
from loyalty.ledger import REDEEMED, Booking, Duplicate, Lot, reads, run
from loyalty.ledger.store import Unit
from loyalty.members.membership import CardRef, MemberView, view_of
from loyalty.programs import tiers, versions
from loyalty.storage import outbox
from loyalty.storage.db import Database

#: Longest redemption id a till may send.
MAX_EXTERNAL_ID = 300


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
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Redeemed:
    """A redemption and the member's figures right after it."""

    redemption: RedemptionResult
    member: MemberView


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


async def _member_of_card(unit: Unit, tenant_id: int, card: CardRef) -> int:
    """The member of an active card; a blocked card redeems nothing."""
    by = "id = $2" if card.card_id is not None else "number = $2"
    row = await unit.fetchrow(
        f"SELECT state, member_id FROM cards WHERE tenant_id = $1 AND {by}",
        tenant_id,
        card.card_id if card.card_id is not None else card.number,
    )
    if row is None:
        raise NotFound("card not found")
    if row[0] == "blocked":
        raise NotAllowed("this card is blocked")
    if row[1] is None:
        raise NotAllowed("this card has not been activated yet")
    return int(row[1])


async def _check_refs(
    unit: Unit, tenant_id: int, member_id: int, outlet_id: int | None, transaction_id: int | None
) -> None:
    if (
        outlet_id is not None
        and await unit.fetchval(
            "SELECT id FROM outlets WHERE tenant_id = $1 AND id = $2", tenant_id, outlet_id
        )
        is None
    ):
        raise NotFound(f"outlet {outlet_id} not found")
    if transaction_id is None:
        return
    # A redemption made at an outlet may only name a purchase made there (as for refunds): another
    # outlet's receipt is as unknown to this till as another member's.
    sql = "SELECT id FROM transactions WHERE tenant_id = $1 AND member_id = $2 AND id = $3"
    args: tuple[int, ...] = (tenant_id, member_id, transaction_id)
    if outlet_id is not None:
        sql, args = sql + " AND outlet_id = $4", (*args, outlet_id)
    found = await unit.fetchval(sql, *args)
    if found is None:
        where = "at this outlet" if outlet_id is not None else "for this member"
        raise NotFound(f"transaction {transaction_id} not found {where}")


_EARLIER = (
    "SELECT id, member_id, reward_code, cost, voucher_id FROM redemptions"
    " WHERE tenant_id = $1 AND outlet_id = $2 AND external_id = $3"
)
_DRAWN = (
    "SELECT lot_id, amount FROM lot_draws WHERE tenant_id = $1 AND cause = 'redemption' AND ref_id = $2"
    " ORDER BY id"
)


async def _earlier(
    unit: Unit, tenant_id: int, outlet_id: int | None, external_id: str | None
) -> RedemptionResult | None:
    """The redemption booked before under the same till id, if any."""
    if external_id is None or outlet_id is None:
        return None
    row = await unit.fetchrow(_EARLIER, tenant_id, outlet_id, external_id)
    if row is None:
        return None
    draws = tuple((r[0], r[1]) for r in await unit.fetch(_DRAWN, tenant_id, row[0]))
    available = await unit.fetchval(
        "SELECT available FROM members WHERE tenant_id = $1 AND id = $2", tenant_id, row[1]
    )
    return RedemptionResult(row[0], row[1], row[2], row[3], draws, available, row[4], replayed=True)


async def _redeem_unit(
    tenant_id: int,
    member_id: int | None,
    card: CardRef | None,
    reward_code: str,
    now: datetime,
    outlet_id: int | None,
    transaction_id: int | None,
    external_id: str | None,
    answer: Answer | None,
    unit: Unit,
) -> Redeemed:
    if card is not None:
        member_id = await _member_of_card(unit, tenant_id, card)
    assert member_id is not None
    member = await reads.member(unit, tenant_id, member_id)
    if answer is not None:
        await check_answer(unit, answer)
    earlier = await _earlier(unit, tenant_id, outlet_id, external_id)
    if earlier is not None:
        if (earlier.member_id, earlier.reward_code) != (member_id, reward_code):
            raise Conflict(f"redemption id {external_id!r} was used for another redemption at this outlet")
        return Redeemed(earlier, view_of(member))
    _, program = await versions.in_force(unit, tenant_id, now)
    reward = _reward(program, reward_code)
    if reward.cost is None:
        raise NotAllowed(f"reward {reward_code!r} is only issued as a voucher")
    cost = reward.cost
    if not _tier_allows(program, reward.min_tier, member.tier):
        raise NotAllowed(f"reward {reward_code!r} needs tier {reward.min_tier}")
    await _check_refs(unit, tenant_id, member_id, outlet_id, transaction_id)
    holder = member.holder
    if holder.available < cost:
        raise InsufficientPoints(
            f"reward {reward_code!r} costs {cost} points; {holder.available} available",
            available=holder.available,
            cost=cost,
        )
    redemption_id = (await unit.next_ids("redemptions", 1))[0]
    booking = Booking(tenant_id, now)
    booking.insert(
        "redemptions",
        _row(
            redemption_id,
            tenant_id,
            member_id,
            reward_code,
            cost,
            outlet_id,
            transaction_id,
            None,
            external_id,
            now,
        ),
    )
    lots = await reads.available_lots(unit, tenant_id, member_id)
    draws = booking.draw(holder, lots, cost, counter=REDEEMED, cause="redemption", ref_id=redemption_id)
    _event(booking, member_id, redemption_id, reward_code, cost, outlet_id, None, now)
    done = Redeemed(
        RedemptionResult(redemption_id, member_id, reward_code, cost, tuple(draws), holder.available),
        view_of(member),
    )
    return await apply_answered(unit, booking, answer, done)


def _row(
    redemption_id: int,
    tenant_id: int,
    member_id: int,
    reward_code: str,
    cost: int,
    outlet_id: int | None,
    transaction_id: int | None,
    voucher_id: int | None,
    external_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": redemption_id,
        "tenant_id": tenant_id,
        "member_id": member_id,
        "reward_code": reward_code,
        "cost": cost,
        "status": "active",
        "outlet_id": outlet_id,
        "transaction_id": transaction_id,
        "voucher_id": voucher_id,
        "external_id": external_id,
        "created_at": now,
        "cancelled_at": None,
    }


async def _run_once(db: Database, op: Any, answer: Answer | None) -> Any:
    """Run an operation that carries an idempotency answer and a natural key: a concurrent twin that
    got there first is answered from what it recorded."""
    try:
        return await run(db, op, optimistic=True)
    except Duplicate as dup:
        if dup.table == "idempotency_records" and answer is not None:
            await answered_meanwhile(db, answer)
        if dup.table != "redemptions":
            raise
        return await run(db, op)  # booked meanwhile under the same till id: read it back


def _external_id(external_id: str | None) -> str | None:
    if external_id is not None and not 1 <= len(external_id) <= MAX_EXTERNAL_ID:
        raise InvalidInput(f"external_id must be 1 to {MAX_EXTERNAL_ID} characters")
    return external_id


async def redeem_with_member(
    db: Database,
    tenant_id: int,
    *,
    reward_code: str,
    now: datetime,
    member_id: int | None = None,
    card: CardRef | None = None,
    outlet_id: int | None = None,
    transaction_id: int | None = None,
    external_id: str | None = None,
    answer: Answer | None = None,
) -> Redeemed:
    """Spend points on a reward of the program in force, for a member or an active card's member;
    InsufficientPoints writes nothing. Returns the member's figures after it too."""
    if (member_id is None) == (card is None):
        raise InvalidInput("name the member by exactly one of member_id and card")
    op = partial(
        _redeem_unit,
        tenant_id,
        member_id,
        card,
        reward_code,
        now,
        outlet_id,
        transaction_id,
        _external_id(external_id),
        answer,
    )
    result: Redeemed = await _run_once(db, op, answer)
    return result


async def redeem(
    db: Database,
    tenant_id: int,
    member_id: int,
    reward_code: str,
    *,
    now: datetime,
    outlet_id: int | None = None,
    transaction_id: int | None = None,
    external_id: str | None = None,
) -> RedemptionResult:
    """Spend points on a reward of the program in force; InsufficientPoints writes nothing."""
    done = await redeem_with_member(
        db,
        tenant_id,
        reward_code=reward_code,
        now=now,
        member_id=member_id,
        outlet_id=outlet_id,
        transaction_id=transaction_id,
        external_id=external_id,
    )
    return done.redemption


async def _voucher_unit(
    tenant_id: int,
    member_id: int,
    voucher_id: int,
    now: datetime,
    outlet_id: int | None,
    transaction_id: int | None,
    unit: Unit,
) -> RedemptionResult:
    member = await reads.member(unit, tenant_id, member_id)
    await _check_refs(unit, tenant_id, member_id, outlet_id, transaction_id)
    row = await unit.fetchrow(
        "SELECT reward_code, status FROM vouchers WHERE tenant_id = $1 AND member_id = $2 AND id = $3",
        tenant_id,
        member_id,
        voucher_id,
    )
    if row is None:
        raise NotFound(f"voucher {voucher_id} not found")
    if row[1] != "issued":
        raise Conflict(f"voucher {voucher_id} was already {row[1]}")
    redemption_id = (await unit.next_ids("redemptions", 1))[0]
    booking = Booking(tenant_id, now)
    booking.update("vouchers", voucher_id, set={"status": "used", "used_at": now}, member_id=member_id)
    redemption = _row(
        redemption_id, tenant_id, member_id, row[0], 0, outlet_id, transaction_id, voucher_id, None, now
    )
    booking.insert("redemptions", redemption)
    _event(booking, member_id, redemption_id, row[0], 0, outlet_id, voucher_id, now)
    booking.touch(member.holder)
    await unit.apply(booking)
    return RedemptionResult(redemption_id, member_id, row[0], 0, (), member.holder.available, voucher_id)


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
    """Redeem a stamp-card voucher; a voucher is used once."""
    op = partial(_voucher_unit, tenant_id, member_id, voucher_id, now, outlet_id, transaction_id)
    result: RedemptionResult = await run(db, op, optimistic=True)
    return result


_REDEMPTION = (
    "SELECT member_id, status, created_at, cost, voucher_id FROM redemptions"
    " WHERE tenant_id = $1 AND member_id = $2 AND id = $3"
)
_DRAWS = (
    "SELECT d.lot_id, d.amount, l.state, l.remaining, l.expired, l.expires_at FROM lot_draws d"
    " JOIN point_lots l ON l.tenant_id = d.tenant_id AND l.member_id = $2 AND l.id = d.lot_id"
    " WHERE d.tenant_id = $1 AND d.cause = 'redemption' AND d.ref_id = $3 ORDER BY d.id"
)


def _event(
    booking: Booking,
    member_id: int,
    redemption_id: int,
    reward: str,
    cost: int,
    outlet_id: int | None,
    voucher_id: int | None,
    now: datetime,
) -> None:
    data = {
        "redemption_id": redemption_id,
        "reward": reward,
        "cost": cost,
        "outlet_id": outlet_id,
        "voucher_id": voucher_id,
    }
    booking.insert("events", outbox.row(booking.tenant_id, member_id, "redemption.created", data, at=now))


async def _cancel_unit(
    tenant_id: int, redemption_id: int, now: datetime, answer: Answer | None, unit: Unit
) -> CancelResult:
    # The member first (its lock, or its revision), then the redemption's state: a cancellation that
    # commits in between moves the member's revision on, so this one cannot restore the points twice.
    member = await reads.owner_member(unit, "redemptions", tenant_id, redemption_id)
    row = await unit.fetchrow(_REDEMPTION, tenant_id, member.holder.id, redemption_id)
    assert row is not None
    member_id, status, created_at, cost, voucher_id = row
    created_at = unit.instant(created_at)
    if answer is not None:
        await check_answer(unit, answer)
    if status != "active":
        raise Conflict(f"redemption {redemption_id} is already cancelled")
    assert created_at is not None
    _, program = await versions.in_force(unit, tenant_id, created_at)
    if local_day(now, program.zone) != local_day(created_at, program.zone) or now < created_at:
        raise NotAllowed("a redemption can only be cancelled on the day it was made")
    drawn = await unit.fetch(_DRAWS, tenant_id, member_id, redemption_id)
    if any(r[2] == "expired" for r in drawn):
        raise Conflict("points of this redemption came from a lot that has expired since")
    holder = member.holder
    lots = {lot.id: lot for lot in await reads.available_lots(unit, tenant_id, member_id)}
    back: list[tuple[Lot, int]] = []
    for lot_id, amount, state, remaining, expired, expires_at in drawn:
        lot = lots.setdefault(
            lot_id, Lot(lot_id, member_id, state, remaining, expired, unit.instant(expires_at))
        )
        back.append((lot, amount))
    booking = Booking(tenant_id, now)
    cancelled = {"status": "cancelled", "cancelled_at": now}
    booking.update("redemptions", redemption_id, set=cancelled, member_id=member_id)
    if voucher_id is not None:
        booking.update("vouchers", voucher_id, set={"status": "issued", "used_at": None}, member_id=member_id)
    restored = booking.restore(
        holder, back, counter=REDEEMED, cause="redemption_cancel", ref_id=redemption_id
    )
    if restored != cost:
        raise Conflict(f"redemption {redemption_id} drew {restored} points, not its cost {cost}")
    booking.settle_debt(holder, list(lots.values()), cause="redemption_cancel", ref_id=redemption_id)
    data = {"redemption_id": redemption_id, "points_returned": cost, "voucher_id": voucher_id}
    booking.insert("events", outbox.row(tenant_id, member_id, "redemption.cancelled", data, at=now))
    booking.touch(holder)
    result = CancelResult(redemption_id, cost, holder.available)
    return await apply_answered(unit, booking, answer, result)


async def cancel(
    db: Database, tenant_id: int, redemption_id: int, *, now: datetime, answer: Answer | None = None
) -> CancelResult:
    """Undo a redemption on the day it was made (in the program's time zone): the very lots it drew
    get their points back (a lot that has expired since cannot take them: Conflict)."""
    op = partial(_cancel_unit, tenant_id, redemption_id, now, answer)
    result: CancelResult = await _run_once(db, op, answer)
    return result


__all__: Sequence[str] = [
    "CancelResult",
    "CardRef",
    "Redeemed",
    "RedemptionResult",
    "cancel",
    "redeem",
    "redeem_with_member",
    "use_voucher",
]
