"""Marketing consent: what a member agreed to, when, where, and who recorded it.

Marketing events (expiry reminders, segment changes) go out only for members whose
``members.marketing_consent`` is true, so that flag and its history must never disagree: a change is
one ``consents`` row, the member's flag, an audit-log entry and a ``member.consent_changed`` event,
all in one transaction. The member's row is locked first, so two changes at once are recorded in the
order they took effect and the flag is the last one's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.errors import Conflict, InvalidInput, NotFound
from loyalty.storage import audit_log, outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Consent, Member

#: Where consent was given or withdrawn: a short lower-case code (``till``, ``app``, ``web``,
#: ``admin``, ``import``, ``erasure``, ...). Free text would end up holding personal data.
SOURCE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
#: Most history rows one read returns (a member changes their mind a few times, not thousands).
MAX_HISTORY = 1_000


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    marketing: bool
    at: datetime
    source: str
    actor: str


@dataclass(frozen=True, slots=True)
class ConsentView:
    """The member's consent as it stands, with its history (oldest first)."""

    member_id: int
    marketing: bool
    history: list[ConsentRecord]


def check_source(source: str) -> str:
    """The source code as given, or InvalidInput saying what a source looks like."""
    if not SOURCE.match(source):
        raise InvalidInput(
            f"source {source[:40]!r}: give a short code of lower-case letters, digits, '_', '.' or '-'"
            " (till, app, web, admin, import, ...)"
        )
    return source


async def _locked_member(session: AsyncSession, tenant_id: int, member_id: int) -> Member:
    member = await session.scalar(
        select(Member).where(Member.tenant_id == tenant_id, Member.id == member_id).with_for_update()
    )
    if member is None:
        raise NotFound(f"member {member_id} not found")
    return member


async def record(
    session: AsyncSession,
    tenant_id: int,
    member_id: int,
    *,
    marketing: bool,
    source: str,
    actor: str,
    now: datetime,
) -> None:
    """Record a consent change in the caller's transaction (erasure withdraws consent this way): the
    history row, the member's flag, the audit entry and the event. The caller holds the member."""
    check_source(source)
    await session.execute(
        insert(Consent).values(
            tenant_id=tenant_id, member_id=member_id, marketing=marketing, at=now, source=source, actor=actor
        )
    )
    await session.execute(
        update(Member)
        .where(Member.tenant_id == tenant_id, Member.id == member_id)
        .values(marketing_consent=marketing)
    )
    await audit_log.record(
        session,
        tenant_id,
        actor=actor,
        action="set_consent",
        entity="member",
        entity_id=member_id,
        at=now,
        details={"marketing": marketing, "source": source},
    )
    await outbox.record(
        session,
        tenant_id,
        member_id,
        "member.consent_changed",
        {"marketing": marketing, "source": source},
        at=now,
    )


async def set_consent(
    db: Database,
    tenant_id: int,
    member_id: int,
    *,
    marketing: bool,
    source: str,
    actor: str,
    now: datetime,
) -> ConsentView:
    """Give or withdraw a member's marketing consent. The same answer again is still recorded (the
    member confirmed it, at this time, from this source). An erased or merged member has no consent
    to change: Conflict."""
    check_source(source)
    async with db.write() as s:
        member = await _locked_member(s, tenant_id, member_id)
        if member.state != "active":
            raise Conflict(f"member {member_id} is {member.state}: their consent cannot change")
        await record(s, tenant_id, member_id, marketing=marketing, source=source, actor=actor, now=now)
    return await consent_of(db, tenant_id, member_id)


async def consent_of(db: Database, tenant_id: int, member_id: int) -> ConsentView:
    """The member's consent now and its history, oldest first (the newest :data:`MAX_HISTORY`)."""
    async with db.read() as s:
        flag = await s.scalar(
            select(Member.marketing_consent).where(Member.tenant_id == tenant_id, Member.id == member_id)
        )
        if flag is None:
            raise NotFound(f"member {member_id} not found")
        rows = (
            await s.execute(
                select(Consent.marketing, Consent.at, Consent.source, Consent.actor)
                .where(Consent.tenant_id == tenant_id, Consent.member_id == member_id)
                .order_by(Consent.at.desc(), Consent.id.desc())
                .limit(MAX_HISTORY)
            )
        ).all()
    return ConsentView(member_id, bool(flag), [ConsentRecord(*r) for r in reversed(rows)])
