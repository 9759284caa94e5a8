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
from typing import Any

from sqlalchemy import delete, func, insert, select, update

import rules
from loyalty.programs import versions
from loyalty.storage import outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Event, Member, MemberFigures, SegmentMove, SegmentRun, Tenant
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


def customer_of(f: Figures | None, settings: Settings = DEFAULTS) -> rules.Customer:
    """What segment conditions read of a member's figures. A member with no purchase in the window has
    none: silent at least as long as the window, so "days since purchase > N" holds for them too."""
    if f is None:
        return rules.Customer(days_since_purchase=float(settings.window_days))
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
                    Member.available,
                    Member.visits,
                    Member.last_visit_at,
                    Member.enrolled_at,
                    Member.tags,
                    Member.segment,
                    Member.marketing_consent,
                )
                # An erased or merged member is no longer profiled: their purchases stay in the books.
                .where(Member.tenant_id == tenant_id, Member.state == "active")
                .order_by(Member.id)
            )
        ).all()
    segment: dict[int, str] = {}
    moves: list[dict[str, object]] = []
    events: list[dict[str, Any]] = []
    changed: dict[str, list[int]] = {}
    for m in members:
        member = rules.Member(
            id=str(m.id),
            tier=m.tier,
            points=m.available,
            visits=m.visits,
            last_visit_at=m.last_visit_at,
            enrolled_at=m.enrolled_at,
            tags=tuple(m.tags or ()),
            segment=m.segment,
        )
        name = rules.segment_of(program, member, customer_of(by_member.get(m.id), settings), now=now)
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
            if m.marketing_consent:  # a marketing event: only for members who said yes
                data = {"from_segment": m.segment, "to_segment": name}
                events.append(outbox.row(tenant_id, m.id, "member.segment_changed", data, at=now))
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
        if f.member_id in segment
    ]
    async with db.write() as s:
        # One run of a tenant at a time: a second one waits here, then replaces this one's rows.
        await s.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        # What an erasure or a consent change did since the read: only members still active are
        # placed, and only those still consenting get the marketing event.
        live = dict(
            (
                await s.execute(
                    select(Member.id, Member.marketing_consent).where(
                        Member.tenant_id == tenant_id, Member.state == "active"
                    )
                )
            ).all()
        )
        rows = [r for r in rows if r["member_id"] in live]
        moves = [m for m in moves if m["member_id"] in live]
        events = [e for e in events if live.get(e["member_id"])]
        changed = {name: [i for i in ids if i in live] for name, ids in changed.items()}
        segment = {i: name for i, name in segment.items() if i in live}
        await s.execute(delete(MemberFigures).where(MemberFigures.tenant_id == tenant_id))
        for i in range(0, len(rows), CHUNK):
            await s.execute(insert(MemberFigures), rows[i : i + CHUNK])
        for i in range(0, len(moves), CHUNK):
            await s.execute(insert(SegmentMove), moves[i : i + CHUNK])
        for i in range(0, len(events), CHUNK):
            await s.execute(insert(Event), events[i : i + CHUNK])
        for name, ids in changed.items():
            for i in range(0, len(ids), CHUNK):
                await s.execute(
                    update(Member)
                    .where(Member.tenant_id == tenant_id, Member.id.in_(ids[i : i + CHUNK]))
                    .values(segment=name)
                )
        result = Run(now, len(members), dict(Counter(segment.values())), len(moves), fit is not None)
        s.add(
            SegmentRun(
                tenant_id=tenant_id,
                at=now,
                members=result.members,
                moves=result.moves,
                fitted=result.fitted,
                sizes=result.sizes,
            )
        )
    return result


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


#: Most rows one page of a segment's members or of the at-risk list returns.
MAX_PAGE = 1_000


async def history(db: Database, tenant_id: int, *, limit: int = 100) -> list[Run]:
    """The latest runs, oldest first: segment sizes over time."""
    async with db.read() as s:
        rows = (
            await s.scalars(
                select(SegmentRun)
                .where(SegmentRun.tenant_id == tenant_id)
                .order_by(SegmentRun.at.desc(), SegmentRun.id.desc())
                .limit(limit)
            )
        ).all()
    return [
        Run(r.at, r.members, {str(k): int(v) for k, v in r.sizes.items()}, r.moves, r.fitted)
        for r in reversed(rows)
    ]


@dataclass(frozen=True, slots=True)
class Moves:
    from_segment: str
    to_segment: str
    members: int


async def moves_since(db: Database, tenant_id: int, since: datetime) -> list[Moves]:
    """How many members moved from one segment to another since ``since``, most moves first."""
    m = SegmentMove
    async with db.read() as s:
        rows = await s.execute(
            select(m.from_segment, m.to_segment, func.count())
            .where(m.tenant_id == tenant_id, m.at >= since)
            .group_by(m.from_segment, m.to_segment)
            .order_by(func.count().desc(), m.from_segment, m.to_segment)
        )
        return [Moves(a, b, int(n)) for a, b, n in rows]


@dataclass(frozen=True, slots=True)
class MemberFiguresView:
    member_id: int
    segment: str
    rfm: str
    purchase_days: int
    spend: int
    last_purchase_at: datetime
    interval_days: float | None
    expected_visit_in_days: float | None
    at_risk: bool
    alive: float | None
    predicted_value: int | None


def _view(f: MemberFigures) -> MemberFiguresView:
    return MemberFiguresView(
        f.member_id,
        f.segment,
        f"{f.recency_score}{f.frequency_score}{f.monetary_score}",
        f.purchase_days,
        f.spend,
        f.last_purchase_at,
        f.interval_days,
        f.expected_visit_in_days,
        f.at_risk,
        f.alive,
        f.predicted_value,
    )


async def figures_page(
    db: Database,
    tenant_id: int,
    *,
    segment: str | None = None,
    at_risk: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[MemberFiguresView]:
    """A page of members' stored figures, of one segment or the at-risk list, most spend first."""
    f = MemberFigures
    query = select(f).where(f.tenant_id == tenant_id)
    if segment is not None:
        query = query.where(f.segment == segment)
    if at_risk:
        query = query.where(f.at_risk.is_(True))
    query = query.order_by(f.spend.desc(), f.member_id).limit(min(limit, MAX_PAGE)).offset(offset)
    async with db.read() as s:
        return [_view(row) for row in await s.scalars(query)]


@dataclass(frozen=True, slots=True)
class ValueBand:
    """One tenth of the purchasing members, by net spend: its bounds, members and their spend."""

    decile: int
    low: int
    high: int
    members: int
    spend: int
    predicted_value: int


async def value_deciles(db: Database, tenant_id: int) -> list[ValueBand]:
    """The value distribution: purchasing members in ten bands by spend, with what each band spent and
    is predicted to spend (from the last run)."""
    f = MemberFigures
    band = func.ntile(10).over(order_by=(f.spend, f.member_id)).label("band")
    ranked = select(f.spend, f.predicted_value, band).where(f.tenant_id == tenant_id).subquery()
    query = (
        select(
            ranked.c.band,
            func.min(ranked.c.spend),
            func.max(ranked.c.spend),
            func.count(),
            func.sum(ranked.c.spend),
            func.coalesce(func.sum(ranked.c.predicted_value), 0),
        )
        .group_by(ranked.c.band)
        .order_by(ranked.c.band)
    )
    async with db.read() as s:
        return [
            ValueBand(int(b), int(lo), int(hi), int(n), int(total), int(pv))
            for b, lo, hi, n, total, pv in await s.execute(query)
        ]
