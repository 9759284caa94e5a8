"""From what a till scanned or a cashier typed (a card URL, a bare token, a card number) to a card.

Tokens are verified against the tenant's key ring, derived from server secrets, before anything is
looked up; a mistyped number fails its check digit before anything is looked up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from loyalty import balances, members
from loyalty.cards.numbers import parse_card_number
from loyalty.cards.tokens import peek_token, verify_token
from loyalty.db import Database
from loyalty.errors import NotAllowed, NotFound
from loyalty.models import Card, Member, Redemption, Transaction
from loyalty.secrets import Secrets

_TYPED = re.compile(r"^[\d\s\-]+$")


@dataclass(frozen=True, slots=True)
class CardRef:
    """Exactly one of the printed number or the card id (from a verified token)."""

    number: str | None = None
    card_id: int | None = None


def token_of(code: str) -> str:
    """The token inside a scanned card URL (``https://.../c/<token>``), or the code itself."""
    code = code.strip()
    if "/c/" in code:
        code = code.rsplit("/c/", 1)[1]
    return code.split("?", 1)[0].split("#", 1)[0].strip("/")


def parse_code(code: str, secrets: Secrets, tenant_id: int, *, now: datetime) -> CardRef:
    """Parse a till's card code for ``tenant_id``; InvalidCardNumber / InvalidToken on a bad one."""
    if _TYPED.match(code.strip()):
        return CardRef(number=parse_card_number(code))
    token = verify_token(token_of(code), secrets.ring(tenant_id), now=now, tenant_id=tenant_id)
    return CardRef(card_id=token.card_id)


def verify_customer_token(token: str, secrets: Secrets, *, now: datetime) -> tuple[int, int]:
    """(tenant id, card id) of a customer's card token: the token is their only credential."""
    header = peek_token(token)
    verified = verify_token(token, secrets.ring(header.tenant_id), now=now, tenant_id=header.tenant_id)
    return verified.tenant_id, verified.card_id


async def card_number(db: Database, tenant_id: int, ref: CardRef) -> str:
    """The printed number of the referenced card of this tenant (NotFound for anyone else's)."""
    if ref.number is not None:
        return ref.number
    async with db.read() as s:
        number = await s.scalar(
            select(Card.number).where(Card.tenant_id == tenant_id, Card.id == ref.card_id)
        )
    if number is None:
        raise NotFound("card not found")
    return number


async def card_member(db: Database, tenant_id: int, card_id: int) -> int:
    """The member holding an active card (a customer opening their card's page)."""
    async with db.read() as s:
        row = (
            await s.execute(
                select(Card.state, Card.member_id).where(Card.tenant_id == tenant_id, Card.id == card_id)
            )
        ).first()
    if row is None:
        raise NotFound("card not found")
    state, member_id = row
    if state == "blocked":
        raise NotAllowed("this card is blocked")
    if member_id is None:
        raise NotFound("this card has not been activated yet: use it once at a till")
    return int(member_id)


async def _at_outlet(
    db: Database,
    row: type[Transaction] | type[Redemption],
    tenant_id: int,
    row_id: int,
    outlet_id: int | None,
) -> None:
    """NotFound unless the row (a purchase, a redemption) was made at ``outlet_id``: a cashier acts
    only for their outlet, and another outlet's rows are as unknown as another tenant's."""
    async with db.read() as s:
        found = await s.scalar(
            select(row.id).where(row.tenant_id == tenant_id, row.id == row_id, row.outlet_id == outlet_id)
        )
    if found is None:
        raise NotFound(f"no {row.__tablename__.removesuffix('s')} {row_id} at this outlet")


async def transaction_at_outlet(
    db: Database, tenant_id: int, transaction_id: int, outlet_id: int | None
) -> None:
    """NotFound unless the purchase was booked at ``outlet_id``."""
    await _at_outlet(db, Transaction, tenant_id, transaction_id, outlet_id)


async def redemption_at_outlet(
    db: Database, tenant_id: int, redemption_id: int, outlet_id: int | None
) -> None:
    """NotFound unless the redemption was made at ``outlet_id``."""
    await _at_outlet(db, Redemption, tenant_id, redemption_id, outlet_id)


async def card_ids(db: Database, tenant_id: int, numbers: list[str]) -> dict[str, int]:
    """Printed number -> card id, for signing the tokens printed on those cards."""
    async with db.read() as s:
        rows = await s.execute(
            select(Card.number, Card.id).where(Card.tenant_id == tenant_id, Card.number.in_(numbers))
        )
        return {number: int(card_id) for number, card_id in rows}


@dataclass(frozen=True, slots=True)
class Scan:
    """What a till sees after a scan: the card and, once it is in use, its member and balance."""

    card: members.CardView
    member: members.MemberView | None
    balance: balances.Balance | None


async def scan(db: Database, tenant_id: int, ref: CardRef, *, now: datetime) -> Scan:
    """Card, member and balance in one read transaction (a scan is the till's most frequent call)."""
    by = Card.number == ref.number if ref.number is not None else Card.id == ref.card_id
    async with db.read() as s:
        card = await s.scalar(select(Card).where(Card.tenant_id == tenant_id, by))
        if card is None:
            raise NotFound("card not found")
        view = members.CardView(card.number, card.state, card.member_id, card.outlet_id)
        if card.member_id is None:
            return Scan(view, None, None)
        member = await s.scalar(
            select(Member).where(Member.tenant_id == tenant_id, Member.id == card.member_id)
        )
        assert member is not None  # the foreign key guarantees it
        return Scan(
            view, members.member_view(member), await balances.balance_of(s, tenant_id, member, now=now)
        )
