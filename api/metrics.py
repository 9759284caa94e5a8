"""Prometheus metrics at ``GET /metrics``: HTTP traffic by route, till writes, the database pool, and
the webhook dispatcher's backlog.

What a scrape shows (names as exposed):

- ``loyalty_http_requests_total`` and ``loyalty_http_request_duration_seconds`` (histogram), labelled
  ``method``, ``path`` (the route *template*, e.g. ``/v1/cards/{token}/balance``, never the path
  itself: card tokens are credentials, and raw paths are a label set any client could grow) and
  ``status_code``; ``loyalty_http_requests_error_total`` (5xx) and ``loyalty_http_requests_in_progress``.
  Litestar's Prometheus middleware writes them; a request that matches no route (a 404 or 405 of
  the router) never reaches it and is not counted.
- ``loyalty_till_writes_total{operation, outcome}``: till writes booked (posting, refund, redemption,
  cancellation). ``outcome="replayed"`` is a receipt (or refund, redemption) that was booked before
  and is answered again under a new Idempotency-Key; a retry with the *same* key is answered from the
  recorded response before anything is booked and is not counted here at all (it is in the HTTP
  counters).
- ``loyalty_db_pool_size``, ``loyalty_db_pool_connections`` (open), ``loyalty_db_pool_checked_out``:
  the SQLAlchemy pool of the API's engine, sampled after every request and at every scrape. On SQLite
  this is the readers' pool (its size is SQLAlchemy's default, 5, plus overflow); writes go through
  one writer connection of their own, not shown.
- ``loyalty_webhook_events_undispatched``, ``loyalty_webhook_deliveries_pending``,
  ``loyalty_webhook_oldest_event_seconds``, ``loyalty_webhook_oldest_delivery_seconds``,
  ``loyalty_webhook_backlog_capped{what}``: read from the database at scrape time (see
  :mod:`loyalty.events.backlog`), at most every :data:`BACKLOG_CACHE_SECONDS` per process.

Nothing is labelled by tenant, key, member or card: the page is the same whoever asks.

Several workers (``loyalty serve --workers N``) share one directory named by
``PROMETHEUS_MULTIPROC_DIR`` (the serve command sets it up): counters and histograms then sum over
every worker that ever ran, the pool gauges are ``livesum`` (summed over the workers alive now; a
worker removes its own at shutdown), and the backlog is read live by whichever worker answers.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from litestar import Request, get
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.response import Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import QueuePool

from api import problems
from api.auth import PUBLIC
from loyalty.events.backlog import Backlog, backlog
from loyalty.storage.db import Database, outage

log = logging.getLogger("api.metrics")

#: Latency buckets (seconds): a till write takes milliseconds, a report or an import seconds.
LATENCY_BUCKETS: list[str | float] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
#: How long one process reuses a backlog reading: scrapes (and anyone else asking for /metrics, within
#: the address's rate limit) cost the database at most one reading per process in this time.
BACKLOG_CACHE_SECONDS = 5.0
#: When set, /metrics wants ``Authorization: Bearer <this value>``; unset, it is public (it holds no
#: tenant's data), for a scraper on a private network.
TOKEN_ENV = "LOYALTY_METRICS_TOKEN"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Where the backlog reading waits for the next scrape, in the app's state.
_CACHE = "metrics.backlog"
#: The app-state key of the lock that lets one scrape at a time read the backlog.
_LOCK = "metrics.backlog_lock"

OPERATIONS = ("posting", "refund", "redemption", "cancellation")
TILL_WRITES = Counter(
    "loyalty_till_writes",
    "Till writes booked, by operation; outcome=replayed: booked before, answered again under a new key",
    ["operation", "outcome"],
)
for _operation in OPERATIONS:  # every series exists from the start, at 0, so rate() sees the first one
    for _outcome in ("booked", "replayed"):
        TILL_WRITES.labels(_operation, _outcome)

POOL_SIZE = Gauge(
    "loyalty_db_pool_size",
    "Connections the database pool keeps (per process, summed)",
    multiprocess_mode="livesum",
)
POOL_OPEN = Gauge(
    "loyalty_db_pool_connections", "Database connections open in the pool", multiprocess_mode="livesum"
)
POOL_CHECKED_OUT = Gauge(
    "loyalty_db_pool_checked_out", "Database connections lent to a request now", multiprocess_mode="livesum"
)


def prometheus_config() -> PrometheusConfig:
    """Litestar's Prometheus middleware, labelled by route template (``group_path``)."""
    return PrometheusConfig(
        app_name="loyalty", prefix="loyalty_http", group_path=True, buckets=LATENCY_BUCKETS
    )


def booked(operation: str, *, replayed: bool = False) -> None:
    """Count one till write that a handler has just answered."""
    TILL_WRITES.labels(operation, "replayed" if replayed else "booked").inc()


def sample_pool(db: Database | None) -> None:
    """Copy the pool's figures into the gauges (cheap: three counters SQLAlchemy keeps anyway)."""
    pool = db.engine.sync_engine.pool if db is not None else None
    if not isinstance(pool, QueuePool):  # a static or null pool keeps no figures
        return
    POOL_SIZE.set(pool.size())
    POOL_CHECKED_OUT.set(pool.checkedout())
    POOL_OPEN.set(pool.checkedin() + pool.checkedout())


def after_response(request: Request[Any, Any, Any]) -> None:
    """The app's ``after_response`` hook: the pool as this request left it."""
    sample_pool(request.app.state.db)


def process_exit() -> None:
    """A worker going away drops its live gauges from the shared directory (counters stay)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class _BacklogCollector(Collector):
    """The backlog reading of this scrape, as gauges."""

    def __init__(self, reading: Backlog) -> None:
        self.reading = reading

    def collect(self) -> Iterator[Metric]:
        b = self.reading
        yield GaugeMetricFamily(
            "loyalty_webhook_events_undispatched",
            "Events not yet fanned out into deliveries (capped)",
            b.undispatched_events,
        )
        yield GaugeMetricFamily(
            "loyalty_webhook_deliveries_pending",
            "Webhook deliveries not yet delivered or dead (capped)",
            b.pending_deliveries,
        )
        yield GaugeMetricFamily(
            "loyalty_webhook_oldest_event_seconds",
            "Age of the oldest undispatched event",
            b.oldest_event_seconds,
        )
        yield GaugeMetricFamily(
            "loyalty_webhook_oldest_delivery_seconds",
            "Age of the oldest pending delivery",
            b.oldest_delivery_seconds,
        )
        capped = GaugeMetricFamily(
            "loyalty_webhook_backlog_capped", "1 when a backlog count stopped at its cap", labels=["what"]
        )
        capped.add_metric(["events"], float(b.events_capped))
        capped.add_metric(["deliveries"], float(b.deliveries_capped))
        yield capped


def _recent(request: Request[Any, Any, Any]) -> Backlog | None:
    cached = request.app.state.get(_CACHE)
    if cached is not None and time.monotonic() - cached[0] < BACKLOG_CACHE_SECONDS:
        reading: Backlog = cached[1]
        return reading
    return None


async def _backlog(request: Request[Any, Any, Any]) -> Backlog | None:
    """This process's latest reading if recent, else a new one; None while the database is away.
    One scrape at a time reads the database (the others wait for its reading): /metrics is public,
    and a flood of scrapes must not take the pool's connections from the tills."""
    reading = _recent(request)
    if reading is not None:
        return reading
    lock = request.app.state.get(_LOCK)
    if lock is None:
        lock = request.app.state[_LOCK] = asyncio.Lock()
    async with lock:
        return _recent(request) or await _read_backlog(request)


async def _read_backlog(request: Request[Any, Any, Any]) -> Backlog | None:
    try:
        reading = await backlog(request.app.state.db, now=request.app.state.clock())
    except Exception as exc:
        reason = outage(exc)
        if reason is None:
            raise
        log.warning("webhook backlog not read: %s", reason)
        return None
    request.app.state[_CACHE] = (time.monotonic(), reading)
    return reading


def _authorized(request: Request[Any, Any, Any]) -> bool:
    expected = os.environ.get(TOKEN_ENV)
    if not expected:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


class MetricsController(PrometheusController):
    """``GET /metrics`` in Prometheus' text format: the process's (or, with several workers, every
    worker's) registry, then this scrape's backlog reading."""

    path = "/metrics"

    @get(opt={PUBLIC: True}, include_in_schema=False, operation_id="metrics")
    async def get(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        if not _authorized(request):
            raise problems.Problem(problems.UNAUTHORIZED, f"send Authorization: Bearer <{TOKEN_ENV}>")
        sample_pool(request.app.state.db)
        registry = REGISTRY
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
        reading = await _backlog(request)
        if reading is not None:
            live = CollectorRegistry(auto_describe=True)
            live.register(_BacklogCollector(reading))
            body += generate_latest(live)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
