"""The dashboard's one figure no report endpoint has: members per tier."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get

from api.auth import requires
from api.context import caller, db_of, now_of
from loyalty import dashboard


class DashboardController(Controller):
    path = "/v1/dashboard"
    tags = ["marketer"]
    guards = [requires("marketer", "admin")]

    @get("/tiers", operation_id="tierDistribution")
    async def tiers(self, request: Request[Any, Any, Any]) -> list[dashboard.TierCount]:
        """Members per tier of the version in force, lowest tier first."""
        principal = await caller(request)
        return await dashboard.tier_distribution(db_of(request), principal.tenant_id, now=now_of(request))
