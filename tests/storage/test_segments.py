"""Segment runs: each member lands in the first segment whose condition holds, moves are kept as
history, a rule reads member.segment at the till, and the books still recompute."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from loyalty.members import membership
from loyalty.ops.audit import audit
from loyalty.storage.db import Database
from loyalty.storage.models import Member, MemberFigures, SegmentMove
from loyalty.value import segments

from .conftest import NOW, PROGRAM, SETUP, make_world
from .helpers import post

DAY = timedelta(days=1)
SEGMENTED = (
    PROGRAM
    + """\
  - id: winback
    when: member.segment == "at_risk"
    earn: {points: 50}
segments:
  - name: at_risk
    when: customer.at_risk
  - name: regular
    when: customer.purchase_days >= 3
  - name: new
    when: customer.purchase_days <= 1
"""
)


async def test_a_run_places_members_keeps_history_and_a_rule_reads_the_segment(db: Database) -> None:
    world = await make_world(db, SEGMENTED)
    lapsing, steady, once, never = [
        (await membership.create_member(db, world.tenant_id, now=SETUP)).id for _ in range(4)
    ]
    for days in (100, 90, 80):
        await post(world, f"l{days}", 1000, lapsing, at=NOW - days * DAY)
    for days in (30, 20, 10):
        await post(world, f"s{days}", 1000, steady, at=NOW - days * DAY)
    await post(world, "o", 1000, once, at=NOW - 5 * DAY)

    first = await segments.run(db, world.tenant_id, now=NOW)
    assert (first.members, first.moves) == (4, 4)
    assert first.sizes == {"at_risk": 1, "regular": 1, "new": 2}
    async with db.read() as s:
        placed = dict(
            (
                await s.execute(
                    select(MemberFigures.member_id, MemberFigures.segment).where(
                        MemberFigures.tenant_id == world.tenant_id
                    )
                )
            ).all()
        )
        # Figures exist for purchasing members only; the one who never bought is judged on empty ones.
        current = dict(
            (
                await s.execute(select(Member.id, Member.segment).where(Member.tenant_id == world.tenant_id))
            ).all()
        )
    assert placed == {lapsing: "at_risk", steady: "regular", once: "new"}
    assert current == {lapsing: "at_risk", steady: "regular", once: "new", never: "new"}
    assert {s.segment: s.members for s in await segments.sizes(db, world.tenant_id)}["new"] == 2

    # Nothing changed: a second run moves nobody.
    assert (await segments.run(db, world.tenant_id, now=NOW)).moves == 0

    # At the till, the win-back rule gives the at-risk member 50 points on top of the base rate.
    back = await post(world, "back", 1000, lapsing, at=NOW)
    usual = await post(world, "usual", 1000, steady, at=NOW)
    assert (back.points, usual.points) == (10 + 50, 10)

    # Having come back, the member moves on at the next run, and the history shows both moves.
    later = await segments.run(db, world.tenant_id, now=NOW + DAY)
    assert "at_risk" not in later.sizes and later.moves == 1
    async with db.read() as s:
        history = (
            await s.execute(
                select(SegmentMove.from_segment, SegmentMove.to_segment)
                .where(SegmentMove.tenant_id == world.tenant_id, SegmentMove.member_id == lapsing)
                .order_by(SegmentMove.at, SegmentMove.id)
            )
        ).all()
    assert [tuple(h) for h in history] == [("", "at_risk"), ("at_risk", "regular")]
    # The recorded inputs carry the segment, so the auditor recomputes the win-back posting exactly.
    report = await audit(db, world.tenant_id)
    assert report.ok, report.findings
