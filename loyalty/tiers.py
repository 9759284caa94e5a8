"""Tier status over a rolling window: upgrade at once on earning, downgrade only at evaluation.

The qualifying figure is summed from the member's transactions in the window ``(now - window, now]``,
net of refunds: points earned, spend in minor units, or visits (purchases not fully returned). Level
minimums are converted to the same units (spend minimums are currency units in the document).
The evaluation job is one set-based statement per step, never a loop over members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

import rules
from loyalty.calendar import window_start
from loyalty.models import Member, TierChange, Transaction, UTCDateTime


@dataclass(frozen=True, slots=True)
class Level:
    name: str
    #: In qualifying units: points, minor units of spend, or visits.
    threshold: int
    earn_multiplier: str


_levels: dict[str, list[Level]] = {}


def levels(program: rules.CheckedProgram) -> list[Level]:
    """The program's levels, lowest first (cached by digest: a version's levels never change)."""
    hit = _levels.get(program.digest)
    if hit is None:
        hit = _levels[program.digest] = _compute_levels(program)
    return hit


def _compute_levels(program: rules.CheckedProgram) -> list[Level]:
    tiers = program.document.tiers
    if tiers is None:
        return []
    out = []
    for level in tiers.levels:
        value = level.min / program.minor if tiers.qualify_on == "spend" else level.min
        out.append(Level(level.name, math.ceil(value), str(level.earn_multiplier)))
    return sorted(out, key=lambda lv: lv.threshold)


def known_tier(program: rules.CheckedProgram, tier: str | None) -> str | None:
    """The member's tier if this version still has it; otherwise the engine's default (the lowest)."""
    return tier if tier is not None and any(lv.name == tier for lv in levels(program)) else None


def level_for(program: rules.CheckedProgram, value: int) -> Level:
    chosen = None
    for level in levels(program):
        if value >= level.threshold:
            chosen = level
    assert chosen is not None, "the first level has min 0"
    return chosen


def _measure(qualify_on: str) -> ColumnElement[Any]:
    if qualify_on == "points":
        return func.coalesce(func.sum(Transaction.points - Transaction.points_refunded), 0)
    if qualify_on == "spend":
        return func.coalesce(func.sum(Transaction.amount - Transaction.amount_refunded), 0)
    return func.coalesce(
        func.sum(
            case((Transaction.amount_refunded < Transaction.amount, 1), (Transaction.amount == 0, 1), else_=0)
        ),
        0,
    )


_QUALIFYING = {
    kind: select(_measure(kind)).where(
        Transaction.tenant_id == bindparam("tenant"),
        Transaction.member_id == bindparam("member"),
        Transaction.occurred_at > bindparam("since", type_=UTCDateTime()),
        Transaction.occurred_at <= bindparam("now", type_=UTCDateTime()),
    )
    for kind in ("points", "spend", "visits")
}


def _window(program: rules.CheckedProgram, now: datetime) -> datetime:
    tiers = program.document.tiers
    assert tiers is not None
    return window_start(now, tiers.window_months, program.zone)


async def qualifying(
    session: AsyncSession, tenant_id: int, member_id: int, program: rules.CheckedProgram, now: datetime
) -> int:
    tiers = program.document.tiers
    if tiers is None:
        return 0
    conn = await session.connection()
    value = (
        await conn.execute(
            _QUALIFYING[tiers.qualify_on],
            {"tenant": tenant_id, "member": member_id, "since": _window(program, now), "now": now},
        )
    ).scalar()
    return int(value or 0)


async def upgrade_on_earn(
    session: AsyncSession,
    tenant_id: int,
    member: Any,
    program: rules.CheckedProgram,
    occurred_at: datetime,
    points: int,
    amount: int,
    now: datetime,
) -> str | None:
    """The tier to move the member to after a purchase (already inserted), or None to stay.

    Only upgrades happen here; a member with no tier yet gets the level they qualify for.
    """
    ladder = levels(program)
    if not ladder:
        return None
    current = known_tier(program, member.tier)
    names = [lv.name for lv in ladder]
    if current == names[-1]:
        return None
    value = await qualifying(session, tenant_id, member.id, program, now)
    target = level_for(program, value)
    if current is not None and names.index(target.name) <= names.index(current):
        return None
    await session.execute(
        insert(TierChange).values(
            tenant_id=tenant_id,
            member_id=member.id,
            from_tier=member.tier,
            to_tier=target.name,
            reason="earn",
            qualifying=value,
            at=now,
        )
    )
    return target.name


async def evaluate_all(
    session: AsyncSession, tenant_id: int, program: rules.CheckedProgram, now: datetime
) -> int:
    """Set every member's tier to what the window qualifies them for (both directions); returns changes.

    Set-based: one aggregate over the window, one INSERT ... SELECT of the history, one UPDATE.
    """
    tiers = program.document.tiers
    ladder = levels(program)
    if tiers is None or not ladder:
        return 0
    per_member = (
        select(Transaction.member_id.label("member_id"), _measure(tiers.qualify_on).label("value"))
        .where(
            Transaction.tenant_id == tenant_id,
            Transaction.occurred_at > _window(program, now),
            Transaction.occurred_at <= now,
        )
        .group_by(Transaction.member_id)
        .subquery()
    )
    value = func.coalesce(per_member.c.value, 0)
    target = case(
        *[(value >= lv.threshold, literal(lv.name)) for lv in reversed(ladder)], else_=literal(ladder[0].name)
    )
    targets = (
        select(
            Member.id.label("member_id"),
            Member.tier.label("tier"),
            target.label("target"),
            value.label("value"),
        )
        .outerjoin(per_member, per_member.c.member_id == Member.id)
        .where(Member.tenant_id == tenant_id)
        .subquery()
    )
    changed = select(
        literal(tenant_id),
        targets.c.member_id,
        targets.c.tier,
        targets.c.target,
        literal("evaluation"),
        targets.c.value,
        literal(now, type_=TierChange.at.type),
    ).where(func.coalesce(targets.c.tier, "") != targets.c.target)
    result = await session.execute(
        insert(TierChange).from_select(
            ["tenant_id", "member_id", "from_tier", "to_tier", "reason", "qualifying", "at"], changed
        )
    )
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        await session.execute(
            update(Member)
            .where(
                Member.tenant_id == tenant_id,
                Member.id == targets.c.member_id,
                func.coalesce(Member.tier, "") != targets.c.target,
            )
            .values(tier=targets.c.target, tier_since=now)
        )
    return count
