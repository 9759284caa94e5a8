"""Reports for operators and partners: liability, monthly movements, per-partner settlement.

Months are calendar months in the program's time zone; the boundaries are computed here and passed
to the database, so both databases give the same answer without time-zone support in SQL.

Every read of the big tables carries a range of its partition key (``ledger_entries.created_at``,
``transactions.occurred_at``), so on PostgreSQL only the months asked for are read
(:mod:`loyalty.storage.partitions`; tests/storage/test_partitions.py holds them to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from loyalty import ledger
from loyalty.calendar import add_months, local_month, month_start
from loyalty.errors import InvalidInput
from loyalty.programs import versions
from loyalty.storage.db import Database
from loyalty.storage.models import LedgerEntry, Member, Outlet, Partner, Redemption, Transaction

#: Longest period one movements report covers.
MAX_MONTHS = 36


@dataclass(frozen=True, slots=True)
class Liability:
    """Points the program owes: available and pending, less what members owe back."""

    members: int
    available: int
    pending: int
    debt: int
    net: int


async def liability(db: Database, tenant_id: int) -> Liability:
    async with db.read() as s:
        row = (
            await s.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(Member.available), 0),
                    func.coalesce(func.sum(Member.pending), 0),
                    func.coalesce(func.sum(Member.debt), 0),
                ).where(Member.tenant_id == tenant_id)
            )
        ).one()
    members, available, pending, debt = (int(x) for x in row)
    return Liability(members, available, pending, debt, available + pending - debt)


@dataclass(frozen=True, slots=True)
class MonthMovements:
    month: str
    issued: int
    reversed: int
    redeemed: int
    expired: int
    adjusted: int


async def movements(
    db: Database, tenant_id: int, *, since: datetime, months: int, now: datetime
) -> list[MonthMovements]:
    """Per month from the month of ``since``: points issued, reversed by refunds, redeemed (net of
    cancellations), expired, and adjusted (net)."""
    if not 1 <= months <= MAX_MONTHS:
        raise InvalidInput(f"months must be 1 to {MAX_MONTHS}")
    out = []
    async with db.read() as s:
        zone = (await versions.version_at(s, tenant_id, now)).program.zone
        year, month = local_month(since, zone)
        for i in range(months):
            y, m = add_months(year, month, i)
            start, end = month_start(y, m, zone), month_start(*add_months(y, m, 1), zone)
            rows = (
                await s.execute(
                    select(LedgerEntry.cause, LedgerEntry.account, func.sum(LedgerEntry.amount))
                    .where(
                        LedgerEntry.tenant_id == tenant_id,
                        LedgerEntry.created_at >= start,
                        LedgerEntry.created_at < end,
                        LedgerEntry.account.in_(
                            (ledger.ISSUED, ledger.REDEEMED, ledger.EXPIRED, ledger.ADJUSTED)
                        ),
                    )
                    .group_by(LedgerEntry.cause, LedgerEntry.account)
                )
            ).all()
            sums = {(cause, account): int(total) for cause, account, total in rows}
            out.append(
                MonthMovements(
                    f"{y:04d}-{m:02d}",
                    issued=-sums.get(("earn", ledger.ISSUED), 0),
                    reversed=sums.get(("refund", ledger.ISSUED), 0),
                    redeemed=sums.get(("redemption", ledger.REDEEMED), 0)
                    + sums.get(("redemption_cancel", ledger.REDEEMED), 0),
                    expired=sums.get(("expiry", ledger.EXPIRED), 0),
                    adjusted=-sums.get(("adjustment", ledger.ADJUSTED), 0),
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class PartnerSettlement:
    partner: str
    transactions: int
    #: Net of refunds, in minor units of the program's currency.
    spend: int
    points_issued: int
    points_redeemed: int


async def settlement(
    db: Database, tenant_id: int, *, since: datetime, until: datetime
) -> list[PartnerSettlement]:
    """Per partner, for purchases and redemptions in ``[since, until)``: what its outlets sold, the
    points those sales earned (net of refunds), and the points members redeemed there."""
    async with db.read() as s:
        sales = {
            r[0]: r[1:]
            for r in (
                await s.execute(
                    select(
                        Partner.code,
                        func.count(Transaction.id),
                        func.coalesce(func.sum(Transaction.amount - Transaction.amount_refunded), 0),
                        func.coalesce(func.sum(Transaction.points - Transaction.points_refunded), 0),
                    )
                    .join(Outlet, Outlet.partner_id == Partner.id)
                    .join(Transaction, Transaction.outlet_id == Outlet.id)
                    .where(
                        Partner.tenant_id == tenant_id,
                        Transaction.tenant_id == tenant_id,
                        Transaction.occurred_at >= since,
                        Transaction.occurred_at < until,
                    )
                    .group_by(Partner.code)
                )
            ).all()
        }
        redeemed = dict(
            (
                await s.execute(
                    select(Partner.code, func.coalesce(func.sum(Redemption.cost), 0))
                    .join(Outlet, Outlet.partner_id == Partner.id)
                    .join(Redemption, Redemption.outlet_id == Outlet.id)
                    .where(
                        Partner.tenant_id == tenant_id,
                        Redemption.tenant_id == tenant_id,
                        Redemption.status == "active",
                        Redemption.created_at >= since,
                        Redemption.created_at < until,
                    )
                    .group_by(Partner.code)
                )
            ).all()
        )
        codes = (
            await s.scalars(select(Partner.code).where(Partner.tenant_id == tenant_id).order_by(Partner.code))
        ).all()
    return [
        PartnerSettlement(
            code,
            int(sales.get(code, (0, 0, 0))[0]),
            int(sales.get(code, (0, 0, 0))[1]),
            int(sales.get(code, (0, 0, 0))[2]),
            int(redeemed.get(code, 0)),
        )
        for code in codes
    ]
