"""Admin endpoints for one person's accounts: merge a second account into the first, replace a lost card."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, post
from litestar.params import JSONBody, PathParameter
from pydantic import Field

from api import schemas
from api.auth import requires
from api.context import Caller, Db, Now, actor
from loyalty.members import merge as merging
from loyalty.members import replacement

#: A printed card number in a body or a path: long enough for any number, short enough to refuse junk.
CardNumber = Annotated[str, Field(min_length=1, max_length=40)]


class MergeRequest(schemas.Strict):
    into: schemas.Id = Field(description="The member that stays; the one in the path is closed into it.")


class ReplacementRequest(schemas.Strict):
    new_card: CardNumber | None = Field(
        default=None, description="A blank card handed to the member; omitted: a new number is issued."
    )


class AccountController(Controller):
    path = "/v1/admin"
    tags = ["admin"]
    guards = [requires("admin")]

    @post("/members/{member_id:int}/merge", operation_id="mergeMember", status_code=200)
    async def merge(
        self, principal: Caller, db: Db, now: Now, member_id: schemas.PathId, data: JSONBody[MergeRequest]
    ) -> merging.MergeResult:
        """Merge this member into ``into`` (same person, second account); answers the target's figures."""
        return await merging.merge(
            db, principal.tenant_id, member_id, into=data.into, actor=actor(principal), now=now
        )

    @post("/cards/{number:str}/replacement", operation_id="replaceCard", status_code=201)
    async def replace(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        number: Annotated[str, PathParameter(max_length=40)],
        data: JSONBody[ReplacementRequest | None] = None,
    ) -> replacement.Replacement:
        """Block a lost card and give its member a new one (the blank ``new_card``, or a new number)."""
        return await replacement.replace_card(
            db,
            principal.tenant_id,
            number,
            new_card=data.new_card if data is not None else None,
            actor=actor(principal),
            now=now,
        )
