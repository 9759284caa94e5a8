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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.calendar import window_start
from loyalty.errors import InvalidInput
from loyalty.programs import versions
from loyalty.storage.db import Database
from loyalty.storage.models import Transaction, TransactionItem

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
    # One executemany by primary key (the ids were read for this tenant above).
    await session.execute(
        update(Transaction),
        [{"id": tx_id, "evaluation": reduced(ev or {}), "detail_purged_at": now} for tx_id, ev in rows],
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
    purged = batches = 0
    after = 0
    while True:
        async with db.write() as s:
            ids = list(
                (
                    await s.scalars(
                        select(Transaction.id)
                        .where(
                            Transaction.tenant_id == tenant_id,
                            Transaction.occurred_at < cutoff,
                            Transaction.detail_purged_at.is_(None),
                            Transaction.id > after,
                        )
                        .order_by(Transaction.id)
                        .limit(batch)
                    )
                ).all()
            )
            if not ids:
                break
            purged += await purge(s, tenant_id, ids, now=now)
        batches += 1
        after = ids[-1]
    return RetentionResult(months, cutoff, purged, batches)
