"""Manual corrections by an admin: always with a reason and the actor, and in the audit log.

A positive adjustment is a new lot (available at once, expiring by the policy in force) and pays
debt first like any other points. A negative one takes available points, nearest expiry first; it
never creates debt (debt comes only from refunds of points already spent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

from loyalty.calendar import expiry_for
from loyalty.errors import InsufficientPoints, InvalidInput
from loyalty.ledger import ADJUSTED, Booking, reads, run
from loyalty.ledger.store import Unit
from loyalty.programs import versions
from loyalty.storage import audit_log, outbox
from loyalty.storage.db import Database

#: Largest single adjustment: a typo guard, far above any goodwill gesture.
MAX_ADJUSTMENT = 10_000_000


@dataclass(frozen=True, slots=True)
class AdjustmentResult:
    adjustment_id: int
    member_id: int
    points: int
    available_after: int
    debt_after: int


async def _adjust_unit(
    tenant_id: int, member_id: int, points: int, reason: str, actor: str, now: datetime, unit: Unit
) -> AdjustmentResult:
    member = await reads.member(unit, tenant_id, member_id)
    holder = member.holder
    if points < 0 and holder.available < -points:
        raise InsufficientPoints(
            f"cannot take {-points} points; {holder.available} available",
            available=holder.available,
            cost=-points,
        )
    adjustment_id = (await unit.next_ids("adjustments", 1))[0]
    booking = Booking(tenant_id, now)
    booking.insert(
        "adjustments",
        {
            "id": adjustment_id,
            "tenant_id": tenant_id,
            "member_id": member_id,
            "points": points,
            "reason": reason,
            "actor": actor,
            "created_at": now,
        },
    )
    lots = await reads.available_lots(unit, tenant_id, member_id)
    if points > 0:
        _, program = await versions.in_force(unit, tenant_id, now)
        lot_id = (await unit.next_ids("point_lots", 1))[0]
        lots.append(
            booking.issue_lot(
                holder,
                lot_id,
                points,
                state="available",
                counter=ADJUSTED,
                cause="adjustment",
                ref_id=adjustment_id,
                pending_until=now,
                expires_at=expiry_for(now, program.document.points.expire_after_months, program.zone),
                adjustment_id=adjustment_id,
            )
        )
        booking.settle_debt(holder, lots, cause="adjustment", ref_id=adjustment_id)
    else:
        booking.draw(holder, lots, -points, counter=ADJUSTED, cause="adjustment", ref_id=adjustment_id)
    booking.insert(
        "audit_log",
        audit_log.row(
            tenant_id,
            actor=actor,
            action="adjust",
            entity="member",
            entity_id=member_id,
            at=now,
            details={"points": points, "reason": reason, "adjustment_id": adjustment_id},
        ),
    )
    data = {"adjustment_id": adjustment_id, "points": points, "reason": reason}
    booking.insert("events", outbox.row(tenant_id, member_id, "points.adjusted", data, at=now))
    await unit.apply(booking)
    return AdjustmentResult(adjustment_id, member_id, points, holder.available, holder.debt)


async def adjust(
    db: Database, tenant_id: int, member_id: int, points: int, *, reason: str, actor: str, now: datetime
) -> AdjustmentResult:
    if points == 0 or abs(points) > MAX_ADJUSTMENT:
        raise InvalidInput(f"points must be non-zero and at most {MAX_ADJUSTMENT} either way")
    if not reason.strip() or not actor.strip():
        raise InvalidInput("an adjustment needs a reason and an actor")
    op = partial(_adjust_unit, tenant_id, member_id, points, reason.strip(), actor, now)
    result: AdjustmentResult = await run(db, op, optimistic=True)
    return result
