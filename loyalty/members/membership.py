"""Members and their cards: printing blank card numbers, binding a blank card on first use, blocking.

A card number is checked (length and Luhn digit) before any lookup, so a mistyped number costs no
query. A blank card becomes a member's card the first time a till uses it; two tills doing that at
once still bind it to one member (a conditional update decides who wins).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.cards.numbers import make_card_number, parse_card_number
from loyalty.errors import InvalidInput, NotAllowed, NotFound
from loyalty.ledger.reads import MemberRow
from loyalty.storage import audit_log, outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Card, CardBatch, Member, Tenant

#: Most cards one batch prints: a sheet run for an outlet, not a bulk export.
MAX_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class MemberView:
    id: int
    tier: str | None
    available: int
    pending: int
    debt: int
    visits: int
    last_visit_at: datetime | None
    enrolled_at: datetime
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CardRef:
    """A card named by its printed number or, from a verified token, by its id (exactly one)."""

    number: str | None = None
    card_id: int | None = None


@dataclass(frozen=True, slots=True)
class CardView:
    number: str
    state: str
    member_id: int | None
    outlet_id: int | None


def view_of(row: MemberRow) -> MemberView:
    """The figures of a member a ledger operation read, as its booking left them (the holder's
    balances move with the booking's moves)."""
    h = row.holder
    return MemberView(
        h.id,
        row.tier,
        h.available,
        h.pending,
        h.debt,
        row.visits,
        row.last_visit_at,
        row.enrolled_at,
        row.tags,
    )


def member_view(m: Member) -> MemberView:
    return MemberView(
        m.id, m.tier, m.available, m.pending, m.debt, m.visits, m.last_visit_at, m.enrolled_at, tuple(m.tags)
    )


async def _new_member(session: AsyncSession, tenant_id: int, now: datetime, tags: Sequence[str] = ()) -> int:
    member_id = await session.scalar(
        insert(Member)
        .values(
            tenant_id=tenant_id,
            tier=None,
            available=0,
            pending=0,
            debt=0,
            visits=0,
            enrolled_at=now,
            tags=list(tags),
        )
        .returning(Member.id)
    )
    assert member_id is not None
    return int(member_id)


async def create_member(
    db: Database, tenant_id: int, *, now: datetime, tags: Sequence[str] = ()
) -> MemberView:
    async with db.write() as s:
        member_id = await _new_member(s, tenant_id, now, tags)
    return await get_member(db, tenant_id, member_id)


async def get_member(db: Database, tenant_id: int, member_id: int) -> MemberView:
    async with db.read() as s:
        member = await s.scalar(select(Member).where(Member.tenant_id == tenant_id, Member.id == member_id))
    if member is None:
        raise NotFound(f"member {member_id} not found")
    return member_view(member)


async def issue_cards(
    db: Database, tenant_id: int, count: int, *, actor: str, now: datetime, outlet_id: int | None = None
) -> list[str]:
    """Print ``count`` blank card numbers (serials continue the tenant's sequence)."""
    if not 1 <= count <= MAX_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} cards")
    async with db.write() as s:
        # The tenant row lock serialises batches of one tenant, so serials never collide.
        prefix = await s.scalar(select(Tenant.card_prefix).where(Tenant.id == tenant_id).with_for_update())
        if prefix is None:
            raise NotFound(f"tenant {tenant_id} not found")
        start = (await s.scalar(select(func.max(Card.serial)).where(Card.tenant_id == tenant_id)) or 0) + 1
        numbers = [make_card_number(prefix, serial) for serial in range(start, start + count)]
        await s.execute(
            insert(Card),
            [
                {
                    "tenant_id": tenant_id,
                    "member_id": None,
                    "number": n,
                    "serial": start + i,
                    "state": "blank",
                    "outlet_id": outlet_id,
                    "created_at": now,
                }
                for i, n in enumerate(numbers)
            ],
        )
        s.add(
            CardBatch(
                tenant_id=tenant_id,
                outlet_id=outlet_id,
                first_serial=start,
                count=count,
                created_at=now,
                created_by=actor,
            )
        )
        await audit_log.record(
            s,
            tenant_id,
            actor=actor,
            action="issue_cards",
            entity="card_batch",
            entity_id=start,
            at=now,
            details={"count": count, "first": numbers[0], "outlet_id": outlet_id},
        )
    return numbers


async def card_holder(
    session: AsyncSession, tenant_id: int, card: CardRef, *, bind_at: datetime | None = None
) -> int:
    """The member holding a card of this tenant: the one path from a card to its member.

    A blank card is bound to a new member when ``bind_at`` is given (a till's first use, in the
    caller's transaction; two tills doing it at once still bind it to one member), and is NotFound
    otherwise (a customer's page). A blocked card is NotAllowed either way.
    """
    if (card.number is None) == (card.card_id is None):
        raise InvalidInput("name the card by exactly one of its number and its id")
    by = Card.number == parse_card_number(card.number) if card.number is not None else Card.id == card.card_id
    row = (
        await session.execute(
            select(Card.id, Card.state, Card.member_id).where(Card.tenant_id == tenant_id, by)
        )
    ).first()
    if row is None:
        raise NotFound("card not found")
    card_id, state, member_id = row
    if state == "blocked":
        raise NotAllowed("this card is blocked")
    if state == "active":
        assert member_id is not None
        return int(member_id)
    if bind_at is None:
        raise NotFound("this card has not been activated yet: use it once at a till")
    member_id = await _new_member(session, tenant_id, bind_at)
    bound = await session.execute(
        update(Card)
        .where(Card.tenant_id == tenant_id, Card.id == card_id, Card.state == "blank")
        .values(state="active", member_id=member_id, activated_at=bind_at)
    )
    if bound.rowcount == 1:  # type: ignore[attr-defined]
        number = await session.scalar(
            select(Card.number).where(Card.tenant_id == tenant_id, Card.id == card_id)
        )
        await outbox.record(session, tenant_id, member_id, "card.activated", {"card": number}, at=bind_at)
        return member_id
    # Another till bound it first: drop our member (it has no other rows yet) and use theirs.
    await session.execute(delete(Member).where(Member.tenant_id == tenant_id, Member.id == member_id))
    winner = await session.scalar(
        select(Card.member_id).where(Card.tenant_id == tenant_id, Card.id == card_id)
    )
    assert winner is not None
    return int(winner)


async def holder_id(db: Database, tenant_id: int, card: CardRef) -> int:
    """The member holding an active card, read only (a customer opening their card's page)."""
    async with db.read() as s:
        return await card_holder(s, tenant_id, card)


async def resolve_card(db: Database, tenant_id: int, number: str, *, now: datetime) -> MemberView:
    """What a till sees after scanning: the card's member, created on a blank card's first use."""
    async with db.write() as s:
        member_id = await card_holder(s, tenant_id, CardRef(number=number), bind_at=now)
    return await get_member(db, tenant_id, member_id)


async def get_card(db: Database, tenant_id: int, number: str) -> CardView:
    number = parse_card_number(number)
    async with db.read() as s:
        card = await s.scalar(select(Card).where(Card.tenant_id == tenant_id, Card.number == number))
    if card is None:
        raise NotFound("card not found")
    return CardView(card.number, card.state, card.member_id, card.outlet_id)


async def assign_card(
    db: Database, tenant_id: int, number: str, member_id: int, *, actor: str, now: datetime
) -> CardView:
    """Give an existing member a blank card (a replacement for a lost one)."""
    number = parse_card_number(number)
    async with db.write() as s:
        if (
            await s.scalar(select(Member.id).where(Member.tenant_id == tenant_id, Member.id == member_id))
            is None
        ):
            raise NotFound(f"member {member_id} not found")
        done = await s.execute(
            update(Card)
            .where(Card.tenant_id == tenant_id, Card.number == number, Card.state == "blank")
            .values(state="active", member_id=member_id, activated_at=now)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise NotAllowed("only a blank card can be assigned")
        await outbox.record(s, tenant_id, member_id, "card.activated", {"card": number}, at=now)
        await audit_log.record(
            s,
            tenant_id,
            actor=actor,
            action="assign_card",
            entity="card",
            entity_id=number,
            at=now,
            details={"member_id": member_id},
        )
    return await get_card(db, tenant_id, number)


async def block_card(db: Database, tenant_id: int, number: str, *, actor: str, now: datetime) -> CardView:
    number = parse_card_number(number)
    async with db.write() as s:
        held = (
            await s.execute(
                update(Card)
                .where(Card.tenant_id == tenant_id, Card.number == number)
                .values(state="blocked")
                .returning(Card.member_id)
            )
        ).first()
        if held is None:
            raise NotFound("card not found")
        if held[0] is not None:
            await outbox.record(s, tenant_id, held[0], "card.blocked", {"card": number}, at=now)
        await audit_log.record(
            s, tenant_id, actor=actor, action="block_card", entity="card", entity_id=number, at=now
        )
    return await get_card(db, tenant_id, number)
