"""Marketer endpoints for customer value: segment runs, segment sizes over time and the moves between
segments, the value distribution, the members of a segment and the at-risk list (a CRM's export), and
a campaign's lift against its control group."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from litestar import Controller, get, post
from litestar.params import FromQuery, PathParameter, QueryParameter

from api import schemas
from api.auth import requires
from api.context import Caller, Db, Now
from loyalty.programs import versions
from loyalty.value import campaigns, segments

Limit = Annotated[int, QueryParameter(ge=1, le=segments.MAX_PAGE, description="Rows per page.")]
Offset = Annotated[int, QueryParameter(ge=0, le=10**9, description="Rows to skip.")]
SegmentName = Annotated[
    str, PathParameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]
RuleId = SegmentName


class CustomerValueController(Controller):
    path = "/v1/customers"
    tags = ["marketer"]
    guards = [requires("marketer", "admin")]

    @post("/segment-runs", operation_id="runSegments", status_code=201)
    async def run(self, principal: Caller, db: Db, now: Now) -> segments.Run:
        """Compute every member's figures and place them in the program's segments now."""
        return await segments.run(db, principal.tenant_id, now=now)

    @get("/segment-runs", operation_id="segmentHistory")
    async def history(self, principal: Caller, db: Db) -> list[segments.Run]:
        """The latest runs, oldest first: the segments' sizes over time."""
        return await segments.history(db, principal.tenant_id)

    @get("/segments", operation_id="segmentSizes")
    async def sizes(self, principal: Caller, db: Db) -> list[segments.SegmentSize]:
        """How many members each segment holds now ("" for members in none)."""
        return await segments.sizes(db, principal.tenant_id)

    @get("/segment-moves", operation_id="segmentMoves")
    async def moves(
        self, principal: Caller, db: Db, now: Now, since: FromQuery[datetime | None] = None
    ) -> list[segments.Moves]:
        """Members who moved between segments since ``since`` (default: the last 90 days)."""
        start, _ = schemas.period(since or now - timedelta(days=90), now + timedelta(seconds=1))
        return await segments.moves_since(db, principal.tenant_id, start)

    @get("/segments/{segment:str}/members", operation_id="segmentMembers")
    async def members(
        self, principal: Caller, db: Db, segment: SegmentName, limit: Limit = 100, offset: Offset = 0
    ) -> list[segments.MemberFiguresView]:
        """A page of one segment's purchasing members with their figures, highest spend first."""
        return await segments.figures_page(
            db, principal.tenant_id, segment=segment, limit=limit, offset=offset
        )

    @get("/at-risk", operation_id="atRiskMembers")
    async def at_risk(
        self, principal: Caller, db: Db, limit: Limit = 100, offset: Offset = 0
    ) -> list[segments.MemberFiguresView]:
        """Members silent for longer than their own rhythm allows (by the last run), highest spend first."""
        return await segments.figures_page(db, principal.tenant_id, at_risk=True, limit=limit, offset=offset)

    @get("/value", operation_id="valueDistribution")
    async def value(self, principal: Caller, db: Db) -> list[segments.ValueBand]:
        """Purchasing members in ten bands by net spend, with what each band spent and is predicted to."""
        return await segments.value_deciles(db, principal.tenant_id)


class CampaignController(Controller):
    path = "/v1/campaigns"
    tags = ["marketer"]
    guards = [requires("marketer", "admin")]

    @get("/", operation_id="listCampaigns")
    async def campaigns(self, principal: Caller, db: Db, now: Now) -> list[campaigns.Campaign]:
        """The rules of the program in force that hold out a control group."""
        return campaigns.of_program((await versions.current(db, principal.tenant_id, now)).program)

    @get("/{rule:str}/lift", operation_id="campaignLift")
    async def lift(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        rule: RuleId,
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        days: Annotated[int, QueryParameter(ge=1, le=730, description="Days each member is followed.")] = 60,
    ) -> campaigns.Lift:
        """Treated against control members over the window: visits, revenue, retention and points cost,
        each with its 95% interval and the sample sizes."""
        if since is not None and until is not None:
            since, until = schemas.period(since, until)
        else:  # one bound given: checked alone, the other is the campaign's own (see campaigns.lift)
            since = schemas.instant("since", since) if since is not None else None
            until = schemas.instant("until", until) if until is not None else None
        return await campaigns.lift(
            db, principal.tenant_id, rule, now=now, since=since, until=until, horizon_days=days
        )
