"""The dispatcher against a real HTTP receiver on loopback, on SQLite and PostgreSQL: signed bodies,
retries in order per member, at-least-once across a killed dispatcher, backoff, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from loyalty.events import endpoints
from loyalty.events.dispatcher import Dispatcher, RetryPolicy
from loyalty.storage.db import Database
from loyalty.storage.models import WebhookDelivery

from .conftest import HANG, Clock, Received, Receiver, Shop, dispatch_once, fast


async def _deliveries(db: Database, endpoint_id: int) -> list[WebhookDelivery]:
    async with db.read() as s:
        return list(
            (
                await s.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.endpoint_id == endpoint_id)
                    .order_by(WebhookDelivery.event_id)
                )
            ).all()
        )


def _ids(requests: list[Received]) -> list[str]:
    return [r.webhook_id for r in requests]


async def test_bodies_are_signed_and_verify(shop: Shop, receiver: Receiver, clock: Clock) -> None:
    """Each event reaches the endpoint once, with the documented body, a stable webhook-id, and a
    signature that standardwebhooks' own verifier accepts with the endpoint's secret."""
    new = await shop.endpoint(receiver.url)
    clock.advance(seconds=1)
    ids = await shop.events((0, "points.adjusted"), (1, "tier.changed"), (0, "member.consent_changed"))
    await dispatch_once(shop.db, clock)

    # Only each member's events are ordered: member 1's event may overtake member 0's.
    got = sorted(receiver.accepted(), key=lambda r: int(r.webhook_id.removeprefix("evt_")))
    assert _ids(got) == [f"evt_{i}" for i in ids] and len(receiver.received()) == 3
    for request, event_id, member in zip(got, ids, (0, 1, 0), strict=True):
        payload = Webhook(new.secret).verify(request.body, request.headers)
        assert payload["id"] == f"evt_{event_id}"
        assert payload["member_id"] == shop.members[member]
        assert payload["version"] == 1
        assert set(payload) == {"id", "type", "version", "timestamp", "member_id", "data"}
        assert request.headers["content-type"] == "application/json"
        assert request.path == "/hook"
    assert [r.json["type"] for r in got] == ["points.adjusted", "tier.changed", "member.consent_changed"]
    assert got[0].json["data"] == {"adjustment_id": 0, "points": 10, "reason": "test"}
    forged = Webhook(endpoints.new_secret())
    try:
        forged.verify(got[0].body, got[0].headers)
    except Exception as exc:
        assert "signature" in str(exc).lower()
    else:
        raise AssertionError("another secret verified the signature")

    rows = await _deliveries(shop.db, new.endpoint.id)
    assert [(d.state, d.attempts, d.last_status) for d in rows] == [("delivered", 1, 200)] * 3
    detail = await endpoints.get_delivery(shop.db, shop.tenant_id, rows[0].id)
    assert [(a.status, a.error) for a in detail.attempts] == [(200, None)]
    assert detail.delivery.last_latency_ms is not None


async def test_filters_and_endpoint_lifetime(shop: Shop, receiver: Receiver, clock: Clock) -> None:
    """An endpoint takes the types it lists and only events from its creation on; a disabled one gets
    no new events and its pending deliveries wait until it is enabled again."""
    early = await shop.events((0, "points.adjusted"))
    clock.advance(seconds=1)
    every = await shop.endpoint(receiver.url)
    tiers = await shop.endpoint(receiver.url.replace("/hook", "/tiers"), ["tier.changed"])
    clock.advance(seconds=1)
    first = await shop.events((0, "points.adjusted"), (1, "tier.changed"))
    async with Dispatcher(shop.db, fast(), clock=clock) as fan:
        while await fan.fan_out():
            pass
    await endpoints.disable(shop.db, shop.tenant_id, every.endpoint.id, actor="test", now=clock())
    await dispatch_once(shop.db, clock)

    assert f"evt_{early[0]}" not in _ids(receiver.received())
    assert [(r.path, r.webhook_id) for r in receiver.accepted()] == [("/tiers", f"evt_{first[1]}")]
    waiting = await _deliveries(shop.db, every.endpoint.id)
    assert [(d.event_id, d.state, d.attempts) for d in waiting] == [(i, "pending", 0) for i in first]

    later = await shop.events((1, "points.adjusted"))
    await dispatch_once(shop.db, clock)
    assert [d.event_id for d in await _deliveries(shop.db, every.endpoint.id)] == first  # none new
    await endpoints.enable(shop.db, shop.tenant_id, every.endpoint.id, actor="test", now=clock())
    await dispatch_once(shop.db, clock)
    hook = [r.webhook_id for r in receiver.accepted() if r.path == "/hook"]
    assert sorted(hook) == sorted(f"evt_{i}" for i in first)  # two members: no order between them
    assert f"evt_{later[0]}" not in hook
    assert [d.event_id for d in await _deliveries(shop.db, tiers.endpoint.id)] == [first[1]]


async def test_a_failing_receiver_gets_everything_later_in_order(
    shop: Shop, receiver: Receiver, clock: Clock
) -> None:
    """A receiver answering 500 for a while, then now and then, gets every event, each exactly once
    when deduplicated by webhook-id, and each member's events in the order they were written: no
    event of a member is accepted before an earlier one of the same member."""
    new = await shop.endpoint(receiver.url)
    clock.advance(seconds=1)
    spec = [(i % 3, "points.adjusted") for i in range(24)]
    ids = await shop.events(*spec)
    member_of = {f"evt_{i}": shop.members[m] for i, (m, _t) in zip(ids, spec, strict=True)}
    dice = random.Random(7)
    state = {"down": True}
    receiver.respond = lambda _r: 500 if state["down"] or dice.random() < 0.3 else 200

    await dispatch_once(shop.db, clock)
    assert receiver.received() and not receiver.accepted()
    state["down"] = False
    for _round in range(60):
        clock.advance(minutes=11)  # past the longest backoff of these settings
        await dispatch_once(shop.db, clock)
        if all(d.state == "delivered" for d in await _deliveries(shop.db, new.endpoint.id)):
            break
    accepted = _ids(receiver.accepted())
    assert sorted(set(accepted)) == sorted(member_of)
    assert len(accepted) == len(set(accepted))  # nothing was sent again after a 2xx
    per_member: dict[int, list[str]] = defaultdict(list)
    for wid in accepted:
        per_member[member_of[wid]].append(wid)
    for member, got in per_member.items():
        assert got == [f"evt_{i}" for i, (m, _t) in zip(ids, spec, strict=True) if shop.members[m] == member]
    # Every request a member's receiver saw, failed or not, came after all its earlier events were
    # accepted: ordering holds through the retries, not only in the end.
    done: set[str] = set()
    for r, ok in receiver.log():
        position = ids.index(int(r.webhook_id.removeprefix("evt_")))
        earlier = [f"evt_{i}" for i in ids[:position] if member_of[f"evt_{i}"] == member_of[r.webhook_id]]
        assert set(earlier) <= done, (r.webhook_id, earlier)
        if ok:
            done.add(r.webhook_id)


async def test_a_killed_dispatcher_loses_nothing(shop: Shop, receiver: Receiver, clock: Clock) -> None:
    """Cancelled while its requests hang, a dispatcher leaves the claimed deliveries leased: nobody
    sends them until the lease runs out, then a new dispatcher delivers all of them."""
    new = await shop.endpoint(receiver.url)
    clock.advance(seconds=1)
    ids = await shop.events(*[(i % 3, "points.adjusted") for i in range(9)])
    arrived: list[str] = []
    receiver.respond = lambda r: (arrived.append(r.webhook_id), HANG)[1]

    d = Dispatcher(shop.db, fast(lease=timedelta(minutes=2)), clock=clock)
    async with d:
        task = asyncio.create_task(d.run())
        for _ in range(200):
            if len(arrived) >= 3:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(arrived) == 3  # the three members' heads
    assert all(r.state == "pending" for r in await _deliveries(shop.db, new.endpoint.id))

    receiver.respond = lambda _r: 200
    receiver.release.set()  # the hung requests end now; their answers reach nobody
    await dispatch_once(shop.db, clock)  # still leased: nothing is sent
    assert {r.webhook_id for r in receiver.received()} <= set(arrived)
    clock.advance(minutes=3)
    await dispatch_once(shop.db, clock)
    assert {r.webhook_id for r in receiver.accepted()} == {f"evt_{i}" for i in ids}
    assert all(r.state == "delivered" for r in await _deliveries(shop.db, new.endpoint.id))


async def test_backoff_grows_then_the_delivery_dies_and_can_be_redelivered(
    shop: Shop, receiver: Receiver, clock: Clock
) -> None:
    """Failed attempts wait 5 s, 10 s, 20 s ... (here at the jitter's ceiling) up to the cap; past the
    give-up age the delivery is dead; a redelivery makes it pending and due now, and it goes out."""
    retry = RetryPolicy(
        first=timedelta(seconds=5), cap=timedelta(seconds=60), give_up_after=timedelta(minutes=5)
    )
    new = await shop.endpoint(receiver.url)
    clock.advance(seconds=1)
    await shop.events((0, "points.adjusted"))
    receiver.respond = lambda _r: 503
    waits = []
    for _ in range(30):
        await dispatch_once(shop.db, clock, retry=retry)
        (d,) = await _deliveries(shop.db, new.endpoint.id)
        if d.state != "pending":
            break
        assert d.last_attempt_at is not None
        waits.append((d.next_attempt_at - d.last_attempt_at).total_seconds())
        clock.now = d.next_attempt_at
    assert waits[:5] == [5, 10, 20, 40, 60]
    assert set(waits[5:]) == {60}
    assert d.state == "dead" and d.last_status == 503 and d.last_error == "HTTP 503: receiver says no"
    assert (d.last_attempt_at or clock()) - d.created_at >= timedelta(minutes=5)
    detail = await endpoints.get_delivery(shop.db, shop.tenant_id, d.id)
    assert len(detail.attempts) == d.attempts == len(receiver.received())
    assert {a.status for a in detail.attempts} == {503}

    await dispatch_once(shop.db, clock, retry=retry)
    assert len(receiver.received()) == d.attempts  # a dead delivery is not tried again by itself
    receiver.respond = lambda _r: 200
    again = await endpoints.redeliver(shop.db, shop.tenant_id, d.id, actor="test", now=clock())
    assert (again.state, again.next_attempt_at) == ("pending", clock())
    await dispatch_once(shop.db, clock, retry=retry)
    (d,) = await _deliveries(shop.db, new.endpoint.id)
    assert (d.state, d.last_status) == ("delivered", 200)
    assert receiver.accepted()[-1].webhook_id == f"evt_{d.event_id}"


async def test_full_jitter_stays_under_the_ceiling() -> None:
    """Full jitter: any wait from 0 up to the ceiling, which doubles up to the cap."""
    retry = RetryPolicy()
    assert [retry.ceiling(n).total_seconds() for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert retry.ceiling(30) == timedelta(hours=1)
    dice = random.Random(1)
    waits = [retry.delay(4, dice.random).total_seconds() for _ in range(200)]
    assert 0 <= min(waits) < 10 and 30 < max(waits) <= 40


async def test_a_redirect_is_not_followed(shop: Shop, receiver: Receiver, clock: Clock) -> None:
    """A 3xx answer is a failed attempt ("redirect refused"); the Location is never requested."""
    new = await shop.endpoint(receiver.url)
    clock.advance(seconds=1)
    await shop.events((0, "points.adjusted"))
    receiver.respond = lambda r: 302 if r.path == "/hook" else 200
    await dispatch_once(shop.db, clock)
    (d,) = await _deliveries(shop.db, new.endpoint.id)
    assert d.state == "pending" and d.last_status == 302
    assert d.last_error is not None and d.last_error.startswith("redirect refused")
    assert [r.path for r in receiver.received()] == ["/hook"]


async def test_the_guard_checks_again_before_each_delivery(
    shop: Shop, receiver: Receiver, clock: Clock
) -> None:
    """A dispatcher not allowed private targets refuses a loopback endpoint at delivery time (the
    endpoint passed when created, as if its DNS changed since): nothing is sent, the attempt says why."""
    new = await shop.endpoint(receiver.url)
    clock.advance(seconds=1)
    await shop.events((0, "points.adjusted"))
    await dispatch_once(shop.db, clock, allow_private=False)
    (d,) = await _deliveries(shop.db, new.endpoint.id)
    assert receiver.received() == []
    assert d.state == "pending" and d.last_status is None
    assert d.last_error is not None and "refused" in d.last_error and "loopback" in d.last_error


async def test_rotation_signs_with_both_secrets_for_a_day(
    shop: Shop, receiver: Receiver, clock: Clock
) -> None:
    """After a rotation a message carries two signatures, so the old and the new secret both verify
    it; after the overlap only the new secret signs."""
    new = await shop.endpoint(receiver.url)
    rotated = await endpoints.rotate_secret(
        shop.db, shop.tenant_id, new.endpoint.id, actor="test", now=clock()
    )
    assert rotated.secret != new.secret
    clock.advance(seconds=1)
    await shop.events((0, "points.adjusted"))
    await dispatch_once(shop.db, clock)
    (first,) = receiver.accepted()
    assert len(first.headers["webhook-signature"].split(" ")) == 2
    for secret in (new.secret, rotated.secret):
        Webhook(secret).verify(first.body, first.headers)

    clock.advance(hours=24, seconds=1)
    await shop.events((0, "points.adjusted"))
    await dispatch_once(shop.db, clock)
    second = receiver.accepted()[-1]
    assert len(second.headers["webhook-signature"].split(" ")) == 1
    assert second.headers["webhook-signature"].startswith("v1,")


async def test_two_dispatchers_share_the_work(shop: Shop, receiver: Receiver, clock: Clock) -> None:
    """Two dispatchers running at once (row locks skipped on PostgreSQL, one writer at a time on
    SQLite) deliver every event, each member's in order, none twice."""
    await shop.endpoint(receiver.url)
    clock.advance(seconds=1)
    spec = [(i % 3, "points.adjusted") for i in range(30)]
    ids = await shop.events(*spec)

    async def one() -> None:
        async with Dispatcher(shop.db, fast(concurrency=3, claim_batch=2), clock=clock) as d:
            await d.run(once=True)

    await asyncio.gather(one(), one())
    accepted = _ids(receiver.accepted())
    assert sorted(accepted) == sorted(f"evt_{i}" for i in ids) and len(accepted) == len(ids)
    for m in range(3):
        mine = [f"evt_{i}" for i, (who, _t) in zip(ids, spec, strict=True) if who == m]
        assert [w for w in accepted if w in mine] == mine


async def test_a_running_dispatcher_outlives_a_failure_and_stops_when_told(
    shop: Shop, receiver: Receiver, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing fan-out (the database restarting) is logged and tried again; the dispatcher then
    delivers, and returns when its stop event is set."""
    from loyalty.events import dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "PAUSE_SECONDS", 0.05)
    await shop.endpoint(receiver.url)
    clock.advance(seconds=1)
    (event_id,) = await shop.events((0, "points.adjusted"))
    d = Dispatcher(shop.db, fast(), clock=clock)
    real, failures = d.fan_out, []

    async def flaky() -> int:
        if not failures:
            failures.append(1)
            raise ConnectionError("the database is restarting")
        return await real()

    d.fan_out = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    async with d:
        task = asyncio.create_task(d.run(stop=stop))
        for _ in range(200):
            if receiver.accepted():
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert failures and _ids(receiver.accepted()) == [f"evt_{event_id}"]
