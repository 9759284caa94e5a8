"""The dispatcher: fans the outbox out into deliveries and sends them as signed Standard Webhooks.

Two loops share one :class:`Dispatcher` (``loyalty dispatch``, ``loyalty serve --dispatch``):

**Fan-out.** Undispatched events are taken in id order, :attr:`Settings.fan_out_batch` at a time
(on PostgreSQL ``FOR UPDATE SKIP LOCKED``, so two dispatchers share the work; SQLite serialises its
writers anyway). Each gets one delivery per *active* endpoint of its tenant whose filter takes its
type, and is marked dispatched, all in one transaction per batch. An endpoint takes the events that
occurred from its creation on: a backlog not yet fanned out when it was created is not sent to it.
A disabled endpoint gets no new deliveries.

**Delivery.** Per (endpoint, member) only the oldest pending delivery is attempted, so each member's
events arrive in order and one failing member does not hold up the others. Due heads are claimed in
batches by moving ``next_attempt_at`` past a lease: a dispatcher killed mid-delivery leaves them due
again once the lease runs out, and they are sent again (at-least-once; receivers drop repeats by
``webhook-id``). Requests go out concurrently (:attr:`Settings.concurrency`) over one kept-alive
``httpx.AsyncClient`` (on :class:`~loyalty.events.transport.PinnedTransport`, which connects to the
addresses the guard checked); redirects are not followed (a 3xx is a failure), the answer's body is
read only up to :data:`BODY_CAP`. A 2xx marks the delivery delivered; anything else schedules a retry
with exponential backoff and full jitter (:class:`RetryPolicy`) until the delivery is older than
the give-up age, then it is ``dead`` (redelivered by hand: :func:`loyalty.events.endpoints.redeliver`).
Every attempt is written to ``webhook_attempts``. The guard checks the target's addresses again
before each attempt (a host's verdict is cached for seconds, see :mod:`loyalty.events.guard`).
Deliveries of a disabled endpoint are not claimed: they wait until it is enabled.

Memory stays flat however long the backlog: only a batch of events and the deliveries in flight are
ever held.

**What a receiver gets.** ``POST`` with ``content-type: application/json`` and the headers
``webhook-id`` (``evt_<event id>``: the same on every retry and for every endpoint),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature`` (``v1,<base64>``;
after a rotation two, space-separated, the new secret's first, while the old one still signs). The
body is the JSON object::

    {"id": "evt_42", "type": "purchase.posted", "version": 1,
     "timestamp": "2026-03-01T10:15:00+00:00", "member_id": 7, "data": {...}}

``timestamp`` is when the event occurred; ``data`` follows the type's schema in
:data:`loyalty.storage.outbox.CATALOGUE` at ``version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Table, and_, bindparam, insert, literal_column, select, text, update
from sqlalchemy.orm import aliased
from standardwebhooks.webhooks import Webhook

from loyalty.events.endpoints import webhook_id
from loyalty.events.guard import Guard, UnsafeTarget
from loyalty.events.transport import PinnedTransport
from loyalty.storage.db import Database
from loyalty.storage.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger("loyalty.events")

#: Most bytes of an answer's body read (the rest is dropped with the connection): a receiver's
#: answer means nothing to us beyond its status, and an endless body must not hold a worker.
BODY_CAP = 4096
#: Longest error text kept per attempt (the column's width).
MAX_ERROR = 500
USER_AGENT = "loyalty-webhooks/1"
#: Deliveries a dispatcher fans out between two ``ANALYZE webhook_deliveries`` (PostgreSQL). A bulk
#: fan-out outruns autovacuum's analyze, and with the statistics of a near-empty table the claim is
#: planned as a sort of every pending row (measured: 18 ms per claim at 4,000 pending, growing with
#: the backlog) instead of a walk of the pending index that stops after a batch (about 1 ms).
ANALYZE_EVERY = 5_000
#: How long a running dispatcher waits after a failure (a database outage) before it tries again.
PAUSE_SECONDS = 5.0

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: the n-th retry waits a random time between 0 and
    ``min(cap, first * 2**(n-1))``, so receivers coming back from an outage are not hit by every
    dispatcher at once. A delivery still failing ``give_up_after`` its creation is dead."""

    first: timedelta = timedelta(seconds=5)
    cap: timedelta = timedelta(hours=1)
    give_up_after: timedelta = timedelta(hours=24)

    def ceiling(self, attempts: int) -> timedelta:
        """The longest wait after ``attempts`` failed attempts."""
        exponent = min(max(attempts - 1, 0), 40)  # 2**40 x 5 s is far past any cap
        ceiling: timedelta = min(self.cap, self.first * (2**exponent))
        return ceiling

    def delay(self, attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
        return self.ceiling(attempts) * rng()


@dataclass(frozen=True)
class Settings:
    """How the dispatcher works; every figure is injectable so that tests run in seconds."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Events fanned out per transaction.
    fan_out_batch: int = 500
    #: Requests in flight at once.
    concurrency: int = 64
    #: Most heads claimed per round trip.
    claim_batch: int = 256
    #: How long a claimed delivery is not due for anyone else: longer than a request may take
    #: (``request_timeout``) plus the wait for its result to be written.
    lease: timedelta = timedelta(seconds=60)
    #: Attempt outcomes written per transaction (fewer when nothing else is in flight).
    flush_batch: int = 200
    #: How often the loops look for new work when there was none.
    poll_seconds: float = 1.0
    connect_timeout: float = 5.0
    #: The whole request, connect to the last byte read.
    request_timeout: float = 10.0
    #: Whether private and loopback targets are allowed (an operator's setting, never a tenant's).
    allow_private: bool | None = None


@dataclass
class Stats:
    fanned_out: int = 0
    deliveries_created: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    tenant_id: int
    attempts: int
    created_at: datetime
    url: str
    secrets: tuple[str, ...]
    webhook_id: str
    body: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    claimed: _Claimed
    at: datetime
    status: int | None
    latency_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error is None


def body_of(event_id: int, type: str, version: int, occurred_at: datetime, member_id: int, data: Any) -> str:
    """The JSON a receiver gets for one event (see the module docstring)."""
    return json.dumps(
        {
            "id": webhook_id(event_id),
            "type": type,
            "version": version,
            "timestamp": occurred_at.astimezone(UTC).isoformat(),
            "member_id": member_id,
            "data": data,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


class Dispatcher:
    """One dispatcher process's work: use as ``async with Dispatcher(db) as d: await d.run()``."""

    def __init__(
        self,
        db: Database,
        settings: Settings | None = None,
        *,
        clock: Clock = _utcnow,
        guard: Guard | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.db = db
        self.settings = settings or Settings()
        self.clock = clock
        self.guard = guard or Guard(allow_private=self.settings.allow_private)
        self.rng = rng
        self.stats = Stats()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._signers: dict[str, Webhook] = {}
        self._unanalyzed = 0

    async def __aenter__(self) -> Dispatcher:
        s = self.settings
        self._client = httpx.AsyncClient(
            transport=self._transport
            or PinnedTransport(self.guard, connect_timeout=s.connect_timeout, body_cap=BODY_CAP),
            timeout=httpx.Timeout(s.request_timeout, connect=s.connect_timeout),
            limits=httpx.Limits(max_connections=s.concurrency, max_keepalive_connections=s.concurrency),
            follow_redirects=False,
            # Proxies from the environment would send our requests somewhere the guard never saw.
            trust_env=False,
            headers={"user-agent": USER_AGENT},
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- the loops ----------------------------------------------------------------------------------------

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None) -> Stats:
        """Fan out and deliver until ``stop`` is set; with ``once``, until nothing is left to fan out
        and nothing is due now (deliveries waiting for a retry stay pending)."""
        stop = stop or asyncio.Event()
        fanned_all = asyncio.Event()

        async def fan_out_loop() -> None:
            while not stop.is_set():
                try:
                    taken = await self.fan_out()
                except Exception:
                    if once:
                        raise
                    taken = await self._pause("fan-out", stop)
                if taken < self.settings.fan_out_batch:
                    fanned_all.set()
                    if once:
                        return
                    await _wait(stop, self.settings.poll_seconds)

        async def deliver_loop() -> None:
            while not stop.is_set():
                finished_fanning = fanned_all.is_set()
                try:
                    sent = await self.deliver_due(stop)
                except Exception:
                    if once:
                        raise
                    sent = await self._pause("delivery", stop)
                if once and finished_fanning and not sent:
                    return
                if not sent:
                    await _wait(stop, self.settings.poll_seconds if not once else 0.05)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fan_out_loop())
            tasks.create_task(deliver_loop())
        return self.stats

    async def _pause(self, what: str, stop: asyncio.Event) -> int:
        """A long-running dispatcher outlives a database restart: log, wait, and carry on (what was
        claimed is sent again once its lease runs out)."""
        log.exception("webhook %s failed; trying again in %.0f s", what, PAUSE_SECONDS)
        await _wait(stop, PAUSE_SECONDS)
        return 0

    async def fan_out(self) -> int:
        """One batch of undispatched events into deliveries; how many events it took."""
        now = self.clock()
        query = (
            select(Event.id, Event.tenant_id, Event.member_id, Event.type, Event.occurred_at)
            .where(text("NOT dispatched"))  # the partial index's own predicate
            .order_by(Event.id)
            .limit(self.settings.fan_out_batch)
        )
        if self.db.is_postgresql:
            query = query.with_for_update(skip_locked=True)
        async with self.db.write() as s:
            events = (await s.execute(query)).all()
            if not events:
                return 0
            tenant_ids = {e.tenant_id for e in events}
            endpoints = (
                await s.execute(
                    select(
                        WebhookEndpoint.id,
                        WebhookEndpoint.tenant_id,
                        WebhookEndpoint.event_types,
                        WebhookEndpoint.created_at,
                    ).where(
                        WebhookEndpoint.tenant_id.in_(tenant_ids),
                        WebhookEndpoint.state == literal_column("'active'"),
                    )
                )
            ).all()
            by_tenant: dict[int, list[Any]] = {}
            for e in endpoints:
                by_tenant.setdefault(e.tenant_id, []).append(e)
            rows = [
                {
                    "tenant_id": ev.tenant_id,
                    "endpoint_id": ep.id,
                    "event_id": ev.id,
                    "member_id": ev.member_id,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for ev in events
                for ep in by_tenant.get(ev.tenant_id, ())
                if (not ep.event_types or ev.type in ep.event_types) and ev.occurred_at >= ep.created_at
            ]
            if rows:
                await s.execute(insert(WebhookDelivery), rows)
            await s.execute(
                update(Event)
                .where(Event.id.in_([e.id for e in events]))
                .values(dispatched=True)
                .execution_options(synchronize_session=False)
            )
        self.stats.fanned_out += len(events)
        self.stats.deliveries_created += len(rows)
        self._unanalyzed += len(rows)
        caught_up = len(events) < self.settings.fan_out_batch and self._unanalyzed >= ANALYZE_EVERY // 10
        if self.db.is_postgresql and (self._unanalyzed >= ANALYZE_EVERY or caught_up):
            self._unanalyzed = 0
            async with self.db.write() as s:
                await s.execute(text("ANALYZE webhook_deliveries"))
        return len(events)

    async def deliver_due(self, stop: asyncio.Event | None = None) -> int:
        """Send what is due until nothing more is (or ``stop`` is set); how many attempts were made.

        Claims are topped up as requests finish and outcomes are written in batches, so the
        pipeline stays full; a member's next event becomes due once its head's outcome is written.
        """
        s = self.settings
        in_flight: set[asyncio.Task[_Outcome]] = set()
        outcomes: list[_Outcome] = []
        attempts = 0
        exhausted = False
        try:
            while True:
                free = s.concurrency - len(in_flight)
                stopping = stop is not None and stop.is_set()
                # Top up by half the window at a time: claims and writes in batches, not one by one.
                if not stopping and not exhausted and (free >= max(1, s.concurrency // 2) or not in_flight):
                    if outcomes:  # let the members of finished heads move on before claiming
                        await self._flush(outcomes)
                        outcomes = []
                    claimed = await self._claim(min(free, s.claim_batch))
                    exhausted = not claimed
                    for c in claimed:
                        in_flight.add(asyncio.create_task(self._send(c)))
                if not in_flight:
                    if outcomes:
                        await self._flush(outcomes)
                        outcomes = []
                        exhausted = False  # written heads may have made their successors due
                        continue
                    return attempts
                done, _ = await asyncio.wait(in_flight, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    in_flight.discard(task)
                    outcomes.append(task.result())
                    attempts += 1
                # Written soon when nothing more is claimable: the members' next events wait on them.
                if outcomes and (len(outcomes) >= s.flush_batch or exhausted):
                    await self._flush(outcomes)
                    outcomes = []
                    exhausted = False
        except BaseException:
            # Cancelled (or failed): what was sent is not recorded, the leases run out and it is
            # sent again by whoever comes next.
            for task in in_flight:
                task.cancel()
            raise

    # -- claim, send, record ------------------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[_Claimed]:
        now = self.clock()
        d = aliased(WebhookDelivery, name="d")
        older = aliased(WebhookDelivery, name="older")
        pending: Any = literal_column("'pending'")  # a literal, so the partial index matches
        query = (
            select(
                d.id,
                d.tenant_id,
                d.attempts,
                d.created_at,
                d.member_id,
                WebhookEndpoint.url,
                WebhookEndpoint.secret,
                WebhookEndpoint.previous_secret,
                WebhookEndpoint.previous_until,
                Event.id.label("event_id"),
                Event.type,
                Event.version,
                Event.occurred_at,
                Event.data,
            )
            .select_from(d)
            .join(
                WebhookEndpoint,
                and_(
                    WebhookEndpoint.id == d.endpoint_id,
                    WebhookEndpoint.state == literal_column("'active'"),
                ),
            )
            .join(Event, Event.id == d.event_id)
            .where(
                d.state == pending,
                d.next_attempt_at <= now,
                # The head of its (endpoint, member) queue. A correlated lookup of the first pending
                # event, rather than NOT EXISTS: with stale statistics (a table that was empty at
                # the last ANALYZE and now holds the backlog) PostgreSQL planned the anti-join as a
                # scan of every pending row per candidate, one second per claim at 4,000 rows.
                d.event_id
                == select(older.event_id)
                .where(
                    older.endpoint_id == d.endpoint_id,
                    older.member_id == d.member_id,
                    older.state == pending,
                )
                .order_by(older.event_id)
                .limit(1)
                .scalar_subquery(),
            )
            # In the pending index's order: the scan walks pending rows only (however many were
            # delivered before) and stops at ``limit`` heads.
            .order_by(d.endpoint_id, d.member_id, d.event_id)
            .limit(limit)
        )
        if self.db.is_postgresql:
            query = query.with_for_update(of=d, skip_locked=True)
        async with self.db.write() as s:
            rows = (await s.execute(query)).all()
            if not rows:
                return []
            await s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_([r.id for r in rows]))
                .values(next_attempt_at=now + self.settings.lease)
                .execution_options(synchronize_session=False)
            )
        return [
            _Claimed(
                r.id,
                r.tenant_id,
                r.attempts,
                r.created_at,
                r.url,
                (r.secret, r.previous_secret)
                if r.previous_secret and r.previous_until is not None and r.previous_until > now
                else (r.secret,),
                webhook_id(r.event_id),
                body_of(r.event_id, r.type, r.version, r.occurred_at, r.member_id, r.data),
            )
            for r in rows
        ]

    def _signature(self, c: _Claimed, at: datetime) -> str:
        signatures = []
        for secret in c.secrets:
            signer = self._signers.get(secret)
            if signer is None:
                if len(self._signers) > 10_000:
                    self._signers.clear()
                signer = self._signers[secret] = Webhook(secret)
            signatures.append(signer.sign(c.webhook_id, at, c.body))
        return " ".join(signatures)

    async def _send(self, c: _Claimed) -> _Outcome:
        assert self._client is not None, "use the dispatcher as an async context manager"
        at = self.clock()
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            await self.guard.check(c.url, cached=True)
            headers = {
                "content-type": "application/json",
                "webhook-id": c.webhook_id,
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": self._signature(c, at),
            }
            async with asyncio.timeout(self.settings.request_timeout):
                async with self._client.stream("POST", c.url, content=c.body.encode(), headers=headers) as r:
                    status = r.status_code
                    answer = await _read_capped(r)
            if 300 <= status < 400:
                error = f"redirect refused (HTTP {status} to {r.headers.get('location', '?')})"
            elif not 200 <= status < 300:
                error = f"HTTP {status}" + (f": {answer}" if answer else "")
        except UnsafeTarget as exc:
            error = f"refused: {exc}"
        except (TimeoutError, httpx.TimeoutException):
            error = f"timeout after {time.perf_counter() - started:.1f} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency = round((time.perf_counter() - started) * 1000)
        return _Outcome(c, at, status, latency, error[:MAX_ERROR] if error else None)

    async def _flush(self, outcomes: list[_Outcome]) -> None:
        """Write the outcomes: delivered, retry later, or dead; and every attempt."""
        retry = self.settings.retry
        updates = []
        for o in outcomes:
            c, attempts = o.claimed, o.claimed.attempts + 1
            if o.ok:
                state, next_at, delivered_at = "delivered", o.at, o.at
                self.stats.delivered += 1
            elif o.at - c.created_at >= retry.give_up_after:
                state, next_at, delivered_at = "dead", o.at, None
                self.stats.dead += 1
                log.warning("webhook delivery %s is dead after %s attempts: %s", c.id, attempts, o.error)
            else:
                state, next_at, delivered_at = "pending", o.at + retry.delay(attempts, self.rng), None
                self.stats.failed += 1
            updates.append(
                {
                    "b_id": c.id,
                    "b_state": state,
                    "b_attempts": attempts,
                    "b_next": next_at,
                    "b_at": o.at,
                    "b_status": o.status,
                    "b_error": o.error,
                    "b_delivered": delivered_at,
                }
            )
        table = cast(Table, WebhookDelivery.__table__)
        async with self.db.write() as s:
            # Only while still pending: a delivery another dispatcher finished meanwhile (its lease
            # ran out under us) keeps that dispatcher's outcome.
            await s.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.state == literal_column("'pending'"))
                .values(
                    state=bindparam("b_state"),
                    attempts=bindparam("b_attempts"),
                    next_attempt_at=bindparam("b_next"),
                    last_attempt_at=bindparam("b_at"),
                    last_status=bindparam("b_status"),
                    last_error=bindparam("b_error"),
                    delivered_at=bindparam("b_delivered"),
                ),
                updates,
            )
            await s.execute(
                insert(WebhookAttempt),
                [
                    {
                        "tenant_id": o.claimed.tenant_id,
                        "delivery_id": o.claimed.id,
                        "at": o.at,
                        "status": o.status,
                        "latency_ms": o.latency_ms,
                        "error": o.error,
                    }
                    for o in outcomes
                ],
            )


async def _read_capped(response: httpx.Response) -> str:
    """At most :data:`BODY_CAP` bytes of the answer, as text for the log."""
    read = b""
    async for chunk in response.aiter_raw():
        read += chunk
        if len(read) >= BODY_CAP:
            break
    return read[:200].decode("utf-8", "replace").strip()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
