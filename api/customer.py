"""Customer endpoints: the card's signed token is the credential, so a member sees only their own card."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, get, put
from litestar.datastructures import CacheControlHeader
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.auth import PUBLIC
from api.context import CardKeys, Db, Now
from api.members_data import CustomerConsent, CustomerConsentChange
from loyalty.cards.secrets import Secrets
from loyalty.members import consent, lookup, membership
from loyalty.points import balances
from loyalty.storage.db import Database

#: Customer tokens are short; anything longer is refused before it is decoded.
MAX_TOKEN = 120


async def _member(db: Database, secrets: Secrets, now: datetime, token: str) -> tuple[int, int]:
    """The card's tenant and member, from its signed token (a forged one is an unknown card)."""
    tenant_id, card_id = lookup.verify_customer_token(token, secrets, now=now)
    return tenant_id, await membership.holder_id(db, tenant_id, membership.CardRef(card_id=card_id))


class CustomerController(Controller):
    path = "/v1/cards/{token:str}"
    tags = ["customer"]
    #: The card's signed token is the credential: no API key.
    opt = {PUBLIC: True}
    #: A member's balance and history are theirs: no browser or proxy may keep a copy.
    cache_control = CacheControlHeader(no_store=True)

    @get("/balance", operation_id="customerBalance")
    async def balance(
        self,
        db: Db,
        now: Now,
        secrets: CardKeys,
        token: Annotated[str, PathParameter(max_length=MAX_TOKEN)],
    ) -> balances.Balance:
        """Balance, pending and expiring points by month, tier progress, stamp cards, rewards in reach."""
        tenant_id, member_id = await _member(db, secrets, now, token)
        return await balances.balance(db, tenant_id, member_id, now=now)

    @get("/history", operation_id="customerHistory")
    async def history(
        self,
        db: Db,
        now: Now,
        secrets: CardKeys,
        token: Annotated[str, PathParameter(max_length=MAX_TOKEN)],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        before: Annotated[int | None, QueryParameter(ge=1, le=2**62)] = None,
    ) -> balances.HistoryPage:
        """The member's movements, newest first; pass ``next_before`` as ``before`` for the next page."""
        tenant_id, member_id = await _member(db, secrets, now, token)
        return await balances.history(db, tenant_id, member_id, limit=limit, before=before)

    @put("/consent", operation_id="customerSetConsent")
    async def set_consent(
        self,
        db: Db,
        now: Now,
        secrets: CardKeys,
        token: Annotated[str, PathParameter(max_length=MAX_TOKEN)],
        data: JSONBody[CustomerConsentChange],
    ) -> CustomerConsent:
        """Give or withdraw one's own marketing consent."""
        tenant_id, member_id = await _member(db, secrets, now, token)
        view = await consent.set_consent(
            db, tenant_id, member_id, marketing=data.marketing, source=data.source, actor="customer", now=now
        )
        return CustomerConsent(marketing=view.marketing)
