"""Webhook test plumbing: a real HTTP receiver on loopback, a clock the test moves, and tenants with
members whose events the tests write straight into the outbox.

The storage fixtures (one event loop for the session, a Database on SQLite and on PostgreSQL) are
those of ``tests/storage``; the app and its two tenants those of ``tests/api``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import insert, update

from loyalty.admin import tenants
from loyalty.events import endpoints
from loyalty.events.dispatcher import Dispatcher, RetryPolicy, Settings
from loyalty.events.guard import Guard
from loyalty.members import membership
from loyalty.storage import outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Event, WebhookEndpoint
from tests.api import conftest as _api
from tests.storage import conftest as _storage

# The storage tests' event loop, databases and async test runner; the API tests' app and tenants.
runner = _storage.runner
db = _storage.db
_dispose = _storage._dispose
pytest_pyfunc_call = _storage.pytest_pyfunc_call
api = _api.api
secrets = _api.secrets

#: Answer of a receiver's ``respond`` that makes it hold the request until released.
HANG = -1


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 in its own threads: records every request, answers ``respond``."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    respond: Callable[[Received], int] = lambda _r: 200
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def log(self) -> list[tuple[Received, bool]]:
        """Every request with whether it was answered 2xx, in the order they came."""
        with self.lock:
            return list(zip(self.requests, self._ok, strict=True))

    def accepted(self) -> list[Received]:
        """The requests answered 2xx, in the order they came."""
        with self.lock:
            return [r for r, ok in zip(self.requests, self._ok, strict=True) if ok]

    _ok: list[bool] = field(default_factory=list)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the dispatcher's client expects

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            status = receiver.respond(request)
            if status == HANG:
                receiver.release.wait(30)
                status = 200
            with receiver.lock:
                receiver.requests.append(request)
                receiver._ok.append(200 <= status < 300)
            answer = b"ok" if status < 400 else b"receiver says no"
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("location", "/elsewhere")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_proxy(holder))
    server.daemon_threads = True
    r = Receiver(server)
    holder.append(r)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.release.set()
        server.shutdown()
        server.server_close()


def _handler_proxy(holder: list[Receiver]) -> Any:
    def make(*args: Any) -> BaseHTTPRequestHandler:
        return _handler(holder[0])(*args)

    return make


class Clock:
    """A clock the test moves by hand (starts at the real time, so signatures' timestamps verify)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


_counter = itertools.count(1)


@dataclass
class Shop:
    """A tenant with members; its endpoints are disabled when the test ends, so that no later test's
    dispatcher (the databases are shared) tries them."""

    db: Database
    tenant_id: int
    members: list[int]
    clock: Clock
    created: list[int] = field(default_factory=list)

    async def endpoint(self, url: str, types: list[str] | None = None) -> endpoints.NewSecret:
        new = await endpoints.create_endpoint(
            self.db,
            self.tenant_id,
            url,
            event_types=types,
            actor="test",
            now=self.clock(),
            guard=Guard(allow_private=True),
        )
        self.created.append(new.endpoint.id)
        return new

    async def events(self, *spec: tuple[int, str], at: datetime | None = None) -> list[int]:
        """One event per (member index, type), in order; their ids."""
        at = at or self.clock()
        rows = [
            outbox.row(self.tenant_id, self.members[m], t, _data(t, n), at=at + timedelta(microseconds=n))
            for n, (m, t) in enumerate(spec)
        ]
        async with self.db.write() as s:
            ids = (await s.scalars(insert(Event).returning(Event.id), rows)).all()
        return sorted(ids)


def _data(type: str, n: int) -> dict[str, Any]:
    if type == "points.adjusted":
        return {"adjustment_id": n, "points": 10 + n, "reason": "test"}
    if type == "tier.changed":
        return {"from_tier": None, "to_tier": "silver", "reason": "earn", "qualifying": 1000 + n}
    if type == "member.consent_changed":
        return {"marketing": n % 2 == 0, "source": "test"}
    raise AssertionError(type)


async def make_shop(db: Database, clock: Clock, members: int = 3) -> Shop:
    n = next(_counter)
    code = f"wh{n}-{id(db) % 10_000}-{datetime.now().timestamp():.6f}"
    t = await tenants.create_tenant(db, code=code, name=f"Webhooks {n}", card_prefix="61", now=clock())
    ids = [(await membership.create_member(db, t.id, now=clock())).id for _ in range(members)]
    return Shop(db, t.id, ids, clock)


@pytest.fixture
def shop(db: Database, clock: Clock, runner: asyncio.Runner) -> Iterator[Shop]:
    s = runner.run(make_shop(db, clock))
    yield s
    if s.created:

        async def quiet() -> None:
            async with db.write() as session:
                await session.execute(
                    update(WebhookEndpoint).where(WebhookEndpoint.id.in_(s.created)).values(state="disabled")
                )

        runner.run(quiet())


def fast(**overrides: Any) -> Settings:
    """Settings for tests: short backoff, small batches, quick polling, loopback allowed."""
    base: dict[str, Any] = {
        "retry": RetryPolicy(
            first=timedelta(seconds=5), cap=timedelta(minutes=10), give_up_after=timedelta(hours=24)
        ),
        "fan_out_batch": 7,
        "claim_batch": 5,
        "concurrency": 4,
        "flush_batch": 3,
        "poll_seconds": 0.05,
        "request_timeout": 5.0,
        "allow_private": True,
    }
    return Settings(**{**base, **overrides})


async def dispatch_once(db: Database, clock: Clock, **overrides: Any) -> Dispatcher:
    async with Dispatcher(db, fast(**overrides), clock=clock, rng=lambda: 1.0) as d:
        await d.run(once=True)
    return d
