"""Webhook endpoints in the domain: checked types, secrets, tenant scope, the audit log."""

from __future__ import annotations

import base64

import pytest

from loyalty.errors import InvalidInput, NotFound
from loyalty.events import endpoints
from loyalty.events.guard import Guard
from loyalty.storage import audit_log

from .conftest import Clock, Shop, make_shop


async def test_event_types_must_be_in_the_catalogue(shop: Shop) -> None:
    """An unknown type is refused with its name and the closest known one; nothing is created."""
    with pytest.raises(InvalidInput, match=r"unknown event type 'tier.change'.*did you mean tier.changed\?"):
        await shop.endpoint("http://127.0.0.1:9/hook", ["points.expired", "tier.change"])
    assert await endpoints.list_endpoints(shop.db, shop.tenant_id) == []


async def test_a_private_url_is_refused_at_creation_unless_allowed(shop: Shop) -> None:
    """Creation runs the guard: loopback is refused for a tenant, allowed by the operator's flag."""
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/", "http://[::1]/", "http://10.2.3.4/"):
        with pytest.raises(InvalidInput, match="public addresses only"):
            await endpoints.create_endpoint(
                shop.db, shop.tenant_id, url, actor="t", now=shop.clock(), guard=Guard(allow_private=False)
            )
    assert await endpoints.list_endpoints(shop.db, shop.tenant_id) == []
    await shop.endpoint("http://127.0.0.1:9/hook")
    assert len(await endpoints.list_endpoints(shop.db, shop.tenant_id)) == 1


async def test_secrets_are_standard_webhooks_secrets_and_rotation_keeps_the_old_one_a_day(
    shop: Shop, clock: Clock
) -> None:
    """``whsec_`` + base64 of 32 random bytes; a rotation makes a new one, the old one signs on for
    24 hours (the view says until when, and stops saying so after)."""
    new = await shop.endpoint("http://127.0.0.1:9/hook")
    assert new.secret.startswith("whsec_") and len(base64.b64decode(new.secret[6:])) == 32
    rotated = await endpoints.rotate_secret(shop.db, shop.tenant_id, new.endpoint.id, actor="t", now=clock())
    assert rotated.secret != new.secret
    assert rotated.endpoint.previous_secret_until == clock.now + endpoints.ROTATION_OVERLAP
    clock.advance(hours=25)
    view = await endpoints.get_endpoint(shop.db, shop.tenant_id, new.endpoint.id, now=clock())
    assert view.previous_secret_until is None
    actions = [e.action for e in await audit_log.entries(shop.db, shop.tenant_id)]
    assert actions == ["webhook.rotate", "webhook.create"]
    assert all("whsec_" not in str(e.details) for e in await audit_log.entries(shop.db, shop.tenant_id))


async def test_another_tenants_endpoint_is_never_found(shop: Shop, clock: Clock) -> None:
    """Every operation scoped by tenant: another tenant's endpoint id is NotFound, and unchanged."""
    mine = await shop.endpoint("http://127.0.0.1:9/hook")
    other = await make_shop(shop.db, clock, members=0)
    e = mine.endpoint.id
    for call in (
        endpoints.get_endpoint(shop.db, other.tenant_id, e),
        endpoints.rotate_secret(shop.db, other.tenant_id, e, actor="t", now=clock()),
        endpoints.disable(shop.db, other.tenant_id, e, actor="t", now=clock()),
        endpoints.enable(shop.db, other.tenant_id, e, actor="t", now=clock()),
        endpoints.list_deliveries(shop.db, other.tenant_id, endpoint_id=e),
    ):
        with pytest.raises(NotFound):
            await call
    assert await endpoints.list_endpoints(shop.db, other.tenant_id) == []
    assert (await endpoints.get_endpoint(shop.db, shop.tenant_id, e)).state == "active"


async def test_the_delivery_log_refuses_unknown_ids_and_states(shop: Shop) -> None:
    """A delivery id of nobody is NotFound; a state outside pending/delivered/dead is bad input."""
    with pytest.raises(NotFound):
        await endpoints.redeliver(shop.db, shop.tenant_id, 987654321, actor="t", now=shop.clock())
    with pytest.raises(InvalidInput):
        await endpoints.list_deliveries(shop.db, shop.tenant_id, state="lost")
