"""Members' data: marketing consent, the export of a member's data, erasure, and basket-detail retention.

Admin endpoints under ``/v1/admin``; a customer sets their own consent through their card's token
(:mod:`api.customer`). Answers holding a member's data are never
stored by a browser or a proxy.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Controller, get, post, put
from litestar.datastructures import CacheControlHeader
from litestar.params import JSONBody
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.auth import requires
from api.context import Caller, Db, Now, actor
from api.schemas import PathId
from loyalty.members import consent
from loyalty.privacy import erasure, export, retention


def _strict_bool(value: object) -> object:
    """JSON true or false only: Litestar validates bodies in lax mode, where "yes" and 1 pass as true,
    and a consent must never be given by accident."""
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


#: A consent answer: JSON true or false, nothing that merely looks like one.
Answer = Annotated[bool, BeforeValidator(_strict_bool)]
#: A consent source as the API takes it (the domain checks the same pattern).
Source = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_.-]*$")]


class ConsentChange(BaseModel):
    """What an admin records: the member gave (true) or withdrew (false) marketing consent, and where."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    marketing: Answer
    source: Source = Field(description="Where the member said so: till, app, web, admin, import, ...")


class CustomerConsentChange(BaseModel):
    """What a customer sets on their own card's page or in the app (``PUT /v1/cards/{token}/consent``,
    in :mod:`api.customer`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    marketing: Answer
    source: Literal["web", "app"] = "web"


class CustomerConsent(BaseModel):
    """The customer's consent now (its history is the admin's)."""

    marketing: bool


class MembersDataController(Controller):
    path = "/v1/admin"
    tags = ["admin", "members' data"]
    guards = [requires("admin")]
    cache_control = CacheControlHeader(no_store=True)

    @get("/members/{member_id:int}/consent", operation_id="getMemberConsent")
    async def get_consent(self, principal: Caller, db: Db, member_id: PathId) -> consent.ConsentView:
        """The member's marketing consent and its history (oldest first)."""
        return await consent.consent_of(db, principal.tenant_id, member_id)

    @put("/members/{member_id:int}/consent", operation_id="setMemberConsent")
    async def set_consent(
        self, principal: Caller, db: Db, now: Now, member_id: PathId, data: JSONBody[ConsentChange]
    ) -> consent.ConsentView:
        """Record that the member gave or withdrew marketing consent (with the time and the key)."""
        return await consent.set_consent(
            db,
            principal.tenant_id,
            member_id,
            marketing=data.marketing,
            source=data.source,
            actor=actor(principal),
            now=now,
        )

    @get("/members/{member_id:int}/export", operation_id="exportMember")
    async def export_member(self, principal: Caller, db: Db, now: Now, member_id: PathId) -> dict[str, Any]:
        """Everything the engine holds about the member, as one JSON document."""
        return await export.export(db, principal.tenant_id, member_id, now=now)

    @post("/members/{member_id:int}/erasure", operation_id="eraseMember", status_code=200)
    async def erase_member(
        self, principal: Caller, db: Db, now: Now, member_id: PathId
    ) -> erasure.ErasureResult:
        """Erase the member's personal data; the books stay exact. A second erasure is a 409."""
        return await erasure.erase(db, principal.tenant_id, member_id, actor=actor(principal), now=now)

    @post("/privacy/retention", operation_id="purgeBasketDetail", status_code=200)
    async def purge_detail(self, principal: Caller, db: Db, now: Now) -> retention.RetentionResult:
        """Purge the basket detail of purchases older than the program's ``privacy.basket_detail_months``."""
        return await retention.purge_old_detail(db, principal.tenant_id, now=now)
