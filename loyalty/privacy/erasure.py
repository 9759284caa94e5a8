"""Erasure: a member's personal data removed on request, the books kept exact.

One transaction, on the member's locked row:

* the member's cards are unlinked (``member_id`` NULL) and blocked: the printed number no longer
  leads to anyone, and a till that scans it is refused (a blocked card never turns blank again);
* the member's tags and segment are cleared and marketing consent is withdrawn (recorded, with its
  event: a CRM learns it before it learns of the erasure);
* every purchase of the member loses its basket detail (:mod:`.retention`: SKU, category and tags of
  each line, the recorded engine inputs); lines keep price, quantity, points and refunded quantity;
* the customer figures and segment moves of the member (profiling) are deleted;
* stored events of the member are scrubbed of card numbers and segments, and the audit log's card
  entries (assign, block, replace) of the member's cards no longer name the card: the log keeps
  who did what and when, but not which number belonged to the erased member;
* the member's state becomes ``erased`` with ``closed_at``; an audit entry and a ``member.erased``
  event record it.

Not touched: the ledger (entries and draws are append-only, and the balances, lots, redemptions,
vouchers, refunds, adjustments and tier history are the books, holding no personal data), so the
liability, monthly and partner reports and ``loyalty audit`` give the same figures before and after.
The member's points stay where they are (an erased member's liability is still owed until it expires).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.errors import Conflict, NotFound
from loyalty.members import consent
from loyalty.privacy.retention import purge
from loyalty.storage import audit_log, outbox
from loyalty.storage.db import Database
from loyalty.storage.models import AuditEntry, Card, Event, Member, MemberFigures, SegmentMove, Transaction

#: Purchases purged per statement round inside the erasure (one member; bounded lists of ids).
CHUNK = 500
#: What stored events of an erased member hold in place of personal data (their schemas keep the key).
ERASED = ""
#: Event data keys that hold personal data, per event type: card numbers and profiling.
_SCRUB: dict[str, tuple[str, ...]] = {
    "card.activated": ("card",),
    "card.blocked": ("card",),
    "card.replaced": ("old_card", "new_card"),
    "member.segment_changed": ("from_segment", "to_segment"),
}


@dataclass(frozen=True, slots=True)
class ErasureResult:
    member_id: int
    erased_at: datetime
    cards: int
    purchases: int
    events_scrubbed: int
    figures_removed: int
    segment_moves_removed: int


async def erase(db: Database, tenant_id: int, member_id: int, *, actor: str, now: datetime) -> ErasureResult:
    """Erase the member (see the module docstring). NotFound for another tenant's member; Conflict
    when the member was erased already, or merged (erase the member they were merged into)."""
    async with db.write() as s:
        member = await s.scalar(
            select(Member).where(Member.tenant_id == tenant_id, Member.id == member_id).with_for_update()
        )
        if member is None:
            raise NotFound(f"member {member_id} not found")
        if member.state == "erased":
            raise Conflict(f"member {member_id} was already erased at {member.closed_at}")
        if member.state != "active":
            raise Conflict(
                f"member {member_id} is {member.state} into member {member.merged_into}: erase that member"
            )
        numbers = list(
            (
                await s.scalars(
                    select(Card.number).where(Card.tenant_id == tenant_id, Card.member_id == member_id)
                )
            ).all()
        )
        cards = await _unlink_cards(s, tenant_id, member_id)
        await _scrub_audit_log(s, tenant_id, numbers)
        await consent.record(s, tenant_id, member_id, marketing=False, source="erasure", actor=actor, now=now)
        purchases = await _purge_purchases(s, tenant_id, member_id, now)
        figures = await _delete(s, MemberFigures, tenant_id, member_id)
        moves = await _delete(s, SegmentMove, tenant_id, member_id)
        scrubbed = await _scrub_events(s, tenant_id, member_id)
        await s.execute(
            update(Member)
            .where(Member.tenant_id == tenant_id, Member.id == member_id)
            .values(
                tags=[],
                segment="",
                marketing_consent=False,
                state="erased",
                closed_at=now,
                # A till that read the member before this (without a lock) retries on fresh rows,
                # and finds the card blocked, rather than booking a basket with detail after it.
                revision=Member.revision + 1,
            )
        )
        result = ErasureResult(member_id, now, cards, purchases, scrubbed, figures, moves)
        await audit_log.record(
            s,
            tenant_id,
            actor=actor,
            action="erase_member",
            entity="member",
            entity_id=member_id,
            at=now,
            details={"cards": cards, "purchases": purchases, "events_scrubbed": scrubbed},
        )
        await outbox.record(s, tenant_id, member_id, "member.erased", {}, at=now)
    return result


async def _unlink_cards(s: AsyncSession, tenant_id: int, member_id: int) -> int:
    done = await s.execute(
        update(Card)
        .where(Card.tenant_id == tenant_id, Card.member_id == member_id)
        .values(member_id=None, state="blocked")
    )
    return int(done.rowcount)  # type: ignore[attr-defined]


async def _scrub_audit_log(s: AsyncSession, tenant_id: int, numbers: list[str]) -> None:
    """Blank the member's card numbers in the audit log's card entries (the entry's subject, and any
    detail holding one of them, such as a replacement's new card)."""
    if not numbers:
        return
    known = set(numbers)
    rows = (
        await s.execute(
            select(AuditEntry.id, AuditEntry.details).where(
                AuditEntry.tenant_id == tenant_id,
                AuditEntry.entity == "card",
                AuditEntry.entity_id.in_(numbers),
            )
        )
    ).all()
    for entry_id, details in rows:
        clean = {k: ERASED if isinstance(v, str) and v in known else v for k, v in (details or {}).items()}
        await s.execute(
            update(AuditEntry).where(AuditEntry.id == entry_id).values(entity_id=ERASED, details=clean)
        )


async def _purge_purchases(s: AsyncSession, tenant_id: int, member_id: int, now: datetime) -> int:
    """Purge the member's purchases page by page (keyset on the id), inside the erasure's transaction."""
    purged = after = 0
    while True:
        ids = list(
            (
                await s.scalars(
                    select(Transaction.id)
                    .where(
                        Transaction.tenant_id == tenant_id,
                        Transaction.member_id == member_id,
                        Transaction.id > after,
                    )
                    .order_by(Transaction.id)
                    .limit(CHUNK)
                )
            ).all()
        )
        if not ids:
            return purged
        purged += await purge(s, tenant_id, ids, now=now)
        after = ids[-1]


async def _delete(s: AsyncSession, model: Any, tenant_id: int, member_id: int) -> int:
    done = await s.execute(delete(model).where(model.tenant_id == tenant_id, model.member_id == member_id))
    return int(done.rowcount)  # type: ignore[attr-defined]


async def _scrub_events(s: AsyncSession, tenant_id: int, member_id: int) -> int:
    """Blank the personal fields of the member's stored events (deliveries still pending send the
    scrubbed data); returns how many events changed."""
    rows = (
        await s.execute(
            select(Event.id, Event.type, Event.data).where(
                Event.tenant_id == tenant_id, Event.member_id == member_id, Event.type.in_(tuple(_SCRUB))
            )
        )
    ).all()
    changed = 0
    for event_id, type_, data in rows:
        clean = dict(data or {}) | {key: ERASED for key in _SCRUB[type_] if key in (data or {})}
        if clean != data:
            await s.execute(
                update(Event)
                .where(Event.tenant_id == tenant_id, Event.member_id == member_id, Event.id == event_id)
                .values(data=clean)
            )
            changed += 1
    return changed
