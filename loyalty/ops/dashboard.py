"""Figures the marketer dashboard shows that no report holds yet: how members spread over the tiers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from loyalty.programs import tiers, versions
from loyalty.storage.db import Database
from loyalty.storage.models import Member


@dataclass(frozen=True, slots=True)
class TierCount:
    tier: str
    members: int


async def tier_distribution(db: Database, tenant_id: int, *, now: datetime) -> list[TierCount]:
    """Members per tier of the version in force, lowest tier first.

    A member without a tier, or with one the current version no longer has, counts in the lowest
    tier, as the engine treats them; tiers nobody holds are listed with zero so a chart keeps its axis.
    """
    async with db.read() as s:
        program = (await versions.version_at(s, tenant_id, now)).program
        rows = (
            await s.execute(
                select(Member.tier, func.count()).where(Member.tenant_id == tenant_id).group_by(Member.tier)
            )
        ).all()
    ladder = [level.name for level in tiers.levels(program)]
    if not ladder:
        return [TierCount("", sum(int(n) for _, n in rows))] if rows else []
    counts = dict.fromkeys(ladder, 0)
    for tier, n in rows:
        counts[tiers.known_tier(program, tier) or ladder[0]] += int(n)
    return [TierCount(name, n) for name, n in counts.items()]
