"""Small builders shared by the storage tests."""

from __future__ import annotations

from datetime import datetime

from loyalty.members import membership
from loyalty.points import adjustments, transactions
from loyalty.points.transactions import Posting

from .conftest import NOW, World, basket


async def post(
    world: World,
    external_id: str,
    cents: int,
    member_id: int,
    *,
    at: datetime = NOW,
    now: datetime | None = None,
    quantity: int = 1,
) -> Posting:
    """One line of ``cents`` each (``quantity`` units): earns cents // 100 points per unit."""
    return await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id=external_id,
        occurred_at=at,
        items=basket(("ITEM", cents, quantity)),
        member_id=member_id,
        now=now or at,
    )


async def member_with(world: World, points: int, *, now: datetime = NOW) -> int:
    """A member holding ``points`` available points (granted by an adjustment)."""
    member = await membership.create_member(world.db, world.tenant_id, now=now)
    if points:
        await adjustments.adjust(
            world.db, world.tenant_id, member.id, points, reason="setup", actor="test", now=now
        )
    return member.id
