"""Segment runs: every member's figures computed, each member put in the first segment of the program
in force whose condition holds, and the moves between segments kept as history.

A run replaces the tenant's figures (one row per purchasing member), sets ``members.segment`` for the
members whose segment changed (rules read it at the till), and appends one ``segment_moves`` row per
change, all in one transaction: a run that fails leaves the previous one standing. Members without a
purchase in the window are judged on empty figures (a "new" or "lapsed" condition can still name them).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update

import rules
from loyalty.programs import versions
from loyalty.storage.db import Database
from loyalty.storage.models import Member, MemberFigures, SegmentMove
from loyalty.value import figures as figures_
from loyalty.value.figures import DEFAULTS, Figures, Settings

#: Rows per INSERT of a run (figures, moves): large enough to be few statements, small enough for
#: SQLite's bound-parameter limit.
CHUNK = 2_000


@dataclass(frozen=True, slots=True)
class Run:
    at: datetime
    members: int
    #: Segment -> members in it after the run ("" for none).
    sizes: dict[str, int]
    moves: int
    fitted: bool


def customer_of(f: Figures | None) -> rules.Customer:
    """What segment conditions read of a member's figures (empty figures: no purchase in the window)."""
    if f is None:
        return rules.Customer()
    return rules.Customer(
        purchase_days=f.purchase_days,
        spend=f.spend,
        days_since_purchase=f.recency_days,
        recency_score=f.r,
        frequency_score=f.f,
        monetary_score=f.m,
        interval_days=f.typical_interval_days or 0.0,
        expected_visit_in_days=f.expected_visit_in_days or 0.0,
        at_risk=f.at_risk,
        alive=1.0 if f.alive is None else f.alive,
        predicted_value=f.predicted_value or 0,
    )


async def run(db: Database, tenant_id: int, *, now: datetime, settings: Settings = DEFAULTS) -> Run:
    """One segment run for a tenant at ``now`` (see the module docstring)."""
    program = (await versions.current(db, tenant_id, now)).program
    found, fit = await figures_.compute(db, tenant_id, now=now, settings=settings)
    by_member = {f.member_id: f for f in found}
    async with db.read() as s:
        members = (
            await s.execute(
                select(
                    Member.id,
                    Member.tier,
                    Member.visits,
                    Member.last_visit_at,
                    Member.enrolled_at,
                    Member.tags,
                    Member.segment,
                )
                .where(Member.tenant_id == tenant_id)
                .order_by(Member.id)
            )
        ).all()
    segment: dict[int, str] = {}
    moves: list[dict[str, object]] = []
    changed: dict[str, list[int]] = {}
    for m in members:
        member = rules.Member(
            id=str(m.id),
            tier=m.tier,
            visits=m.visits,
            last_visit_at=m.last_visit_at,
            enrolled_at=m.enrolled_at,
            tags=tuple(m.tags or ()),
            segment=m.segment,
        )
        name = rules.segment_of(program, member, customer_of(by_member.get(m.id)), now=now)
        segment[m.id] = name
        if name != m.segment:
            changed.setdefault(name, []).append(m.id)
            moves.append(
                {
                    "tenant_id": tenant_id,
                    "member_id": m.id,
                    "at": now,
                    "from_segment": m.segment,
                    "to_segment": name,
                }
            )
    rows = [
        {
            "tenant_id": tenant_id,
            "member_id": f.member_id,
            "computed_at": now,
            "purchase_days": f.purchase_days,
            "first_purchase_at": f.first_purchase_at,
            "last_purchase_at": f.last_purchase_at,
            "spend": f.spend,
            "recency_score": f.r,
            "frequency_score": f.f,
            "monetary_score": f.m,
            "interval_days": f.typical_interval_days,
            "expected_visit_in_days": f.expected_visit_in_days,
            "at_risk": f.at_risk,
            "alive": f.alive,
            "predicted_value": f.predicted_value,
            "segment": segment.get(f.member_id, ""),
        }
        for f in found
    ]
    async with db.write() as s:
        await s.execute(delete(MemberFigures).where(MemberFigures.tenant_id == tenant_id))
        for i in range(0, len(rows), CHUNK):
            await s.execute(insert(MemberFigures), rows[i : i + CHUNK])
        for i in range(0, len(moves), CHUNK):
            await s.execute(insert(SegmentMove), moves[i : i + CHUNK])
        for name, ids in changed.items():
            for i in range(0, len(ids), CHUNK):
                await s.execute(
                    update(Member)
                    .where(Member.tenant_id == tenant_id, Member.id.in_(ids[i : i + CHUNK]))
                    .values(segment=name)
                )
    return Run(now, len(members), dict(Counter(segment.values())), len(moves), fit is not None)


@dataclass(frozen=True, slots=True)
class SegmentSize:
    segment: str
    members: int


async def sizes(db: Database, tenant_id: int) -> list[SegmentSize]:
    """How many members each segment holds now (by the last run), largest first."""
    async with db.read() as s:
        rows = await s.execute(
            select(Member.segment, func.count())
            .where(Member.tenant_id == tenant_id)
            .group_by(Member.segment)
            .order_by(func.count().desc(), Member.segment)
        )
        return [SegmentSize(name, int(n)) for name, n in rows]


async def members_in(db: Database, tenant_id: int, segment: str) -> list[MemberFigures | int]:
    """The members of one segment with their figures (a member without figures: its id alone)."""
    async with db.read() as s:
        ids = (
            await s.scalars(
                select(Member.id)
                .where(Member.tenant_id == tenant_id, Member.segment == segment)
                .order_by(Member.id)
            )
        ).all()
        found = {
            f.member_id: f
            for f in await s.scalars(
                select(MemberFigures).where(
                    MemberFigures.tenant_id == tenant_id, MemberFigures.segment == segment
                )
            )
        }
    return [found.get(i, i) for i in ids]
