"""Batch jobs: pending points become available, lots expire, tiers are re-evaluated, members are
reminded of points about to expire.

Each job is one locked unit of work of the ledger (:mod:`loyalty.ledger.sweeps` does the set-based
work), is idempotent (a second run at the same ``as_of`` finds nothing to do) and is safe to run
concurrently with itself, the other jobs and the tills. Release and expiry write entries that name
the job run as their cause; every run is recorded in ``job_runs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from loyalty.events import reminders
from loyalty.ledger import run, sweeps
from loyalty.ledger.store import Unit
from loyalty.programs import versions
from loyalty.storage import partitions
from loyalty.storage.db import Database

#: First key of the advisory lock the jobs of one tenant share (kept here for callers).
ADVISORY_LOCK_CLASS = sweeps.ADVISORY_LOCK_CLASS


@dataclass(frozen=True, slots=True)
class JobResult:
    run_id: int
    kind: str
    as_of: datetime
    lots: int
    points: int
    members: int
    #: Month partitions created (the ``partitions`` job only).
    partitions: int = 0


async def _job(
    kind: str,
    work: Callable[[Unit, int, int, datetime], Awaitable[sweeps.Swept]],
    tenant_id: int,
    now: datetime,
    unit: Unit,
) -> JobResult:
    await sweeps.lock_tenant(unit, tenant_id)
    run_id = await unit.fetchval(
        "INSERT INTO job_runs (tenant_id, kind, as_of, lots, points, members)"
        " VALUES ($1, $2, $3, 0, 0, 0) RETURNING id",
        tenant_id,
        kind,
        now,
    )
    swept = await work(unit, tenant_id, int(run_id), now)
    await unit.execute(
        "UPDATE job_runs SET lots = $1, points = $2, members = $3 WHERE tenant_id = $4 AND id = $5",
        swept.lots,
        swept.points,
        swept.members,
        tenant_id,
        run_id,
    )
    return JobResult(int(run_id), kind, now, swept.lots, swept.points, swept.members)


async def _tiers(unit: Unit, tenant_id: int, run_id: int, now: datetime) -> sweeps.Swept:
    _, program = await versions.in_force(unit, tenant_id, now)
    return sweeps.Swept(await sweeps.evaluate_tiers(unit, tenant_id, now, program), 0, 0)


async def release_pending(db: Database, tenant_id: int, *, now: datetime) -> JobResult:
    """Pending lots whose return window has passed become available; debts are paid from them first."""
    result: JobResult = await run(db, partial(_job, "release", sweeps.release, tenant_id, now))
    return result


async def expire_lots(db: Database, tenant_id: int, *, now: datetime) -> JobResult:
    """Lots past their expiry lose what remains of them; spent points are never touched."""
    result: JobResult = await run(db, partial(_job, "expiry", sweeps.expire, tenant_id, now))
    return result


async def evaluate_tiers(db: Database, tenant_id: int, *, now: datetime) -> JobResult:
    """Every member's tier set to what the rolling window qualifies them for (downgrades happen here)."""
    result: JobResult = await run(db, partial(_job, "tiers", _tiers, tenant_id, now))
    return result


async def remind_expiring(db: Database, tenant_id: int, *, now: datetime) -> JobResult:
    """``points.expiring`` events for consenting members whose points expire within the program's
    reminder days (:mod:`loyalty.events.reminders`). It writes no ledger entries, so it has no run
    in ``job_runs``: its ``run_id`` is 0."""
    done = await reminders.remind_expiring(db, tenant_id, now=now)
    return JobResult(0, "reminders", now, done.lots, done.points, done.members)


async def ensure_partitions(db: Database, tenant_id: int, *, now: datetime) -> JobResult:
    """Month partitions ahead of ``now`` (PostgreSQL; :mod:`loyalty.storage.partitions`): every
    table's, not only this tenant's, and a no-op when they exist. Its ``run_id`` is 0."""
    created = 0
    if db.is_postgresql:
        async with db.driver_connection() as conn:
            if await partitions.is_partitioned(conn):
                created = len((await partitions.ensure(conn, now=now)).created)
    return JobResult(0, "partitions", now, 0, 0, 0, created)


async def run_all(db: Database, tenant_id: int, *, now: datetime) -> list[JobResult]:
    """The nightly sequence: release, expiry, tiers, expiry reminders, then month partitions ahead
    (last: its DDL may wait for a lock and fail, and the points jobs must not wait on it)."""
    return [
        await release_pending(db, tenant_id, now=now),
        await expire_lots(db, tenant_id, now=now),
        await evaluate_tiers(db, tenant_id, now=now),
        await remind_expiring(db, tenant_id, now=now),
        await ensure_partitions(db, tenant_id, now=now),
    ]
