"""Expiry reminders: ``points.expiring`` events, N days before a member's points expire.

N is the program's ``points.expiry_reminder_days`` (no reminders when it is not set). A reminder is a
marketing event: only members who consented get one, and never an erased or merged member. Lots
expire at month ends, so a member's lots that expire together make one reminder (their points summed);
each (member, expiry instant) is reminded once, however often the job runs, so it is safe to run daily
or hourly. The reminder counts only what the lots still hold when the job runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select

from loyalty.errors import NotFound
from loyalty.programs import versions
from loyalty.storage import outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Event, Member, PointLot

#: Reminders written per INSERT.
CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class Reminded:
    """What one run wrote: reminders (members), the lots they cover and their points."""

    members: int
    lots: int
    points: int


async def remind_expiring(db: Database, tenant_id: int, *, now: datetime) -> Reminded:
    """Write a ``points.expiring`` event for every consenting member with points expiring within the
    program's reminder days, unless that expiry was reminded before."""
    try:
        program = (await versions.current(db, tenant_id, now)).program
    except NotFound:
        return Reminded(0, 0, 0)
    days = program.document.points.expiry_reminder_days
    if days is None:
        return Reminded(0, 0, 0)
    horizon = now + timedelta(days=days)
    async with db.write() as s:
        due = (
            await s.execute(
                select(
                    PointLot.member_id,
                    PointLot.expires_at,
                    func.sum(PointLot.remaining),
                    func.count(),
                )
                .join(Member, (Member.tenant_id == PointLot.tenant_id) & (Member.id == PointLot.member_id))
                .where(
                    PointLot.tenant_id == tenant_id,
                    PointLot.state.in_(("available", "pending")),
                    PointLot.remaining > 0,
                    PointLot.expires_at > now,
                    PointLot.expires_at <= horizon,
                    Member.marketing_consent.is_(True),
                    Member.state == "active",
                )
                .group_by(PointLot.member_id, PointLot.expires_at)
            )
        ).all()
        if not due:
            return Reminded(0, 0, 0)
        # Reminders already written for these expiries, read by member (the events' index): they
        # were written at most ``days`` before their expiry.
        members = sorted({member_id for member_id, *_ in due})
        sent: set[tuple[int, datetime]] = set()
        for i in range(0, len(members), CHUNK):
            found = await s.execute(
                select(Event.member_id, Event.data).where(
                    Event.tenant_id == tenant_id,
                    Event.member_id.in_(members[i : i + CHUNK]),
                    Event.type == "points.expiring",
                    Event.occurred_at > now - timedelta(days=days + 1),
                )
            )
            sent |= {(m, datetime.fromisoformat(data["expires_at"])) for m, data in found.all()}
        rows, lots, points = [], 0, 0
        for member_id, expires_at, remaining, count in due:
            assert expires_at is not None  # the query asks for lots that expire
            if (member_id, expires_at) in sent:
                continue
            data = {"points": int(remaining), "expires_at": expires_at, "days_before": days}
            rows.append(outbox.row(tenant_id, member_id, "points.expiring", data, at=now))
            lots, points = lots + int(count), points + int(remaining)
        for i in range(0, len(rows), CHUNK):
            await s.execute(insert(Event), rows[i : i + CHUNK])
    return Reminded(len(rows), lots, points)
