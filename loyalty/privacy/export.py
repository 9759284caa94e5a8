"""The export of a member's data: everything the engine holds about one member, as one JSON document.

Sections (each a list of rows, oldest first, unless it is one row): the member (tier, balances,
state, segment, consent) with its consent history, cards, purchases with their items and refunds
(with the refunds' items), ledger entries, point lots with their draws, redemptions, vouchers,
stamp cards, tier history, adjustments, customer figures and segment moves, and the events written
for the member with the state of each delivery.

Everything is read in one read transaction (one consistent picture), section by section and page by
page (:data:`PAGE` rows a query, keyset on the id), so no query is unbounded however long the
member's history. Rows are written as their columns, instants as ISO 8601 text; tenant and member
ids are said once at the top, not on every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.errors import NotFound
from loyalty.storage.db import Database
from loyalty.storage.models import (
    Adjustment,
    Card,
    Consent,
    Event,
    LedgerEntry,
    LotDraw,
    Member,
    MemberFigures,
    PointLot,
    Redemption,
    Refund,
    RefundItem,
    SegmentMove,
    StampCard,
    TierChange,
    Transaction,
    TransactionItem,
    Voucher,
    WebhookDelivery,
)

#: Rows read per query.
PAGE = 1_000
#: The version of the document's shape, for whoever reads exports later.
FORMAT = 1
#: Columns never exported: said once at the top (tenant, member), or the server's own bookkeeping.
_SKIPPED = frozenset({"tenant_id", "member_id", "revision"})


def _value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _row(obj: Any, skip: frozenset[str] = _SKIPPED) -> dict[str, Any]:
    return {c.key: _value(getattr(obj, c.key)) for c in obj.__table__.columns if c.key not in skip}


async def _paged(s: AsyncSession, model: Any, *criteria: Any) -> list[Any]:
    """Every row of ``model`` matching ``criteria``, in id order, :data:`PAGE` rows a query."""
    rows: list[Any] = []
    after = 0
    while True:
        page = (
            await s.scalars(select(model).where(*criteria, model.id > after).order_by(model.id).limit(PAGE))
        ).all()
        rows.extend(page)
        if len(page) < PAGE:
            return rows
        after = page[-1].id


def _by(rows: Sequence[Any], key: str) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(getattr(r, key), []).append(_row(r, _SKIPPED | {key}))
    return grouped


async def export(db: Database, tenant_id: int, member_id: int, *, now: datetime) -> dict[str, Any]:
    """The member's document (see the module docstring); NotFound for a member of another tenant."""
    async with db.read() as s:
        return await _document(s, tenant_id, member_id, now)


async def _document(s: AsyncSession, tenant_id: int, member_id: int, now: datetime) -> dict[str, Any]:
    member = await s.scalar(select(Member).where(Member.tenant_id == tenant_id, Member.id == member_id))
    if member is None:
        raise NotFound(f"member {member_id} not found")

    def mine(model: Any) -> tuple[Any, ...]:
        return (model.tenant_id == tenant_id, model.member_id == member_id)

    transactions = await _paged(s, Transaction, *mine(Transaction))
    items = _by(await _paged(s, TransactionItem, *mine(TransactionItem)), "transaction_id")
    refunds = await _paged(s, Refund, *mine(Refund))
    refund_items = _by(await _paged(s, RefundItem, *mine(RefundItem)), "refund_id")
    refunds_of: dict[int, list[dict[str, Any]]] = {}
    for r in refunds:
        refunds_of.setdefault(r.transaction_id, []).append(
            _row(r, _SKIPPED | {"transaction_id"}) | {"items": refund_items.get(r.id, [])}
        )
    lots = await _paged(s, PointLot, *mine(PointLot))
    draws = _by(await _paged(s, LotDraw, *mine(LotDraw)), "lot_id")
    events = await _paged(s, Event, *mine(Event))
    deliveries = _by(await _paged(s, WebhookDelivery, *mine(WebhookDelivery)), "event_id")
    figures = await s.scalar(select(MemberFigures).where(*mine(MemberFigures)))
    return {
        "format": FORMAT,
        "exported_at": now.isoformat(),
        "tenant_id": tenant_id,
        "member_id": member_id,
        "member": _row(member, frozenset({"tenant_id", "revision"})),
        "consents": [_row(r) for r in await _paged(s, Consent, *mine(Consent))],
        "cards": [_row(r) for r in await _paged(s, Card, *mine(Card))],
        "transactions": [
            _row(t) | {"items": items.get(t.id, []), "refunds": refunds_of.get(t.id, [])}
            for t in transactions
        ],
        "ledger_entries": [_row(r) for r in await _paged(s, LedgerEntry, *mine(LedgerEntry))],
        "lots": [_row(lot) | {"draws": draws.get(lot.id, [])} for lot in lots],
        "redemptions": [_row(r) for r in await _paged(s, Redemption, *mine(Redemption))],
        "vouchers": [_row(r) for r in await _paged(s, Voucher, *mine(Voucher))],
        "stamp_cards": [_row(r) for r in await _paged(s, StampCard, *mine(StampCard))],
        "tier_history": [_row(r) for r in await _paged(s, TierChange, *mine(TierChange))],
        "adjustments": [_row(r) for r in await _paged(s, Adjustment, *mine(Adjustment))],
        "figures": None if figures is None else _row(figures),
        "segment_moves": [_row(r) for r in await _paged(s, SegmentMove, *mine(SegmentMove))],
        "events": [_row(e) | {"deliveries": deliveries.get(e.id, [])} for e in events],
    }
