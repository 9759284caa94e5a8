"""The dashboard's one figure no report endpoint has: members per tier."""

from __future__ import annotations

from litestar import Controller, get

from api.auth import requires
from api.context import Caller, Db, Now
from loyalty.ops import dashboard


class DashboardController(Controller):
    path = "/v1/dashboard"
    tags = ["marketer"]
    guards = [requires("marketer", "admin")]

    @get("/tiers", operation_id="tierDistribution")
    async def tiers(self, principal: Caller, db: Db, now: Now) -> list[dashboard.TierCount]:
        """Members per tier of the version in force, lowest tier first."""
        return await dashboard.tier_distribution(db, principal.tenant_id, now=now)
