"""Manual corrections by an admin: always with a reason and the actor, and in the audit log.

A positive adjustment is a new lot (available at once, expiring by the policy in force) and pays
debt first like any other points. A negative one takes available points, nearest expiry first; it
never creates debt (debt comes only from refunds of points already spent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, update

from loyalty import audit, ledger, programs
from loyalty.calendar import expiry_for
from loyalty.db import Database
from loyalty.errors import InsufficientPoints, InvalidInput
from loyalty.models import Adjustment, Member, PointLot

#: Largest single adjustment: a typo guard, far above any goodwill gesture.
MAX_ADJUSTMENT = 10_000_000


@dataclass(frozen=True, slots=True)
class AdjustmentResult:
    adjustment_id: int
    member_id: int
    points: int
    available_after: int
    debt_after: int


async def adjust(
    db: Database, tenant_id: int, member_id: int, points: int, *, reason: str, actor: str, now: datetime
) -> AdjustmentResult:
    if points == 0 or abs(points) > MAX_ADJUSTMENT:
        raise InvalidInput(f"points must be non-zero and at most {MAX_ADJUSTMENT} either way")
    if not reason.strip() or not actor.strip():
        raise InvalidInput("an adjustment needs a reason and an actor")
    async with db.write() as s:
        member = await ledger.lock_member(s, tenant_id, member_id)
        if points < 0 and member.available < -points:
            raise InsufficientPoints(
                f"cannot take {-points} points; {member.available} available",
                available=member.available,
                cost=-points,
            )
        adjustment_id = await s.scalar(
            insert(Adjustment)
            .values(
                tenant_id=tenant_id,
                member_id=member_id,
                points=points,
                reason=reason.strip(),
                actor=actor,
                created_at=now,
            )
            .returning(Adjustment.id)
        )
        assert adjustment_id is not None
        await s.execute(
            update(Member).where(Member.id == member_id).values(available=Member.available + points)
        )
        await ledger.add_entries(
            s,
            tenant_id,
            member_id,
            cause="adjustment",
            ref_id=adjustment_id,
            at=now,
            moves={ledger.AVAILABLE: points, ledger.ADJUSTED: -points},
        )
        if points > 0:
            program = (await programs.version_at(s, tenant_id, now)).program
            await s.execute(
                insert(PointLot).values(
                    tenant_id=tenant_id,
                    member_id=member_id,
                    transaction_id=None,
                    adjustment_id=adjustment_id,
                    state="available",
                    earned=points,
                    remaining=points,
                    expired=0,
                    created_at=now,
                    pending_until=now,
                    expires_at=expiry_for(now, program.document.points.expire_after_months, program.zone),
                )
            )
            member.available += points
            await ledger.settle_debt(s, tenant_id, member, cause="adjustment", ref_id=adjustment_id, at=now)
        else:
            await ledger.draw_lots(
                s, tenant_id, member_id, -points, cause="adjustment", ref_id=adjustment_id, at=now
            )
            member.available += points
        await audit.record(
            s,
            tenant_id,
            actor=actor,
            action="adjust",
            entity="member",
            entity_id=member_id,
            at=now,
            details={"points": points, "reason": reason.strip(), "adjustment_id": adjustment_id},
        )
    return AdjustmentResult(adjustment_id, member_id, points, member.available, member.debt)
