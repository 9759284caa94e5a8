"""A lost card replaced: the old card blocked and a new one the member's, in one transaction.

The new card is either a blank card the member was handed (its printed number, as a till activates
a blank card) or one issued now (the next serial of the tenant, as a printed batch would). The old
card is blocked, so a till refuses it from then on (``membership.card_holder`` says it is blocked);
the member, their points and their history are untouched. Three events are written for the member:
``card.blocked`` (the old card) and ``card.activated`` (the new one), as blocking a card and binding a
blank one write elsewhere, so a system that tracks either learns of it; and ``card.replaced`` (old
and new: the pair a CRM needs to re-point its records).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.cards.numbers import make_card_number, parse_card_number
from loyalty.errors import Conflict, InvalidInput, NotFound
from loyalty.storage import audit_log, outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Card, Member, Tenant


@dataclass(frozen=True, slots=True)
class Replacement:
    member_id: int
    old_card: str
    new_card: str
    #: True when the new number was issued by the replacement, False when a blank card was handed over.
    issued: bool


async def _issue_one(session: AsyncSession, tenant_id: int, member_id: int, now: datetime) -> str:
    """A new card, already the member's: the tenant's next serial (the tenant row lock serialises
    it with printed batches, so serials never collide)."""
    prefix = await session.scalar(select(Tenant.card_prefix).where(Tenant.id == tenant_id).with_for_update())
    if prefix is None:
        raise NotFound(f"tenant {tenant_id} not found")
    serial = (await session.scalar(select(func.max(Card.serial)).where(Card.tenant_id == tenant_id)) or 0) + 1
    number = make_card_number(prefix, serial)
    await session.execute(
        insert(Card).values(
            tenant_id=tenant_id,
            member_id=member_id,
            number=number,
            serial=serial,
            state="active",
            outlet_id=None,
            created_at=now,
            activated_at=now,
        )
    )
    return number


async def _take_blank(
    session: AsyncSession, tenant_id: int, number: str, member_id: int, now: datetime
) -> None:
    """The blank card ``number`` becomes the member's; a conditional update, so a till binding the
    same blank card at the same moment cannot also have it."""
    state = await session.scalar(select(Card.state).where(Card.tenant_id == tenant_id, Card.number == number))
    if state is None:
        raise NotFound(f"card {number} not found")
    done = await session.execute(
        update(Card)
        .where(Card.tenant_id == tenant_id, Card.number == number, Card.state == "blank")
        .values(state="active", member_id=member_id, activated_at=now)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"card {number} is {state}: only a blank card can replace a lost one")


async def replace_card(
    db: Database, tenant_id: int, number: str, *, new_card: str | None = None, actor: str, now: datetime
) -> Replacement:
    """Block the active card ``number`` and give its member ``new_card`` (a blank card) or a newly
    issued one. NotFound for another tenant's card, Conflict for a card that is not active (blank,
    or already blocked) or a new card that is not blank; nothing is written then."""
    old = parse_card_number(number)
    new = parse_card_number(new_card) if new_card is not None else None
    if new == old:
        raise InvalidInput("the new card must be another card than the lost one")
    async with db.write() as s:
        card = select(Card.id, Card.state, Card.member_id).where(
            Card.tenant_id == tenant_id, Card.number == old
        )
        row = (await s.execute(card)).first()
        if row is None:
            raise NotFound(f"card {old} not found")
        # The member's row first, as a merge or an erasure locks it before changing its cards (no
        # deadlock), then the card again under that lock: it may have moved or been unlinked since.
        if row[2] is not None:
            held = await s.scalar(
                select(Member.state)
                .where(Member.tenant_id == tenant_id, Member.id == row[2])
                .with_for_update()
            )
            if held != "active":
                raise Conflict(f"card {old} belongs to a member who was {held}")
        owner = row[2]
        row = (await s.execute(card.with_for_update())).first()
        assert row is not None
        card_id, state, member_id = row
        if member_id != owner:
            raise Conflict(f"card {old} changed hands meanwhile (a merge): try again")
        if state != "active" or member_id is None:
            raise Conflict(f"card {old} is {state}: only an active card can be replaced")
        blocked = await s.execute(
            update(Card)
            .where(Card.tenant_id == tenant_id, Card.id == card_id, Card.state == "active")
            .values(state="blocked")
        )
        if blocked.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"card {old} changed meanwhile: try again")
        if new is None:
            new = await _issue_one(s, tenant_id, member_id, now)
        else:
            await _take_blank(s, tenant_id, new, member_id, now)
        await audit_log.record(
            s,
            tenant_id,
            actor=actor,
            action="replace_card",
            entity="card",
            entity_id=old,
            at=now,
            details={"member_id": member_id, "new_card": new, "issued": new_card is None},
        )
        await outbox.record(s, tenant_id, member_id, "card.blocked", {"card": old}, at=now)
        await outbox.record(s, tenant_id, member_id, "card.activated", {"card": new}, at=now)
        await outbox.record(
            s, tenant_id, member_id, "card.replaced", {"old_card": old, "new_card": new}, at=now
        )
    return Replacement(int(member_id), old, new, new_card is None)
