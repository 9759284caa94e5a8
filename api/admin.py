"""Admin endpoints: partners, outlets, API keys, members and cards, jobs, reports."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter, QueryParameter

from api import schemas
from api.auth import requires
from api.context import Caller, CardKeys, Db, Now, actor
from loyalty.admin import access, tenants
from loyalty.calendar import add_months, local_month, month_start
from loyalty.members import batches, membership
from loyalty.ops import audit as ledger_audit
from loyalty.ops import jobs, reports
from loyalty.points import adjustments, balances
from loyalty.programs import versions


class AdminController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    guards = [requires("admin")]

    # -- partners and outlets ---------------------------------------------------------------------

    @post("/partners", operation_id="createPartner", status_code=201)
    async def create_partner(
        self, principal: Caller, db: Db, now: Now, data: JSONBody[schemas.PartnerCreate]
    ) -> tenants.PartnerView:
        return await tenants.create_partner(
            db,
            principal.tenant_id,
            code=data.code,
            name=data.name,
            actor=actor(principal),
            now=now,
        )

    @post("/outlets", operation_id="createOutlet", status_code=201)
    async def create_outlet(
        self, principal: Caller, db: Db, now: Now, data: JSONBody[schemas.OutletCreate]
    ) -> tenants.OutletView:
        return await tenants.create_outlet(
            db,
            principal.tenant_id,
            partner_id=data.partner_id,
            code=data.code,
            name=data.name,
            actor=actor(principal),
            now=now,
            tags=data.tags,
        )

    @get("/outlets", operation_id="listOutlets")
    async def list_outlets(self, principal: Caller, db: Db) -> list[tenants.OutletView]:
        return await tenants.list_outlets(db, principal.tenant_id)

    # -- API keys -----------------------------------------------------------------------------------

    @post("/keys", operation_id="createApiKey", status_code=201)
    async def create_key(
        self, principal: Caller, db: Db, now: Now, data: JSONBody[schemas.KeyCreate]
    ) -> access.NewKey:
        """Create a key; the response holds its secret, shown this once and stored only as a hash."""
        return await access.create_key(
            db,
            principal.tenant_id,
            role=data.role,
            name=data.name,
            actor=actor(principal),
            now=now,
            outlet_id=data.outlet_id,
        )

    @get("/keys", operation_id="listApiKeys")
    async def list_keys(self, principal: Caller, db: Db) -> list[access.KeyInfo]:
        return await access.list_keys(db, principal.tenant_id)

    @post("/keys/{key_id:int}/revocation", operation_id="revokeApiKey", status_code=200)
    async def revoke_key(
        self, principal: Caller, db: Db, now: Now, key_id: schemas.PathId, request: Request[Any, Any, Any]
    ) -> access.KeyInfo:
        """Revoke a key: refused at once by this worker; by every worker within a second when they share
        Redis, else within the key cache's five seconds."""
        revoked = await access.revoke_key(db, principal.tenant_id, key_id, now=now)
        await request.app.state.authenticate.forget(key_id)
        return revoked

    # -- members and cards ----------------------------------------------------------------------------

    @get("/members/{member_id:int}", operation_id="getMember")
    async def member(self, principal: Caller, db: Db, now: Now, member_id: schemas.PathId) -> dict[str, Any]:
        return {
            "member": await membership.get_member(db, principal.tenant_id, member_id),
            "balance": await balances.balance(db, principal.tenant_id, member_id, now=now),
        }

    @get("/cards/{number:str}", operation_id="getCard")
    async def card(
        self, principal: Caller, db: Db, number: Annotated[str, PathParameter(max_length=40)]
    ) -> membership.CardView:
        """Find a card (and so its member) by its printed number."""
        return await membership.get_card(db, principal.tenant_id, number)

    @post("/cards/{number:str}/block", operation_id="blockCard", status_code=200)
    async def block(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        number: Annotated[str, PathParameter(max_length=40)],
    ) -> membership.CardView:
        return await membership.block_card(db, principal.tenant_id, number, actor=actor(principal), now=now)

    @post("/members/{member_id:int}/adjustments", operation_id="adjustPoints", status_code=201)
    async def adjust(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        member_id: schemas.PathId,
        data: JSONBody[schemas.AdjustmentCreate],
    ) -> adjustments.AdjustmentResult:
        """Add or remove points by hand, with a reason; recorded with the key that did it."""
        return await adjustments.adjust(
            db,
            principal.tenant_id,
            member_id,
            data.points,
            reason=data.reason,
            actor=actor(principal),
            now=now,
        )

    # -- jobs and reports -----------------------------------------------------------------------------

    @post("/jobs/{kind:str}", operation_id="runJob", status_code=200)
    async def run_job(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        kind: FromPath[Literal["pending", "expiry", "tiers", "reminders", "all"]],
    ) -> list[jobs.JobResult]:
        """Run a job now: pending points become available, lots expire, tiers are re-evaluated,
        members are reminded of points about to expire (``all``: the four in that order)."""
        db, now, tenant = db, now, principal.tenant_id
        if kind == "pending":
            return [await jobs.release_pending(db, tenant, now=now)]
        if kind == "expiry":
            return [await jobs.expire_lots(db, tenant, now=now)]
        if kind == "tiers":
            return [await jobs.evaluate_tiers(db, tenant, now=now)]
        if kind == "reminders":
            return [await jobs.remind_expiring(db, tenant, now=now)]
        return await jobs.run_all(db, tenant, now=now)

    @get("/audit", operation_id="auditLedger")
    async def audit(self, principal: Caller, db: Db) -> ledger_audit.AuditReport:
        """Re-derive every balance from its entries and every purchase from its recorded version:
        ``ok`` is true when nothing differs; ``findings`` lists each check that failed."""
        return await ledger_audit.audit(db, principal.tenant_id)

    @get("/reports/liability", operation_id="reportLiability")
    async def liability(self, principal: Caller, db: Db) -> reports.Liability:
        return await reports.liability(db, principal.tenant_id)

    @get("/reports/monthly", operation_id="reportMonthly")
    async def monthly(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        months: Annotated[int, QueryParameter(ge=1, le=reports.MAX_MONTHS)] = 12,
    ) -> list[reports.MonthMovements]:
        """Points issued, reversed, redeemed, expired and adjusted per month, the last ``months`` months."""
        zone = (await versions.current(db, principal.tenant_id, now)).program.zone
        year, month = add_months(*local_month(now, zone), -(months - 1))
        return await reports.movements(
            db, principal.tenant_id, since=month_start(year, month, zone), months=months, now=now
        )

    @get("/reports/partners", operation_id="reportPartners")
    async def partners(
        self, principal: Caller, db: Db, since: FromQuery[datetime], until: FromQuery[datetime]
    ) -> list[reports.PartnerSettlement]:
        """Per-partner settlement: sales, points issued there and rewards redeemed there."""
        start, end = schemas.period(since, until)
        return await reports.settlement(db, principal.tenant_id, since=start, until=end)


class CardBatchController(Controller):
    """Blank cards for outlets, and their printable sheets."""

    path = "/v1/admin/card-batches"
    tags = ["admin"]
    guards = [requires("admin")]

    @post("/", operation_id="orderCardBatch", status_code=201)
    async def order(
        self, principal: Caller, db: Db, now: Now, data: JSONBody[schemas.CardBatchCreate]
    ) -> batches.BatchView:
        """Issue N blank cards (for an outlet); print them from /v1/admin/card-batches/{id}/sheet."""
        return await batches.order_batch(
            db,
            principal.tenant_id,
            data.count,
            actor=actor(principal),
            now=now,
            outlet_id=data.outlet_id,
        )

    @get("/", operation_id="listCardBatches")
    async def list_batches(self, principal: Caller, db: Db) -> list[batches.BatchView]:
        return await batches.list_batches(db, principal.tenant_id)

    @get("/{batch_id:int}/sheet", operation_id="cardBatchSheet", media_type="application/pdf")
    async def sheet(
        self, principal: Caller, db: Db, now: Now, secrets: CardKeys, batch_id: schemas.PathId
    ) -> Response[bytes]:
        """The A4 PDF of the batch: a grid of cards with program name, QR, number and cut marks."""
        pdf = await batches.batch_pdf(db, secrets, principal.tenant_id, batch_id, now=now)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="cards-batch-{batch_id}.pdf"'},
        )
