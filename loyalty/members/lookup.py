"""From what a till scanned or a cashier typed (a card URL, a bare token, a card number) to a card.

Tokens are verified against the tenant's key ring, derived from server secrets, before anything is
looked up; a mistyped number fails its check digit before anything is looked up.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select

from loyalty.cards.numbers import parse_card_number
from loyalty.cards.secrets import Secrets
from loyalty.cards.tokens import peek_token, verify_token
from loyalty.errors import NotFound
from loyalty.members.membership import CardRef
from loyalty.storage.db import Database
from loyalty.storage.models import Card

_TYPED = re.compile(r"^[\d\s\-]+$")


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


async def number_of(db: Database, tenant_id: int, ref: CardRef) -> str:
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


async def card_ids(db: Database, tenant_id: int, numbers: list[str]) -> dict[str, int]:
    """Printed number -> card id, for signing the tokens printed on those cards."""
    async with db.read() as s:
        rows = await s.execute(
            select(Card.number, Card.id).where(Card.tenant_id == tenant_id, Card.number.in_(numbers))
        )
        return {number: int(card_id) for number, card_id in rows}
