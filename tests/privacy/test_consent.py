"""Marketing consent: each change is recorded with its time, source and actor, and tells the CRM."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from loyalty.errors import Conflict, InvalidInput, NotFound
from loyalty.members import consent, membership
from loyalty.privacy import erasure
from loyalty.storage.db import Database
from loyalty.storage.models import AuditEntry, Event, Member
from loyalty.storage.outbox import check

from .shop import NOW, make_world


async def test_consent_is_recorded_with_time_source_event_and_audit(db: Database) -> None:
    """Giving then withdrawing consent leaves two history rows (time, source, actor), the member's
    flag at the last answer, two schema-valid events and two audit entries."""
    world = await make_world(db)
    t = world.tenant_id
    member = (await membership.create_member(db, t, now=NOW)).id
    given = await consent.set_consent(db, t, member, marketing=True, source="till", actor="cashier", now=NOW)
    assert given.marketing and [(r.marketing, r.at, r.source, r.actor) for r in given.history] == [
        (True, NOW, "till", "cashier")
    ]
    later = NOW + timedelta(days=3)
    view = await consent.set_consent(
        db, t, member, marketing=False, source="app", actor="customer", now=later
    )
    assert not view.marketing
    assert [(r.marketing, r.at, r.source) for r in view.history] == [
        (True, NOW, "till"),
        (False, later, "app"),
    ]
    assert await consent.consent_of(db, t, member) == view
    async with db.read() as s:
        flag = await s.scalar(select(Member.marketing_consent).where(Member.id == member))
        events = (
            await s.execute(
                select(Event.type, Event.data, Event.occurred_at)
                .where(Event.tenant_id == t, Event.member_id == member)
                .order_by(Event.id)
            )
        ).all()
        audits = (
            await s.execute(
                select(AuditEntry.actor, AuditEntry.details).where(
                    AuditEntry.tenant_id == t, AuditEntry.action == "set_consent"
                )
            )
        ).all()
    assert flag is False
    assert [(e[0], e[1], e[2]) for e in events] == [
        ("member.consent_changed", {"marketing": True, "source": "till"}, NOW),
        ("member.consent_changed", {"marketing": False, "source": "app"}, later),
    ]
    for _, data, _ in events:
        check("member.consent_changed", data)
    assert sorted(a[0] for a in audits) == ["cashier", "customer"]


@pytest.mark.parametrize("source", ["", "Till", "till shop", "x" * 40, "till;drop", "1web"])
async def test_a_bad_source_is_refused_and_nothing_is_written(db: Database, source: str) -> None:
    """A source that is not a short lower-case code is InvalidInput; no history row is written."""
    world = await make_world(db)
    member = (await membership.create_member(db, world.tenant_id, now=NOW)).id
    with pytest.raises(InvalidInput, match="source"):
        await consent.set_consent(
            db, world.tenant_id, member, marketing=True, source=source, actor="a", now=NOW
        )
    view = await consent.consent_of(db, world.tenant_id, member)
    assert (view.marketing, view.history) == (False, [])


async def test_consent_of_unknown_foreign_or_erased_members(db: Database) -> None:
    """Another tenant's member is NotFound (read and write); an erased member's consent cannot change."""
    world = await make_world(db)
    other = await make_world(db)
    member = (await membership.create_member(db, world.tenant_id, now=NOW)).id
    with pytest.raises(NotFound):
        await consent.set_consent(
            db, other.tenant_id, member, marketing=True, source="web", actor="a", now=NOW
        )
    with pytest.raises(NotFound):
        await consent.consent_of(db, other.tenant_id, member)
    await consent.set_consent(db, world.tenant_id, member, marketing=True, source="web", actor="a", now=NOW)
    await erasure.erase(db, world.tenant_id, member, actor="a", now=NOW)
    with pytest.raises(Conflict, match="erased"):
        await consent.set_consent(
            db, world.tenant_id, member, marketing=True, source="web", actor="a", now=NOW
        )
    view = await consent.consent_of(db, world.tenant_id, member)
    assert not view.marketing and [(r.marketing, r.source) for r in view.history] == [
        (True, "web"),
        (False, "erasure"),
    ]
