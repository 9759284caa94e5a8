"""Purchases read back: a posting by id or by the till's receipt id, counts, and whether a purchase or
a redemption was made at a given outlet (a cashier acts only for their own).

Posting lives in :mod:`loyalty.points.posting`, returns in :mod:`loyalty.points.refunds`; their entry
points are re-exported here, where callers have always found them.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.errors import NotFound
from loyalty.points.posting import (
    MAX_EXTERNAL_ID,
    AlreadyPosted,
    Posted,
    Posting,
    Receipt,
    post,
    post_transaction,
)
from loyalty.points.refunds import RefundResult, refund
from loyalty.storage.db import Database
from loyalty.storage.models import PointLot, Redemption, Transaction, Voucher

__all__ = [
    "MAX_EXTERNAL_ID",
    "AlreadyPosted",
    "Posted",
    "Posting",
    "Receipt",
    "RefundResult",
    "find_transaction",
    "get_transaction",
    "post",
    "post_transaction",
    "refund",
    "transaction_count",
]


async def _posting(s: AsyncSession, tenant_id: int, transaction_id: int) -> Posting:
    tx = await s.scalar(
        select(Transaction).where(Transaction.tenant_id == tenant_id, Transaction.id == transaction_id)
    )
    if tx is None:
        raise NotFound(f"transaction {transaction_id} not found")
    lot = (
        await s.execute(
            select(PointLot.pending_until, PointLot.expires_at).where(
                PointLot.tenant_id == tenant_id,
                PointLot.member_id == tx.member_id,
                PointLot.transaction_id == tx.id,
            )
        )
    ).first()
    vouchers = (
        await s.scalars(
            select(Voucher.id)
            .where(
                Voucher.tenant_id == tenant_id,
                Voucher.member_id == tx.member_id,
                Voucher.transaction_id == tx.id,
            )
            .order_by(Voucher.id)
        )
    ).all()
    pending_until, expires_at = lot if lot is not None else (tx.occurred_at, None)
    return Posting(
        tx.id,
        tx.member_id,
        tx.outlet_id,
        tx.external_id,
        tx.occurred_at,
        tx.program_version_id,
        tx.amount,
        tx.points,
        pending_until,
        expires_at,
        tuple(vouchers),
        tx.evaluation,
    )


async def get_transaction(db: Database, tenant_id: int, transaction_id: int) -> Posting:
    async with db.read() as s:
        return await _posting(s, tenant_id, transaction_id)


async def find_transaction(db: Database, tenant_id: int, outlet_id: int, external_id: str) -> Posting:
    """A transaction by the till's own id (what a till knows when it processes a return)."""
    async with db.read() as s:
        tx_id = await s.scalar(
            select(Transaction.id).where(
                Transaction.tenant_id == tenant_id,
                Transaction.outlet_id == outlet_id,
                Transaction.external_id == external_id,
            )
        )
        if tx_id is None:
            raise NotFound(f"transaction {external_id!r} not found at outlet {outlet_id}")
        return await _posting(s, tenant_id, tx_id)


async def transaction_count(db: Database, tenant_id: int) -> int:
    async with db.read() as s:
        return int(
            await s.scalar(
                select(func.count()).select_from(Transaction).where(Transaction.tenant_id == tenant_id)
            )
            or 0
        )


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
