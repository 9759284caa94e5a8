"""Tenants, partners and outlets: the businesses and places that run and take part in a program."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from loyalty.errors import Conflict, InvalidInput, NotFound
from loyalty.storage import audit_log
from loyalty.storage.db import Database
from loyalty.storage.models import Outlet, Partner, Program, Tenant


@dataclass(frozen=True, slots=True)
class TenantView:
    id: int
    code: str
    name: str
    card_prefix: str
    program_id: int


@dataclass(frozen=True, slots=True)
class PartnerView:
    id: int
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class OutletView:
    id: int
    code: str
    name: str
    partner_id: int
    partner_code: str
    tags: tuple[str, ...]


async def create_tenant(
    db: Database, *, code: str, name: str, card_prefix: str, now: datetime, program_name: str | None = None
) -> TenantView:
    """A tenant with its (empty) program; the program gets content through drafts and publishing."""
    if not card_prefix.isdigit() or not 1 <= len(card_prefix) <= 8:
        raise InvalidInput("card_prefix must be 1 to 8 digits")
    try:
        async with db.write() as s:
            tenant_id = await s.scalar(
                insert(Tenant)
                .values(code=code, name=name, card_prefix=card_prefix, created_at=now)
                .returning(Tenant.id)
            )
            assert tenant_id is not None
            program_id = await s.scalar(
                insert(Program)
                .values(tenant_id=tenant_id, name=program_name or name, created_at=now)
                .returning(Program.id)
            )
            assert program_id is not None
    except IntegrityError as exc:
        raise Conflict(f"tenant {code!r} exists") from exc
    return TenantView(tenant_id, code, name, card_prefix, program_id)


async def get_tenant(db: Database, tenant_id: int) -> TenantView:
    async with db.read() as s:
        row = (
            await s.execute(
                select(Tenant.id, Tenant.code, Tenant.name, Tenant.card_prefix, Program.id)
                .join(Program, Program.tenant_id == Tenant.id)
                .where(Tenant.id == tenant_id)
            )
        ).first()
    if row is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return TenantView(*row)


async def list_tenants(db: Database) -> list[TenantView]:
    async with db.read() as s:
        rows = (
            await s.execute(
                select(Tenant.id, Tenant.code, Tenant.name, Tenant.card_prefix, Program.id)
                .join(Program, Program.tenant_id == Tenant.id)
                .order_by(Tenant.code)
            )
        ).all()
    return [TenantView(*row) for row in rows]


async def tenant_by_code(db: Database, code: str) -> TenantView:
    async with db.read() as s:
        tenant_id = await s.scalar(select(Tenant.id).where(Tenant.code == code))
    if tenant_id is None:
        raise NotFound(f"tenant {code!r} not found")
    return await get_tenant(db, tenant_id)


async def create_partner(
    db: Database, tenant_id: int, *, code: str, name: str, actor: str, now: datetime
) -> PartnerView:
    try:
        async with db.write() as s:
            partner_id = await s.scalar(
                insert(Partner).values(tenant_id=tenant_id, code=code, name=name).returning(Partner.id)
            )
            await audit_log.record(
                s,
                tenant_id,
                actor=actor,
                action="create",
                entity="partner",
                entity_id=partner_id,
                at=now,
                details={"code": code, "name": name},
            )
    except IntegrityError as exc:
        raise Conflict(f"partner {code!r} exists") from exc
    assert partner_id is not None
    return PartnerView(partner_id, code, name)


async def list_partners(db: Database, tenant_id: int) -> list[PartnerView]:
    async with db.read() as s:
        rows = await s.execute(
            select(Partner.id, Partner.code, Partner.name)
            .where(Partner.tenant_id == tenant_id)
            .order_by(Partner.code)
        )
        return [PartnerView(int(i), code, name) for i, code, name in rows]


async def create_outlet(
    db: Database,
    tenant_id: int,
    *,
    partner_id: int,
    code: str,
    name: str,
    actor: str,
    now: datetime,
    tags: Sequence[str] = (),
) -> OutletView:
    try:
        async with db.write() as s:
            partner_code = await s.scalar(
                select(Partner.code).where(Partner.tenant_id == tenant_id, Partner.id == partner_id)
            )
            if partner_code is None:
                raise NotFound(f"partner {partner_id} not found")
            outlet_id = await s.scalar(
                insert(Outlet)
                .values(tenant_id=tenant_id, partner_id=partner_id, code=code, name=name, tags=list(tags))
                .returning(Outlet.id)
            )
            await audit_log.record(
                s,
                tenant_id,
                actor=actor,
                action="create",
                entity="outlet",
                entity_id=outlet_id,
                at=now,
                details={"code": code, "partner": partner_code},
            )
    except IntegrityError as exc:
        raise Conflict(f"outlet {code!r} exists") from exc
    assert outlet_id is not None
    return OutletView(outlet_id, code, name, partner_id, partner_code, tuple(tags))


def _outlet_query(tenant_id: int):  # type: ignore[no-untyped-def]
    return (
        select(Outlet.id, Outlet.code, Outlet.name, Outlet.partner_id, Partner.code, Outlet.tags)
        .join(Partner, Partner.id == Outlet.partner_id)
        .where(Outlet.tenant_id == tenant_id)
    )


async def get_outlet(db: Database, tenant_id: int, outlet_id: int) -> OutletView:
    async with db.read() as s:
        row = (await s.execute(_outlet_query(tenant_id).where(Outlet.id == outlet_id))).first()
    if row is None:
        raise NotFound(f"outlet {outlet_id} not found")
    return OutletView(row[0], row[1], row[2], row[3], row[4], tuple(row[5]))


async def list_outlets(db: Database, tenant_id: int) -> list[OutletView]:
    async with db.read() as s:
        rows = (await s.execute(_outlet_query(tenant_id).order_by(Outlet.code))).all()
    return [OutletView(r[0], r[1], r[2], r[3], r[4], tuple(r[5])) for r in rows]
