"""What a member (or a cashier) sees: balances, what expires soon, tier progress, stamps, rewards, history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty import ledger
from loyalty.calendar import add_months, local_month, month_start
from loyalty.errors import NotFound
from loyalty.members import membership
from loyalty.programs import tiers, versions
from loyalty.storage.db import Database
from loyalty.storage.models import Card, LedgerEntry, Member, PointLot, StampCard, Voucher

#: Months ahead the balance shows expiring points for (this one and the next two).
EXPIRING_MONTHS = 3
#: Most history rows one page returns.
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class Expiring:
    month: str  # "2026-03": the points expire at the end of this month
    points: int


@dataclass(frozen=True, slots=True)
class TierProgress:
    tier: str
    qualify_on: str
    value: int
    next_tier: str | None
    next_threshold: int | None
    missing: int


@dataclass(frozen=True, slots=True)
class StampCardView:
    card: str
    stamps: int
    reward_at: int | None
    reward: str | None


@dataclass(frozen=True, slots=True)
class RewardView:
    code: str
    name: str
    cost: int
    affordable: bool
    missing: int


@dataclass(frozen=True, slots=True)
class VoucherView:
    id: int
    reward_code: str
    card: str
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    member_id: int
    available: int
    pending: int
    debt: int
    expiring: tuple[Expiring, ...]
    tier: TierProgress | None
    stamp_cards: tuple[StampCardView, ...]
    vouchers: tuple[VoucherView, ...]
    rewards: tuple[RewardView, ...]


async def balance(db: Database, tenant_id: int, member_id: int, *, now: datetime) -> Balance:
    async with db.read() as s:
        member = await s.scalar(select(Member).where(Member.tenant_id == tenant_id, Member.id == member_id))
        if member is None:
            raise NotFound(f"member {member_id} not found")
        return await balance_of(s, tenant_id, member, now=now)


async def balance_of(s: AsyncSession, tenant_id: int, member: Member, *, now: datetime) -> Balance:
    """The balance view of an already loaded member row, inside the caller's transaction."""
    member_id = member.id
    program = (await versions.version_at(s, tenant_id, now)).program
    zone = program.zone
    year, month = local_month(now, zone)
    horizon = month_start(*add_months(year, month, EXPIRING_MONTHS + 1), zone)
    rows = (
        await s.execute(
            select(PointLot.expires_at, func.sum(PointLot.remaining))
            .where(
                PointLot.tenant_id == tenant_id,
                PointLot.member_id == member_id,
                PointLot.state.in_(("pending", "available")),
                PointLot.remaining > 0,
                PointLot.expires_at > now,
                PointLot.expires_at <= horizon,
            )
            .group_by(PointLot.expires_at)
        )
    ).all()
    per_month: dict[str, int] = {}
    for expires_at, points in rows:
        if expires_at is None:  # never expires (excluded by the query; kept out of the arithmetic)
            continue
        y, m = local_month(expires_at - timedelta(microseconds=1), zone)
        per_month[f"{y:04d}-{m:02d}"] = per_month.get(f"{y:04d}-{m:02d}", 0) + int(points)
    expiring = []
    for i in range(EXPIRING_MONTHS):
        y, m = add_months(year, month, i)
        expiring.append(Expiring(f"{y:04d}-{m:02d}", per_month.get(f"{y:04d}-{m:02d}", 0)))

    progress = None
    ladder = tiers.levels(program)
    if ladder and program.document.tiers is not None:
        value = await tiers.qualifying(s, tenant_id, member_id, program, now)
        current = tiers.known_tier(program, member.tier) or ladder[0].name
        names = [lv.name for lv in ladder]
        nxt = ladder[names.index(current) + 1] if names.index(current) + 1 < len(ladder) else None
        progress = TierProgress(
            current,
            program.document.tiers.qualify_on,
            value,
            nxt.name if nxt else None,
            nxt.threshold if nxt else None,
            max(0, nxt.threshold - value) if nxt else 0,
        )

    cards = {
        card: n
        for card, n in (
            await s.execute(
                select(StampCard.card, StampCard.stamps).where(
                    StampCard.tenant_id == tenant_id, StampCard.member_id == member_id
                )
            )
        ).all()
    }
    rules_cards = {
        r.stamp_card: (r.stamp_reward_at, r.stamp_reward)
        for r in program.rules
        if r.kind == "stamp" and r.stamp_card
    }
    stamp_cards = tuple(
        StampCardView(card, cards.get(card, 0), *rules_cards.get(card, (None, None)))
        for card in sorted(set(cards) | set(rules_cards))
    )
    vouchers = tuple(
        VoucherView(v.id, v.reward_code, v.card, v.issued_at)
        for v in (
            await s.scalars(
                select(Voucher)
                .where(
                    Voucher.tenant_id == tenant_id,
                    Voucher.member_id == member_id,
                    Voucher.status == "issued",
                )
                .order_by(Voucher.id)
            )
        ).all()
    )
    rewards = tuple(
        sorted(
            (
                RewardView(
                    r.code, r.name, r.cost, r.cost <= member.available, max(0, r.cost - member.available)
                )
                for r in program.document.rewards
                if r.cost is not None and _tier_ok(ladder, member.tier, r.min_tier)
            ),
            key=lambda r: (r.cost, r.code),
        )
    )
    return Balance(
        member_id,
        member.available,
        member.pending,
        member.debt,
        tuple(expiring),
        progress,
        stamp_cards,
        vouchers,
        rewards,
    )


def _tier_ok(ladder: list[tiers.Level], tier: str | None, min_tier: str | None) -> bool:
    if min_tier is None:
        return True
    names = [lv.name for lv in ladder]
    mine = tier if tier in names else (names[0] if names else None)
    return mine is not None and min_tier in names and names.index(mine) >= names.index(min_tier)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    cause: str
    ref_id: int
    at: datetime
    available: int
    pending: int
    debt: int


@dataclass(frozen=True, slots=True)
class HistoryPage:
    rows: tuple[HistoryRow, ...]
    #: Pass as ``before`` for the next (older) page; None when this is the last page.
    next_before: int | None


async def history(
    db: Database, tenant_id: int, member_id: int, *, limit: int = 20, before: int | None = None
) -> HistoryPage:
    """The member's movements, newest first: one row per operation with its effect on each account."""
    limit = max(1, min(limit, MAX_PAGE))
    key = func.max(LedgerEntry.id)

    def delta(account: str):  # type: ignore[no-untyped-def]
        return func.coalesce(func.sum(LedgerEntry.amount).filter(LedgerEntry.account == account), 0)

    query = (
        select(
            LedgerEntry.cause,
            LedgerEntry.ref_id,
            func.max(LedgerEntry.created_at),
            delta(ledger.AVAILABLE),
            delta(ledger.PENDING),
            delta(ledger.DEBT),
            key,
        )
        .where(
            LedgerEntry.tenant_id == tenant_id,
            LedgerEntry.member_id == member_id,
            LedgerEntry.account.in_(ledger.MEMBER_ACCOUNTS),
        )
        .group_by(LedgerEntry.cause, LedgerEntry.ref_id)
    )
    if before is not None:
        query = query.having(key < before)
    query = query.order_by(key.desc()).limit(limit + 1)
    async with db.read() as s:
        if (
            await s.scalar(select(Member.id).where(Member.tenant_id == tenant_id, Member.id == member_id))
            is None
        ):
            raise NotFound(f"member {member_id} not found")
        rows = (await s.execute(query)).all()
    page = rows[:limit]
    out = tuple(HistoryRow(r[0], r[1], r[2], int(r[3]), int(r[4]), -int(r[5])) for r in page)
    return HistoryPage(out, page[-1][6] if len(rows) > limit else None)


@dataclass(frozen=True, slots=True)
class Scan:
    """What a till sees after a scan: the card and, once it is in use, its member and balance."""

    card: membership.CardView
    member: membership.MemberView | None
    balance: Balance | None


async def scan(db: Database, tenant_id: int, ref: membership.CardRef, *, now: datetime) -> Scan:
    """Card, member and balance in one read transaction (a scan is the till's most frequent call)."""
    by = Card.number == ref.number if ref.number is not None else Card.id == ref.card_id
    async with db.read() as s:
        card = await s.scalar(select(Card).where(Card.tenant_id == tenant_id, by))
        if card is None:
            raise NotFound("card not found")
        view = membership.CardView(card.number, card.state, card.member_id, card.outlet_id)
        if card.member_id is None:
            return Scan(view, None, None)
        member = await s.scalar(
            select(Member).where(Member.tenant_id == tenant_id, Member.id == card.member_id)
        )
        assert member is not None  # the foreign key guarantees it
        return Scan(view, membership.member_view(member), await balance_of(s, tenant_id, member, now=now))
