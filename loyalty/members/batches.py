"""Card batches: blank cards ordered for an outlet, and the printable sheet of them.

Each card's QR holds ``{public base URL}/c/{token}`` with a token signed for that card, so the same
code opens the customer's page on a phone and identifies the card at a till. A batch can be
printed again at any time: tokens are signed with the tenant's current key when the sheet is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from loyalty.cards.qr import card_url
from loyalty.cards.secrets import Secrets
from loyalty.cards.sheet import SheetCard, render_sheet
from loyalty.cards.tokens import sign_token
from loyalty.errors import NotFound
from loyalty.members import membership
from loyalty.programs import versions
from loyalty.storage.db import Database
from loyalty.storage.models import Card, CardBatch, Outlet

#: Where card QR codes point when the program document names no ``public_base_url``.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class BatchView:
    id: int
    outlet_id: int | None
    first_serial: int
    count: int
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class PrintedCard:
    number: str
    card_id: int
    url: str


def _view(b: CardBatch) -> BatchView:
    return BatchView(b.id, b.outlet_id, b.first_serial, b.count, b.created_at, b.created_by)


async def order_batch(
    db: Database, tenant_id: int, count: int, *, actor: str, now: datetime, outlet_id: int | None = None
) -> BatchView:
    """Issue ``count`` blank cards (for ``outlet_id``) and record them as one batch."""
    if outlet_id is not None:
        async with db.read() as s:
            if (
                await s.scalar(select(Outlet.id).where(Outlet.tenant_id == tenant_id, Outlet.id == outlet_id))
                is None
            ):
                raise NotFound(f"outlet {outlet_id} not found")
    numbers = await membership.issue_cards(db, tenant_id, count, actor=actor, now=now, outlet_id=outlet_id)
    async with db.read() as s:
        first = await s.scalar(
            select(Card.serial).where(Card.tenant_id == tenant_id, Card.number == numbers[0])
        )
        batch = await s.scalar(
            select(CardBatch).where(CardBatch.tenant_id == tenant_id, CardBatch.first_serial == first)
        )
    assert batch is not None  # written in the same transaction as the cards
    return _view(batch)


async def list_batches(db: Database, tenant_id: int) -> list[BatchView]:
    async with db.read() as s:
        rows = await s.scalars(
            select(CardBatch).where(CardBatch.tenant_id == tenant_id).order_by(CardBatch.id)
        )
        return [_view(b) for b in rows]


async def batch_cards(
    db: Database, secrets: Secrets, tenant_id: int, batch_id: int, *, now: datetime
) -> tuple[str, list[PrintedCard]]:
    """The program's name and every card of the batch with the URL its QR holds."""
    async with db.read() as s:
        batch = await s.scalar(
            select(CardBatch).where(CardBatch.tenant_id == tenant_id, CardBatch.id == batch_id)
        )
        if batch is None:
            raise NotFound(f"card batch {batch_id} not found")
        rows = (
            await s.execute(
                select(Card.number, Card.id)
                .where(
                    Card.tenant_id == tenant_id,
                    Card.serial >= batch.first_serial,
                    Card.serial < batch.first_serial + batch.count,
                )
                .order_by(Card.serial)
            )
        ).all()
        program = (await versions.version_at(s, tenant_id, now)).program
    base = program.document.public_base_url or os.environ.get("LOYALTY_PUBLIC_URL") or DEFAULT_PUBLIC_URL
    ring = secrets.ring(tenant_id)
    printed = [
        PrintedCard(number, card_id, card_url(base, sign_token(ring, card_id, now=now)))
        for number, card_id in rows
    ]
    return program.document.program, printed


async def batch_pdf(db: Database, secrets: Secrets, tenant_id: int, batch_id: int, *, now: datetime) -> bytes:
    """The printable A4 sheet of a batch: program name, QR, grouped number and cut marks per card."""
    name, cards = await batch_cards(db, secrets, tenant_id, batch_id, now=now)
    return render_sheet(
        [SheetCard(c.number, c.url) for c in cards], program_name=name, label=f"batch {batch_id}"
    )
