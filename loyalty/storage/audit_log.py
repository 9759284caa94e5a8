"""The audit log of changes made by marketers and admins (program edits, adjustments, outlets...)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.storage.db import Database
from loyalty.storage.models import AuditEntry

#: Most entries one page of the audit log returns.
MAX_PAGE = 200


async def record(session: AsyncSession, tenant_id: int, **entry: Any) -> None:
    """Append one entry (the fields of :func:`row`), in the caller's transaction: the change and its
    record commit together."""
    await session.execute(insert(AuditEntry).values(row(tenant_id, **entry)))


def row(
    tenant_id: int,
    *,
    actor: str,
    action: str,
    entity: str,
    entity_id: object,
    at: datetime,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The same entry as a row, for a ledger booking to write together with its change."""
    return {
        "tenant_id": tenant_id,
        "actor": actor,
        "action": action,
        "entity": entity,
        "entity_id": str(entity_id),
        "details": details or {},
        "at": at,
    }


@dataclass(frozen=True, slots=True)
class AuditView:
    id: int
    actor: str
    action: str
    entity: str
    entity_id: str
    details: dict[str, Any]
    at: datetime


async def entries(
    db: Database, tenant_id: int, *, limit: int = 50, before: int | None = None
) -> list[AuditView]:
    """The newest entries first; pass the last id as ``before`` for the next page."""
    query = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    query = query.order_by(AuditEntry.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
    async with db.read() as session:
        rows = (await session.scalars(query)).all()
    return [AuditView(r.id, r.actor, r.action, r.entity, r.entity_id, r.details, r.at) for r in rows]
