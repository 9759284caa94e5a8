"""Batch jobs: pending points become available, lots expire, tiers are re-evaluated.

Each job is idempotent (a second run at the same ``as_of`` finds nothing to do) and safe to run
concurrently with itself, the other jobs and the tills:

* the work is set-based SQL: a lot is touched by one UPDATE over all due lots, ledger entries are one
  INSERT ... SELECT per run (one balanced pair per member), balances one UPDATE ... FROM;
* on PostgreSQL the jobs of a tenant take one transaction-level advisory lock (so two runs never
  overlap), and then lock the affected members' rows in id order before touching lots: every
  member-changing service locks the member row first too, so nobody deadlocks and nobody changes a
  lot between the job reading and writing it;
* on SQLite writers are serialised by the database (``BEGIN IMMEDIATE``).

Expiry only ever takes a lot's ``remaining``: points spent from a lot stay spent, so expiry never
"collapses" a balance. Release and expiry write entries that name the job run as their cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty import ledger, programs, tiers
from loyalty.db import Database
from loyalty.models import JobRun, Member, UTCDateTime

#: First key of the advisory lock the jobs of one tenant share ("LOY" in ASCII).
ADVISORY_LOCK_CLASS = 0x4C4F59


@dataclass(frozen=True, slots=True)
class JobResult:
    run_id: int
    kind: str
    as_of: datetime
    lots: int
    points: int
    members: int


_RELEASE_DUE = "tenant_id = :tenant AND state = 'pending' AND pending_until <= :now"
_EXPIRY_DUE = "tenant_id = :tenant AND state = 'available' AND expires_at <= :now"


def _sql(sql: str) -> Any:
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime()))


async def _start(s: AsyncSession, db: Database, tenant_id: int, kind: str, now: datetime) -> int:
    if db.is_postgresql:
        await s.execute(
            text("SELECT pg_advisory_xact_lock(:cls, CAST(:tenant AS integer))"),
            {"cls": ADVISORY_LOCK_CLASS, "tenant": tenant_id},
        )
    run_id = await s.scalar(
        insert(JobRun)
        .values(tenant_id=tenant_id, kind=kind, as_of=now, lots=0, points=0, members=0)
        .returning(JobRun.id)
    )
    assert run_id is not None
    return int(run_id)


async def _finish(
    s: AsyncSession, run_id: int, kind: str, now: datetime, lots: int, points: int, members: int
) -> JobResult:
    await s.execute(
        update(JobRun).where(JobRun.id == run_id).values(lots=lots, points=points, members=members)
    )
    return JobResult(run_id, kind, now, lots, points, members)


async def _lock_members_with_due_lots(s: AsyncSession, tenant_id: int, due: str, now: datetime) -> None:
    await s.execute(
        _sql(
            f"SELECT id FROM members WHERE tenant_id = :tenant AND id IN "
            f"(SELECT member_id FROM point_lots WHERE {due}) ORDER BY id FOR UPDATE"
        ),
        {"tenant": tenant_id, "now": now},
    )


async def _move_pg(
    s: AsyncSession,
    tenant_id: int,
    run_id: int,
    now: datetime,
    *,
    due: str,
    set_lot: str,
    moved: str,
    cause: str,
    debit: str,
    credit: str,
    balance: str,
) -> tuple[int, int, int]:
    """One statement: update the due lots, aggregate per member, write entries and balances."""
    await _lock_members_with_due_lots(s, tenant_id, due, now)
    row = (
        await s.execute(
            _sql(f"""
        WITH moved AS (
            UPDATE point_lots SET {set_lot} WHERE {due} RETURNING member_id, {moved} AS pts
        ), agg AS (
            SELECT member_id, SUM(pts) AS pts, COUNT(*) AS n FROM moved GROUP BY member_id
        ), entries AS (
            INSERT INTO ledger_entries (tenant_id, member_id, account, amount, cause, ref_id, created_at)
            SELECT :tenant, agg.member_id, acc.account, acc.sign * agg.pts, '{cause}', :run, :now
            FROM agg CROSS JOIN (VALUES ('{debit}', -1), ('{credit}', 1)) AS acc(account, sign)
            WHERE agg.pts > 0
        ), balances AS (
            UPDATE members SET {balance} FROM agg
            WHERE members.tenant_id = :tenant AND members.id = agg.member_id AND agg.pts > 0
        )
        SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(SUM(pts), 0) FROM agg
    """),
            {"tenant": tenant_id, "run": run_id, "now": now},
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


async def _move_sqlite(
    s: AsyncSession,
    tenant_id: int,
    run_id: int,
    now: datetime,
    *,
    due: str,
    set_lot: str,
    cause: str,
    debit: str,
    credit: str,
    balance: str,
) -> tuple[int, int, int]:
    """The same in steps: SQLite has no data-modifying CTEs, and runs one writer at a time anyway."""
    params = {"tenant": tenant_id, "run": run_id, "now": now}
    agg = f"SELECT member_id, SUM(remaining) AS pts, COUNT(*) AS n FROM point_lots WHERE {due} GROUP BY member_id"  # noqa: E501
    row = (
        await s.execute(
            _sql(f"SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(SUM(pts), 0) FROM ({agg})"), params
        )
    ).one()
    if not row[0]:
        return 0, 0, 0
    await s.execute(
        _sql(f"""
        INSERT INTO ledger_entries (tenant_id, member_id, account, amount, cause, ref_id, created_at)
        SELECT :tenant, agg.member_id, acc.account, acc.sign * agg.pts, '{cause}', :run, :now
        FROM ({agg}) AS agg CROSS JOIN (SELECT '{debit}' AS account, -1 AS sign
                                        UNION ALL SELECT '{credit}', 1) AS acc
        WHERE agg.pts > 0"""),
        params,
    )
    await s.execute(
        _sql(f"""
        UPDATE members SET {balance} FROM ({agg}) AS agg
        WHERE members.tenant_id = :tenant AND members.id = agg.member_id AND agg.pts > 0"""),
        params,
    )
    await s.execute(_sql(f"UPDATE point_lots SET {set_lot} WHERE {due}"), params)
    return int(row[0]), int(row[1]), int(row[2])


async def release_pending(db: Database, tenant_id: int, *, now: datetime) -> JobResult:
    """Pending lots whose return window has passed become available; debts are paid from them first."""
    spec = {
        "due": _RELEASE_DUE,
        "set_lot": "state = 'available'",
        "cause": "release",
        "debit": ledger.PENDING,
        "credit": ledger.AVAILABLE,
        "balance": "pending = members.pending - agg.pts, available = members.available + agg.pts",
    }
    async with db.write() as s:
        run_id = await _start(s, db, tenant_id, "release", now)
        if db.is_postgresql:
            members, lots, points = await _move_pg(s, tenant_id, run_id, now, moved="remaining", **spec)
        else:
            members, lots, points = await _move_sqlite(s, tenant_id, run_id, now, **spec)
        # Members in debt are rare: settle them one by one, through the same code as everywhere else.
        indebted = (
            await s.scalars(
                select(Member.id)
                .where(Member.tenant_id == tenant_id, Member.debt > 0, Member.available > 0)
                .order_by(Member.id)
            )
        ).all()
        for member_id in indebted:
            member = await ledger.lock_member(s, tenant_id, member_id)
            await ledger.settle_debt(s, tenant_id, member, cause="release", ref_id=run_id, at=now)
        return await _finish(s, run_id, "release", now, lots, points, members)


async def expire_lots(db: Database, tenant_id: int, *, now: datetime) -> JobResult:
    """Lots past their expiry lose what remains of them; spent points are never touched."""
    spec = {
        "due": _EXPIRY_DUE,
        "set_lot": "expired = remaining, remaining = 0, state = 'expired'",
        "cause": "expiry",
        "debit": ledger.AVAILABLE,
        "credit": ledger.EXPIRED,
        "balance": "available = members.available - agg.pts",
    }
    async with db.write() as s:
        run_id = await _start(s, db, tenant_id, "expiry", now)
        if db.is_postgresql:
            members, lots, points = await _move_pg(s, tenant_id, run_id, now, moved="expired", **spec)
        else:
            members, lots, points = await _move_sqlite(s, tenant_id, run_id, now, **spec)
        return await _finish(s, run_id, "expiry", now, lots, points, members)


async def evaluate_tiers(db: Database, tenant_id: int, *, now: datetime) -> JobResult:
    """Every member's tier set to what the rolling window qualifies them for (downgrades happen here)."""
    async with db.write() as s:
        run_id = await _start(s, db, tenant_id, "tiers", now)
        program = (await programs.version_at(s, tenant_id, now)).program
        changed = await tiers.evaluate_all(s, tenant_id, program, now)
        return await _finish(s, run_id, "tiers", now, 0, 0, changed)


async def run_all(db: Database, tenant_id: int, *, now: datetime) -> list[JobResult]:
    """The nightly sequence: release, then expiry, then tiers."""
    return [
        await release_pending(db, tenant_id, now=now),
        await expire_lots(db, tenant_id, now=now),
        await evaluate_tiers(db, tenant_id, now=now),
    ]
