"""The points ledger: balanced entry sets, lots, draws, and paying off debt.

These helpers run inside a service's transaction, after the service has locked the member's row
(``lock_member``, or a conditional update of it). Every member-changing operation takes that lock
first, so lots, draws and the balance projection of one member are never written by two
transactions at once, and locks are always taken in the same order (member row, then lots).

Sign convention: entries are signed and each balanced set (one ``cause`` + ``ref_id``) sums to zero.
Member-side accounts hold what the member has (``member_available``, ``member_pending``) or owes
(``member_debt``, whose balance is negative: the projection column ``debt`` is its negation).
Program-side accounts are the counterparts (``program_issued`` goes negative as points are issued).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.errors import NotFound
from loyalty.models import LedgerEntry, LotDraw, Member, PointLot

AVAILABLE = "member_available"
PENDING = "member_pending"
DEBT = "member_debt"
ISSUED = "program_issued"
REDEEMED = "program_redeemed"
EXPIRED = "program_expired"
ADJUSTED = "program_adjusted"

MEMBER_ACCOUNTS = (AVAILABLE, PENDING, DEBT)
ACCOUNT_OF_STATE = {"pending": PENDING, "available": AVAILABLE}


@dataclass(slots=True)
class MemberState:
    """The locked member row, as the services need it."""

    id: int
    tier: str | None
    available: int
    pending: int
    debt: int
    visits: int
    last_visit_at: datetime | None
    enrolled_at: datetime
    tags: list[str]


_MEMBER_COLUMNS = (
    Member.id,
    Member.tier,
    Member.available,
    Member.pending,
    Member.debt,
    Member.visits,
    Member.last_visit_at,
    Member.enrolled_at,
    Member.tags,
)


_LOCK_MEMBER = (
    select(*_MEMBER_COLUMNS)
    .where(Member.tenant_id == bindparam("tenant"), Member.id == bindparam("member"))
    .with_for_update()
)


async def lock_member(session: AsyncSession, tenant_id: int, member_id: int) -> MemberState:
    """Lock the member's row for the rest of the transaction (SQLite: the write lock is already held)."""
    conn = await session.connection()
    row = (await conn.execute(_LOCK_MEMBER, {"tenant": tenant_id, "member": member_id})).first()
    if row is None:
        raise NotFound(f"member {member_id} not found")
    return MemberState(*row)


async def add_entries(
    session: AsyncSession,
    tenant_id: int,
    member_id: int,
    *,
    cause: str,
    ref_id: int,
    at: datetime,
    moves: Mapping[str, int],
) -> None:
    """Append one balanced set of entries; zero moves are left out."""
    if sum(moves.values()) != 0:
        raise AssertionError(f"unbalanced entries for {cause} {ref_id}: {dict(moves)}")
    rows = [
        {
            "tenant_id": tenant_id,
            "member_id": member_id,
            "account": account,
            "amount": amount,
            "cause": cause,
            "ref_id": ref_id,
            "created_at": at,
        }
        for account, amount in moves.items()
        if amount
    ]
    if rows:
        await session.execute(insert(LedgerEntry), rows)


async def draw_lots(
    session: AsyncSession,
    tenant_id: int,
    member_id: int,
    amount: int,
    *,
    cause: str,
    ref_id: int,
    at: datetime,
) -> list[tuple[int, int]]:
    """Take ``amount`` from the member's available lots, nearest expiry first; record every draw.

    The caller has already taken the points off the ``available`` projection, which always equals the
    sum of the available lots' ``remaining``; a shortfall here means that invariant broke.
    """
    if amount <= 0:
        return []
    lots = (
        await session.execute(
            select(PointLot.id, PointLot.remaining)
            .where(
                PointLot.tenant_id == tenant_id,
                PointLot.member_id == member_id,
                PointLot.state == "available",
                PointLot.remaining > 0,
            )
            .order_by(PointLot.expires_at.is_(None), PointLot.expires_at, PointLot.id)
        )
    ).all()
    draws: list[tuple[int, int]] = []
    left = amount
    for lot_id, remaining in lots:
        take = min(left, remaining)
        draws.append((lot_id, take))
        left -= take
        if left == 0:
            break
    if left:
        raise AssertionError(f"member {member_id}: available lots hold {amount - left} < {amount}")
    for lot_id, take in draws:
        await session.execute(
            update(PointLot).where(PointLot.id == lot_id).values(remaining=PointLot.remaining - take)
        )
    await session.execute(
        insert(LotDraw),
        [
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "lot_id": lot_id,
                "amount": take,
                "cause": cause,
                "ref_id": ref_id,
                "created_at": at,
            }
            for lot_id, take in draws
        ],
    )
    return draws


async def settle_debt(
    session: AsyncSession, tenant_id: int, member: MemberState, *, cause: str, ref_id: int, at: datetime
) -> int:
    """Pay the member's debt from available points (later points pay debt first); returns what was paid.

    ``member`` holds the projection as it is now in this transaction and is updated in place. The
    entries join the set of the operation that brought the points (``cause``/``ref_id``).
    """
    pay = min(member.debt, member.available)
    if pay <= 0:
        return 0
    await session.execute(
        update(Member)
        .where(Member.id == member.id)
        .values(available=Member.available - pay, debt=Member.debt - pay)
    )
    await draw_lots(session, tenant_id, member.id, pay, cause="debt_payment", ref_id=ref_id, at=at)
    await add_entries(
        session, tenant_id, member.id, cause=cause, ref_id=ref_id, at=at, moves={AVAILABLE: -pay, DEBT: pay}
    )
    member.available -= pay
    member.debt -= pay
    return pay
