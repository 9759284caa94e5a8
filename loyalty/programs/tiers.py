"""Tier status over a rolling window: upgrade at once on earning, downgrade only at evaluation.

The qualifying figure is summed from the member's transactions in the window ``(now - window, now]``,
net of refunds: points earned, spend in minor units, or visits (purchases not fully returned). Level
minimums are converted to the same units (spend minimums are currency units in the document).
Upgrades on earning are booked with the purchase (:mod:`loyalty.points.posting`); the evaluation job is a
set-based sweep of the ledger (:func:`loyalty.ledger.sweeps.evaluate_tiers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

import rules
from loyalty.calendar import window_start
from loyalty.storage.models import Transaction, UTCDateTime


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
