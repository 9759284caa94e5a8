"""Basket detail: what a purchase keeps once its item lines are no longer needed, and the retention job.

A purchase's *detail* is what tells what the member bought: each line's SKU, category and tags, and
the engine inputs recorded with the evaluation (the member's tags, segment and visits as the engine saw
them). The books need none of it. What stays is what the ledger, the reports, refunds and the audit
read: every line's index, unit price, quantity, points and refunded quantity, and the evaluation's
totals (total, exact figure, tier and its multiplier, the per-line points, the per-rule figures that
backtests and campaign lift read, stamps and rewards unlocked). Such a purchase can no longer be
evaluated again; ``loyalty audit`` checks it against its recorded points instead
(``transactions.detail_purged_at`` says which).

The same reduction serves erasure (one member's purchases, in the erasure's transaction) and the
retention job (every purchase older than the program's ``privacy.basket_detail_months``, in batches,
each batch its own transaction). Purging is idempotent: purged purchases are skipped.

On PostgreSQL the detail tables are partitioned by month (:mod:`loyalty.storage.partitions`), and
:func:`drop_old_partitions` (``loyalty db retention``) drops whole months of them instead:

* ``transaction_items``: a month goes only when *every* tenant's ``basket_detail_months`` has passed
  it (the longest retention wins; a tenant without the setting keeps detail forever, so then nothing
  goes). Its purchases are purged first, as above, and marked ``lines_dropped`` in their evaluation:
  the audit then checks their points against the recorded per-line points alone. A till can no
  longer return such a purchase by line (its lines are gone); a return window is days, retention
  months.
* ``events``: a month goes once it is older than the events retention (``--events-months``,
  ``LOYALTY_EVENTS_RETENTION_MONTHS``, default 13), and only when every event in it was dispatched
  and every delivery of it delivered: a pending or dead (redeliverable) delivery keeps its month.
  The delivered deliveries and their attempts go with their events.
* ``transactions`` and ``ledger_entries`` are the books: never dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.calendar import window_start
from loyalty.errors import InvalidInput, NotFound
from loyalty.programs import versions
from loyalty.storage import partitions
from loyalty.storage.db import Database
from loyalty.storage.models import Tenant, Transaction, TransactionItem

#: Purchases purged per transaction by the retention job: small enough to hold few locks for a short
#: time beside the tills, large enough that a year of history is a few hundred statements.
BATCH = 500
#: Evaluation keys the books read (reports, refunds, backtest, campaign lift, the audit); everything
#: else (the recorded engine inputs, a stored explanation) is detail. ``stamps`` goes too: a return
#: takes stamps back by evaluating the basket before and after it, which a purged basket cannot
#: support, so a return of a purged purchase reverses its points and leaves stamp cards as they are.
KEPT_KEYS = (
    "version",
    "total",
    "exact",
    "tier",
    "tier_multiplier",
    "tier_points",
    "rules",
    "rewards_unlocked",
    "withheld",
)
#: Of each evaluated line: its position and its points; the SKU goes.
KEPT_ITEM_KEYS = ("index", "exact", "points")
#: Months of events kept by ``loyalty db retention`` unless told otherwise: a year and a month, so a
#: month can still be compared with the same month a year before.
EVENTS_MONTHS = int(os.environ.get("LOYALTY_EVENTS_RETENTION_MONTHS", "13"))
#: Longest events retention accepted (in months); beyond it, keep them forever by not running retention.
MAX_EVENTS_MONTHS = 1200


def reduced(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation as the books need it: the totals and per-line points, no item detail and no
    recorded member inputs."""
    out = {k: evaluation[k] for k in KEPT_KEYS if k in evaluation}
    out["items"] = [{k: item[k] for k in KEPT_ITEM_KEYS if k in item} for item in evaluation.get("items", ())]
    out["detail_purged"] = True
    return out


async def purge(
    session: AsyncSession, tenant_id: int, transaction_ids: Sequence[int], *, now: datetime
) -> int:
    """Reduce these purchases (of this tenant, not purged yet) to what the books need, in the caller's
    transaction; returns how many were purged. Lines keep their unit price, quantity, points and
    refunded quantity, so a till can still return an item by its line."""
    if not transaction_ids:
        return 0
    rows = (
        await session.execute(
            select(Transaction.id, Transaction.evaluation).where(
                Transaction.tenant_id == tenant_id,
                Transaction.id.in_(transaction_ids),
                Transaction.detail_purged_at.is_(None),
            )
        )
    ).all()
    if not rows:
        return 0
    ids = [r[0] for r in rows]
    await session.execute(
        update(TransactionItem)
        .where(TransactionItem.tenant_id == tenant_id, TransactionItem.transaction_id.in_(ids))
        .values(sku="", category="", tags=[])
    )
    # One executemany by id, the tenant carried (the ids were read for this tenant above).
    table = cast(Table, Transaction.__table__)
    await session.execute(
        update(table)
        .where(table.c.tenant_id == tenant_id, table.c.id == bindparam("tx_id"))
        .values(evaluation=bindparam("reduced"), detail_purged_at=now),
        [{"tx_id": tx_id, "reduced": reduced(ev or {})} for tx_id, ev in rows],
    )
    return len(ids)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one retention run did: purchases before ``cutoff`` lost their basket detail."""

    #: None when the program keeps basket detail (nothing was purged).
    months: int | None
    cutoff: datetime | None
    purged: int
    batches: int


async def purge_old_detail(
    db: Database, tenant_id: int, *, now: datetime, batch: int = BATCH
) -> RetentionResult:
    """Purge the basket detail of every purchase that happened more than the program's
    ``privacy.basket_detail_months`` before ``now`` (the program in force at ``now`` decides), in
    batches of ``batch`` purchases, each its own transaction: a run stopped half-way keeps what it
    did, and running it again purges only what is left."""
    if not 1 <= batch <= 10 * BATCH:
        raise InvalidInput(f"a batch holds 1 to {10 * BATCH} purchases")
    program = (await versions.current(db, tenant_id, now)).program
    months = program.document.privacy.basket_detail_months
    if months is None:
        return RetentionResult(None, None, 0, 0)
    cutoff = window_start(now, months, program.zone)
    purged, batches = await _purge_batches(db, tenant_id, None, cutoff, now=now, batch=batch)
    return RetentionResult(months, cutoff, purged, batches)


async def _purge_batches(
    db: Database, tenant_id: int, start: datetime | None, end: datetime, *, now: datetime, batch: int
) -> tuple[int, int]:
    """Purge the tenant's purchases of ``[start, end)`` (from the first when ``start`` is None) not yet
    purged, ``batch`` at a time, each batch its own transaction, in id order; (purged, batches)."""
    purged = batches = 0
    after = 0
    while True:
        async with db.write() as s:
            query = select(Transaction.id).where(
                Transaction.tenant_id == tenant_id,
                Transaction.occurred_at < end,
                Transaction.detail_purged_at.is_(None),
                Transaction.id > after,
            )
            if start is not None:
                query = query.where(Transaction.occurred_at >= start)
            ids = list((await s.scalars(query.order_by(Transaction.id).limit(batch))).all())
            if not ids:
                return purged, batches
            purged += await purge(s, tenant_id, ids, now=now)
        batches += 1
        after = ids[-1]


async def _tenant_ids(db: Database) -> list[int]:
    async with db.read() as s:
        return list((await s.scalars(select(Tenant.id).order_by(Tenant.id))).all())


# --- whole months, on PostgreSQL ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonthFate:
    """What retention did (or, in a dry run, would do) with one month partition of a detail table."""

    table: str
    partition: str
    month: str
    #: ``dropped``, ``detached``, ``would drop`` (a dry run) or ``kept``.
    action: str
    #: Why it goes, or why it stays.
    reason: str
    #: Rows it held (purchases purged first, for items).
    rows: int = 0


async def _items_cutoff(db: Database, now: datetime) -> tuple[datetime | None, str]:
    """The instant before which every tenant's basket detail may go, and why (None: nothing may)."""
    cutoffs = []
    for tenant_id in await _tenant_ids(db):
        try:
            program = (await versions.current(db, tenant_id, now)).program
        except NotFound:
            # No program in force then: keep its detail, unless it has no purchases at all (nothing
            # published yet), whatever other tenants' retention says.
            async with db.read() as s:
                purchased = await s.scalar(
                    select(Transaction.id).where(Transaction.tenant_id == tenant_id).limit(1)
                )
            if purchased is not None:
                return None, f"tenant {tenant_id} has purchases but no program in force"
            continue
        months = program.document.privacy.basket_detail_months
        if months is None:
            return None, f"tenant {tenant_id} keeps basket detail (no privacy.basket_detail_months)"
        cutoffs.append(window_start(now, months, program.zone))
    if not cutoffs:
        return None, "no tenant has a published program"
    return min(
        cutoffs
    ), f"every tenant's basket detail retention has passed it (cutoff {min(cutoffs):%Y-%m-%d})"


_UNFINISHED_EVENTS = """
SELECT EXISTS (SELECT 1 FROM {part} WHERE NOT dispatched)
    OR EXISTS (SELECT 1 FROM webhook_deliveries d JOIN {part} e ON e.id = d.event_id
               WHERE d.state <> 'delivered')"""
_EVENT_DELIVERIES = (
    "DELETE FROM webhook_attempts a USING webhook_deliveries d, {part} e"
    " WHERE a.delivery_id = d.id AND d.event_id = e.id",
    "DELETE FROM webhook_deliveries d USING {part} e WHERE d.event_id = e.id",
)
_UNPURGED = (
    "SELECT count(*) FROM transactions"
    " WHERE occurred_at >= $1 AND occurred_at < $2 AND detail_purged_at IS NULL"
)
_MARK_DROPPED = (
    "UPDATE transactions SET evaluation = evaluation || '{\"lines_dropped\": true}'::jsonb"
    " WHERE occurred_at >= $1 AND occurred_at < $2 AND NOT evaluation ? 'lines_dropped'"
)


async def _purge_range(db: Database, start: datetime, end: datetime, now: datetime) -> int:
    """Purge every purchase of ``[start, end)``, tenant by tenant, in batches; returns how many."""
    purged = 0
    for tenant_id in await _tenant_ids(db):
        purged += (await _purge_batches(db, tenant_id, start, end, now=now, batch=BATCH))[0]
    return purged


async def drop_old_partitions(
    db: Database,
    *,
    now: datetime,
    events_months: int = EVENTS_MONTHS,
    dry_run: bool = False,
    detach_only: bool = False,
) -> list[MonthFate]:
    """Drop (or detach) the month partitions of the detail tables that retention no longer needs (see
    the module docstring); returns the fate of every month past a cutoff. SQLite has no partitions:
    an empty list (its purchases are purged row by row by :func:`purge_old_detail`)."""
    if not 1 <= events_months <= MAX_EVENTS_MONTHS:
        raise InvalidInput(f"the events retention is 1 to {MAX_EVENTS_MONTHS} months")
    if not db.is_postgresql:
        return []
    items_cutoff, items_reason = await _items_cutoff(db, now)
    events_cutoff = window_start(now, events_months, ZoneInfo("UTC"))
    out: list[MonthFate] = []
    async with db.driver_connection() as conn:
        if not await partitions.is_partitioned(conn, "transaction_items"):
            return []
        for part in await partitions.partitions(conn, partitions.DETAIL):
            if part.range is None:
                continue
            start, end = part.range
            month = f"{start:%Y-%m}"
            if part.table == "transaction_items":
                if items_cutoff is None:
                    if end <= now:
                        out.append(MonthFate(part.table, part.name, month, "kept", items_reason))
                    continue
                if end > items_cutoff:
                    continue
                fate = await _drop_items(db, conn, part, now, dry_run, detach_only, items_reason)
            else:
                if end > events_cutoff:
                    continue
                fate = await _drop_events(conn, part, events_months, dry_run, detach_only)
            out.append(fate)
    return out


def _gone(dry_run: bool, detach_only: bool) -> str:
    return "would drop" if dry_run else "detached" if detach_only else "dropped"


async def _drop_items(
    db: Database,
    conn: Any,
    part: partitions.Partition,
    now: datetime,
    dry_run: bool,
    detach_only: bool,
    reason: str,
) -> MonthFate:
    assert part.range is not None
    start, end = part.range
    month = f"{start:%Y-%m}"
    rows = int(await conn.fetchval(f"SELECT count(*) FROM {part.name}"))
    if dry_run:
        return MonthFate(part.table, part.name, month, _gone(dry_run, detach_only), reason, rows)
    await _purge_range(db, start, end, now)
    # Under the partition's lock: a late purchase of that month (an offline till) arriving since the
    # purge keeps the month for the next run rather than losing its lines unmarked.
    done = await partitions.drop(
        conn,
        part,
        detach_only=detach_only,
        guard=(_UNPURGED, start, end),
        before=[(_MARK_DROPPED, start, end)],
    )
    if not done:
        return MonthFate(part.table, part.name, month, "kept", "purchases arrived during the run; run again")
    return MonthFate(part.table, part.name, month, _gone(dry_run, detach_only), reason, rows)


async def _drop_events(
    conn: Any, part: partitions.Partition, months: int, dry_run: bool, detach_only: bool
) -> MonthFate:
    assert part.range is not None
    month = f"{part.range[0]:%Y-%m}"
    rows = int(await conn.fetchval(f"SELECT count(*) FROM {part.name}"))
    if await conn.fetchval(_UNFINISHED_EVENTS.format(part=part.name)):
        return MonthFate(
            part.table, part.name, month, "kept", "events not dispatched, or deliveries pending or dead"
        )
    reason = f"older than the events retention ({months} months)"
    if not dry_run:
        await partitions.drop(
            conn,
            part,
            detach_only=detach_only,
            guard=(_UNFINISHED_EVENTS.format(part=part.name),),
            before=[(sql.format(part=part.name),) for sql in _EVENT_DELIVERIES],
        )
    return MonthFate(part.table, part.name, month, _gone(dry_run, detach_only), reason, rows)
