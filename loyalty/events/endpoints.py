"""A tenant's webhook endpoints and their delivery log: create, rotate the secret, disable, enable,
read what was sent, send a delivery again.

Every change is written to the audit log in its own transaction, and every query is scoped by the
tenant: another tenant's endpoint or delivery is never found. The signing secret (Standard Webhooks
``whsec_`` + base64 of 32 random bytes) is returned only when it is made (creation, rotation); the
views never hold it. After a rotation the previous secret keeps signing beside the new one for
:data:`ROTATION_OVERLAP`, so a receiver can switch without refusing a message.
"""

from __future__ import annotations

import base64
import secrets as random_secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.errors import Conflict, InvalidInput, NotFound
from loyalty.events.guard import Guard
from loyalty.storage import audit_log, outbox
from loyalty.storage.db import Database
from loyalty.storage.models import DELIVERY_STATES, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from rules.hints import did_you_mean

#: How long the old secret still signs after a rotation.
ROTATION_OVERLAP = timedelta(hours=24)
#: Most event types one endpoint may list (there are fewer in the catalogue; more is a mistake).
MAX_EVENT_TYPES = 64
#: Longest description (the column's width).
MAX_DESCRIPTION = 200
#: Most deliveries one page of the log returns.
MAX_PAGE = 200
#: Most attempts a delivery's detail lists (the newest).
MAX_ATTEMPTS_SHOWN = 100
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class EndpointView:
    id: int
    url: str
    description: str
    #: The event types it takes; empty: every type.
    event_types: list[str]
    state: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    #: Until when the previous secret still signs (after a rotation), else None.
    previous_secret_until: datetime | None


@dataclass(frozen=True, slots=True)
class NewSecret:
    """An endpoint and its signing secret, shown this once."""

    endpoint: EndpointView
    secret: str


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    endpoint_id: int
    event_id: int
    #: The ``webhook-id`` header it is sent with (the same on every attempt and every endpoint).
    webhook_id: str
    event_type: str
    member_id: int
    state: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    #: How long the last attempt took (ms), None before the first.
    last_latency_ms: int | None
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptView:
    at: datetime
    status: int | None
    latency_ms: int
    error: str | None


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    delivery: DeliveryView
    #: Newest first.
    attempts: list[AttemptView]


def webhook_id(event_id: int) -> str:
    """The ``webhook-id`` of an event: stable, so a receiver can drop a message it already has."""
    return f"evt_{event_id}"


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode()


def check_event_types(types: list[str]) -> list[str]:
    """The types, deduplicated in their order, when every one is in the catalogue."""
    if len(types) > MAX_EVENT_TYPES:
        raise InvalidInput(f"list at most {MAX_EVENT_TYPES} event types (none: every type)")
    for name in types:
        if name not in outbox.CATALOGUE:
            hint = did_you_mean(name, outbox.CATALOGUE)
            raise InvalidInput(
                f"unknown event type {name!r}"
                + (f": {hint}" if hint else "")
                + f" (types: {', '.join(outbox.CATALOGUE)})"
            )
    return list(dict.fromkeys(types))


def _view(e: WebhookEndpoint, now: datetime | None = None) -> EndpointView:
    until = e.previous_until if e.previous_secret else None
    overlap = until if until is not None and (now is None or until > now) else None
    return EndpointView(
        e.id,
        e.url,
        e.description,
        list(e.event_types),
        e.state,
        e.created_at,
        e.created_by,
        e.updated_at,
        overlap,
    )


async def create_endpoint(
    db: Database,
    tenant_id: int,
    url: str,
    *,
    event_types: list[str] | None = None,
    description: str = "",
    actor: str,
    now: datetime,
    guard: Guard | None = None,
) -> NewSecret:
    """A new active endpoint. The URL must pass the guard (public addresses only, unless the
    operator allowed private ones); it takes the events that occur from ``now`` on."""
    types = check_event_types(event_types or [])
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"the description must have at most {MAX_DESCRIPTION} characters")
    await (guard or Guard()).check(url)
    secret = new_secret()
    async with db.write() as s:
        endpoint = WebhookEndpoint(
            tenant_id=tenant_id,
            url=url,
            description=description,
            event_types=types,
            secret=secret,
            previous_secret=None,
            previous_until=None,
            state="active",
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        s.add(endpoint)
        await s.flush()
        await _audit(s, tenant_id, actor, "webhook.create", endpoint.id, now, url=url, event_types=types)
        return NewSecret(_view(endpoint), secret)


async def list_endpoints(db: Database, tenant_id: int, *, now: datetime | None = None) -> list[EndpointView]:
    async with db.read() as s:
        rows = (
            await s.scalars(
                select(WebhookEndpoint)
                .where(WebhookEndpoint.tenant_id == tenant_id)
                .order_by(WebhookEndpoint.id)
            )
        ).all()
    return [_view(e, now) for e in rows]


async def get_endpoint(
    db: Database, tenant_id: int, endpoint_id: int, *, now: datetime | None = None
) -> EndpointView:
    async with db.read() as s:
        return _view(await _endpoint(s, tenant_id, endpoint_id), now)


async def rotate_secret(
    db: Database, tenant_id: int, endpoint_id: int, *, actor: str, now: datetime
) -> NewSecret:
    """A new secret; the current one keeps signing beside it for :data:`ROTATION_OVERLAP`."""
    secret = new_secret()
    async with db.write() as s:
        e = await _endpoint(s, tenant_id, endpoint_id, lock=True)
        e.previous_secret, e.previous_until = e.secret, now + ROTATION_OVERLAP
        e.secret, e.updated_at = secret, now
        await _audit(
            s, tenant_id, actor, "webhook.rotate", e.id, now, previous_until=e.previous_until.isoformat()
        )
        return NewSecret(_view(e, now), secret)


async def set_state(
    db: Database, tenant_id: int, endpoint_id: int, state: str, *, actor: str, now: datetime
) -> EndpointView:
    """Disable (its pending deliveries wait; no new events are fanned out to it) or enable again."""
    if state not in ("active", "disabled"):
        raise InvalidInput(f"an endpoint is active or disabled, not {state!r}")
    async with db.write() as s:
        e = await _endpoint(s, tenant_id, endpoint_id, lock=True)
        if e.state != state:
            e.state, e.updated_at = state, now
            action = "webhook.enable" if state == "active" else "webhook.disable"
            await _audit(s, tenant_id, actor, action, e.id, now)
        return _view(e, now)


async def disable(
    db: Database, tenant_id: int, endpoint_id: int, *, actor: str, now: datetime
) -> EndpointView:
    return await set_state(db, tenant_id, endpoint_id, "disabled", actor=actor, now=now)


async def enable(
    db: Database, tenant_id: int, endpoint_id: int, *, actor: str, now: datetime
) -> EndpointView:
    return await set_state(db, tenant_id, endpoint_id, "active", actor=actor, now=now)


# -- the delivery log ---------------------------------------------------------------------------------


def _delivery_query() -> Any:
    from loyalty.storage.models import Event

    latency = (
        select(WebhookAttempt.latency_ms)
        .where(WebhookAttempt.delivery_id == WebhookDelivery.id)
        .order_by(WebhookAttempt.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    # The event's own tenant and member: a delivery's event is its member's (one shard when distributed).
    same_event = and_(
        Event.tenant_id == WebhookDelivery.tenant_id,
        Event.member_id == WebhookDelivery.member_id,
        Event.id == WebhookDelivery.event_id,
    )
    return select(WebhookDelivery, Event.type, latency).join(Event, same_event)


def _delivery_view(d: WebhookDelivery, event_type: str, latency: int | None) -> DeliveryView:
    return DeliveryView(
        d.id,
        d.endpoint_id,
        d.event_id,
        webhook_id(d.event_id),
        event_type,
        d.member_id,
        d.state,
        d.attempts,
        d.next_attempt_at if d.state == "pending" else None,
        d.created_at,
        d.last_attempt_at,
        d.last_status,
        d.last_error,
        latency,
        d.delivered_at,
    )


async def list_deliveries(
    db: Database,
    tenant_id: int,
    *,
    endpoint_id: int | None = None,
    state: str | None = None,
    limit: int = 50,
    before: int | None = None,
) -> list[DeliveryView]:
    """Newest first; pass the last id as ``before`` for the next page. An endpoint of another tenant
    is not found (rather than an empty page)."""
    if state is not None and state not in DELIVERY_STATES:
        raise InvalidInput(f"a delivery is {', '.join(DELIVERY_STATES)}, not {state!r}")
    query = _delivery_query().where(WebhookDelivery.tenant_id == tenant_id)
    async with db.read() as s:
        if endpoint_id is not None:
            await _endpoint(s, tenant_id, endpoint_id)
            query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
        if state is not None:
            query = query.where(WebhookDelivery.state == state)
        if before is not None:
            query = query.where(WebhookDelivery.id < before)
        query = query.order_by(WebhookDelivery.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
        rows = (await s.execute(query)).all()
    return [_delivery_view(d, t, lat) for d, t, lat in rows]


async def get_delivery(db: Database, tenant_id: int, delivery_id: int) -> DeliveryDetail:
    async with db.read() as s:
        row = (
            await s.execute(
                _delivery_query().where(
                    WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.id == delivery_id
                )
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"webhook delivery {delivery_id} not found")
        attempts = (
            await s.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.tenant_id == tenant_id, WebhookAttempt.delivery_id == delivery_id)
                .order_by(WebhookAttempt.id.desc())
                .limit(MAX_ATTEMPTS_SHOWN)
            )
        ).all()
    return DeliveryDetail(
        _delivery_view(*row), [AttemptView(a.at, a.status, a.latency_ms, a.error) for a in attempts]
    )


async def redeliver(
    db: Database, tenant_id: int, delivery_id: int, *, actor: str, now: datetime
) -> DeliveryView:
    """Put a dead (or delivered) delivery back to pending, due now. It waits behind the member's older
    pending deliveries to the same endpoint, as any delivery does; a pending one is left as it is.
    The give-up age still counts from the delivery's creation, so a redelivered delivery older than
    that gets one attempt: if it fails, it is dead again (and can be redelivered again)."""
    async with db.write() as s:
        changed = (
            await s.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.tenant_id == tenant_id,
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.state != "pending",
                )
                .values(state="pending", next_attempt_at=now, delivered_at=None)
                .execution_options(synchronize_session=False)
            )
        ).rowcount  # type: ignore[attr-defined]
        if not changed:
            exists = await s.scalar(
                select(func.count()).where(
                    WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.id == delivery_id
                )
            )
            if not exists:
                raise NotFound(f"webhook delivery {delivery_id} not found")
            raise Conflict(f"webhook delivery {delivery_id} is still pending: it will be sent")
        await _audit(s, tenant_id, actor, "webhook.redeliver", delivery_id, now, entity="webhook_delivery")
    return (await get_delivery(db, tenant_id, delivery_id)).delivery


async def _endpoint(
    s: AsyncSession, tenant_id: int, endpoint_id: int, *, lock: bool = False
) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.id == endpoint_id
    )
    found = await s.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return found


async def _audit(
    s: AsyncSession,
    tenant_id: int,
    actor: str,
    action: str,
    entity_id: int,
    now: datetime,
    *,
    entity: str = "webhook_endpoint",
    **details: Any,
) -> None:
    await audit_log.record(
        s, tenant_id, actor=actor, action=action, entity=entity, entity_id=entity_id, at=now, details=details
    )
