"""Admin endpoints for webhooks out: endpoints (create, rotate the secret, disable, enable), the
delivery log, and redelivery. The signing secret is in the answer of a creation or a rotation only.

Private targets (loopback, 10.x, ...) are refused unless the operator allowed them for the process
(``LOYALTY_WEBHOOKS_ALLOW_PRIVATE``); nothing a tenant admin sends can change that.
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.params import JSONBody, QueryParameter
from pydantic import Field

from api import schemas
from api.auth import requires
from api.context import Caller, Db, Now, actor
from loyalty.events import endpoints
from loyalty.events.guard import MAX_URL_LENGTH

#: What a receiver's type list may hold: catalogue names (checked by the domain, with a hint).
EventTypeName = Annotated[str, Field(min_length=1, max_length=64)]


class WebhookCreate(schemas.Strict):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH, description="http(s) URL on a public address.")
    event_types: list[EventTypeName] = Field(
        default_factory=list,
        max_length=endpoints.MAX_EVENT_TYPES,
        description="Event types to send (see the outbox catalogue); empty: every type.",
    )
    description: str = Field(default="", max_length=endpoints.MAX_DESCRIPTION)


class WebhookController(Controller):
    path = "/v1/admin/webhooks"
    tags = ["admin", "webhooks"]
    guards = [requires("admin")]

    @post("/", operation_id="createWebhook", status_code=201)
    async def create(
        self, principal: Caller, db: Db, now: Now, data: JSONBody[WebhookCreate]
    ) -> endpoints.NewSecret:
        """Create an endpoint; the answer holds its signing secret, shown this once."""
        return await endpoints.create_endpoint(
            db,
            principal.tenant_id,
            data.url,
            event_types=data.event_types,
            description=data.description,
            actor=actor(principal),
            now=now,
        )

    @get("/", operation_id="listWebhooks")
    async def list_endpoints(self, principal: Caller, db: Db, now: Now) -> list[endpoints.EndpointView]:
        return await endpoints.list_endpoints(db, principal.tenant_id, now=now)

    @get("/{endpoint_id:int}", operation_id="getWebhook")
    async def get_endpoint(
        self, principal: Caller, db: Db, now: Now, endpoint_id: schemas.PathId
    ) -> endpoints.EndpointView:
        return await endpoints.get_endpoint(db, principal.tenant_id, endpoint_id, now=now)

    @post("/{endpoint_id:int}/rotation", operation_id="rotateWebhookSecret", status_code=200)
    async def rotate(
        self, principal: Caller, db: Db, now: Now, endpoint_id: schemas.PathId
    ) -> endpoints.NewSecret:
        """A new signing secret (shown this once); the old one keeps signing beside it for 24 hours."""
        return await endpoints.rotate_secret(
            db, principal.tenant_id, endpoint_id, actor=actor(principal), now=now
        )

    @post("/{endpoint_id:int}/disable", operation_id="disableWebhook", status_code=200)
    async def disable(
        self, principal: Caller, db: Db, now: Now, endpoint_id: schemas.PathId
    ) -> endpoints.EndpointView:
        """Stop sending: new events are not queued for it, queued ones wait until it is enabled."""
        return await endpoints.disable(db, principal.tenant_id, endpoint_id, actor=actor(principal), now=now)

    @post("/{endpoint_id:int}/enable", operation_id="enableWebhook", status_code=200)
    async def enable(
        self, principal: Caller, db: Db, now: Now, endpoint_id: schemas.PathId
    ) -> endpoints.EndpointView:
        return await endpoints.enable(db, principal.tenant_id, endpoint_id, actor=actor(principal), now=now)

    @get("/{endpoint_id:int}/deliveries", operation_id="listWebhookDeliveries")
    async def deliveries(
        self,
        principal: Caller,
        db: Db,
        endpoint_id: schemas.PathId,
        # ``state`` is a name Litestar reserves for the app's state: read the query parameter by alias.
        state_filter: Annotated[
            Literal["pending", "delivered", "dead"] | None, QueryParameter(name="state")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=endpoints.MAX_PAGE)] = 50,
        before: Annotated[int | None, QueryParameter(ge=1, le=schemas.MAX_ID)] = None,
    ) -> list[endpoints.DeliveryView]:
        """The delivery log, newest first; pass the last id as ``before`` for the next page."""
        return await endpoints.list_deliveries(
            db, principal.tenant_id, endpoint_id=endpoint_id, state=state_filter, limit=limit, before=before
        )


class WebhookDeliveryController(Controller):
    path = "/v1/admin/webhook-deliveries"
    tags = ["admin", "webhooks"]
    guards = [requires("admin")]

    @get("/{delivery_id:int}", operation_id="getWebhookDelivery")
    async def get_delivery(
        self, principal: Caller, db: Db, delivery_id: schemas.PathId
    ) -> endpoints.DeliveryDetail:
        """One delivery with its attempts (newest first): status, latency, error."""
        return await endpoints.get_delivery(db, principal.tenant_id, delivery_id)

    @post("/{delivery_id:int}/redelivery", operation_id="redeliverWebhook", status_code=200)
    async def redeliver(
        self, principal: Caller, db: Db, now: Now, delivery_id: schemas.PathId
    ) -> endpoints.DeliveryView:
        """Send a dead (or delivered) delivery again: it becomes pending, due now."""
        return await endpoints.redeliver(
            db, principal.tenant_id, delivery_id, actor=actor(principal), now=now
        )
