"""The app factory: every controller, middleware and error mapping is assembled here and only here."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from litestar import Litestar, Request, get
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.stores.memory import MemoryStore

from api import context, logs, metrics, openapi, problems
from api.accounts import AccountController
from api.admin import AdminController, CardBatchController
from api.auth import KEY_CACHE_SECONDS, PUBLIC, ApiKeyAuthentication, KeyCache, Principal
from api.customer import CustomerController
from api.members_data import MembersDataController
from api.problems import redact_path
from api.programs import ProgramController
from api.shared import Shared, SharedRateLimitMiddleware, local_rate_limit_store, rate_limit_stores
from api.till import TillController
from api.value import CampaignController, CustomerValueController
from api.web import STATIC, TEMPLATES, WebController
from api.web_dashboard import DashboardController
from api.webhooks import WebhookController, WebhookDeliveryController
from loyalty.admin import access
from loyalty.cards.secrets import Secrets, load_secrets
from loyalty.storage.db import Database

#: Largest request body the API reads (a 1,000-line basket is about 150 kB).
MAX_BODY_BYTES = 1024 * 1024
#: Requests per second one API key (or, without a key, one address) may make: per worker process,
#: or for all workers together when they share Redis (LOYALTY_REDIS_URL).
DEFAULT_RATE_LIMIT = 200

#: How often expired rate-limit counters are dropped from memory.
SWEEP_SECONDS = 10.0

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@get("/health", operation_id="health", tags=["ops"], sync_to_thread=False, opt={PUBLIC: True})
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready", operation_id="ready", tags=["ops"], opt={PUBLIC: True})
async def ready(request: Request[Any, Any, Any]) -> dict[str, str]:
    """Readiness: the database answers and its schema is current; else a 503 problem saying why."""
    reason = await request.app.state.db.readiness()
    if reason is not None:
        raise problems.Problem(
            problems.UNAVAILABLE, reason, headers={"Retry-After": str(problems.RETRY_AFTER_SECONDS)}
        )
    return {"status": "ready"}


JSON_TYPES = ("application/json",)
#: Request headers a client may send once only: with two, which one counts would be a guess.
SINGLE_HEADERS = ("idempotency-key", "authorization", "content-type")


def _nul_at(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding a NUL character, else None. PostgreSQL cannot
    store NUL in text and SQLite would store it, so it is refused at the door on both."""
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return where
            found = _nul_at(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_at(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


async def _screen(request: Request[Any, Any, Any]) -> None:
    """What every request must be before a handler reads it: headers that count sent once, no NUL
    character anywhere in its text, and a JSON body declared as JSON (program documents take YAML)."""
    for name in SINGLE_HEADERS:
        values = request.headers.getall(name, [])
        # A proxy (or a test client) joins repeated headers into one, comma-separated: a comma in an
        # Idempotency-Key therefore means two keys, and which one counts would be a guess.
        if len(values) > 1 or (name == "idempotency-key" and values and "," in values[0]):
            raise problems.Problem(problems.BAD_REQUEST, f"send the {name.title()} header once")
    if "\x00" in request.url.path or "\x00" in request.url.query or "%00" in request.url.query:
        raise problems.Problem(problems.INVALID, "the address must not contain NUL characters")
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if not await request.body():  # bounded by request_max_body_size; whatever framing the client used
        return
    if request.route_handler.opt.get("document"):
        return  # YAML or JSON, read by the document loader (which refuses NUL itself)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise problems.Problem(problems.UNSUPPORTED, "send the body as application/json")
    try:
        body = await request.json()
    except Exception:
        raise problems.Problem(
            problems.BAD_REQUEST, "the body is not UTF-8 JSON, or it is nested too deeply"
        ) from None
    where = _nul_at(body)
    if where is not None:
        raise problems.Problem(
            problems.INVALID,
            f"{where}: text must not contain NUL characters",
            errors=[{"field": where, "source": "body", "message": "must not contain NUL characters"}],
        )


class RedactTokens(logging.Filter):
    """Keeps card tokens out of uvicorn's access log (its record's third argument is the path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True


def _redact_access_log() -> None:
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access_log.filters):
        access_log.addFilter(RedactTokens())


def _caller_identity(request: Request[Any, Any, Any]) -> str:
    """Whose budget a request spends: a key's own once that key has been verified (its token is in
    the key cache), else the client address's. An unverified token, forged or not, never counts
    against the key it names, and a flood of fake keys is limited like any other anonymous traffic."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    principal = request.app.state.authenticate.peek(token) if token else None
    if principal is not None:
        return f"key:{principal.key_id}"
    return f"addr:{request.client.host if request.client else 'unknown'}"


async def _sweep(store: MemoryStore) -> None:
    """Forget expired rate-limit counters now and then: the store drops them only when read again,
    so identities seen once (an address, say) would otherwise stay for the life of the process."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        await store.delete_expired()


def create_app(
    *,
    database_url: str | None = None,
    secrets: Secrets | None = None,
    clock: Clock = _utcnow,
    rate_limit: int | None = None,
    key_cache_seconds: float = KEY_CACHE_SECONDS,
    redis_url: str | None = None,
    redis_namespace: str | None = None,
) -> Litestar:
    """Build the app; it opens ``database_url`` (default LOYALTY_DATABASE_URL) when it starts, in the
    server's event loop, and reads the secrets file unless ``secrets`` are given. With ``redis_url``
    (default LOYALTY_REDIS_URL) its workers share rate limits and verified keys (``api/shared.py``)."""

    async def authenticate(token: str) -> Principal | None:
        key = await access.verify_key(app.state.db, token)
        return None if key is None else Principal(key.tenant_id, key.id, key.role, key.outlet_id)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.db = Database.from_url(database_url)
        if app.state.secrets is None:
            app.state.secrets = load_secrets()
        # With Redis the shared counters expire there; this process's own (the fallback) still need it.
        sweeper = asyncio.create_task(_sweep(local_rate_limit_store(app)))
        try:
            yield
        finally:
            sweeper.cancel()
            metrics.process_exit()
            await app.state.db.dispose()
            if shared is not None:
                await shared.close()

    _redact_access_log()
    logs.configure()
    shared = Shared.configure(redis_url, redis_namespace)
    limit = rate_limit or int(os.environ.get("LOYALTY_RATE_LIMIT", DEFAULT_RATE_LIMIT))
    app = Litestar(
        route_handlers=[
            health,
            ready,
            metrics.MetricsController,
            TillController,
            CustomerController,
            ProgramController,
            CustomerValueController,
            CampaignController,
            AdminController,
            AccountController,
            CardBatchController,
            MembersDataController,
            WebhookController,
            WebhookDeliveryController,
            DashboardController,
            WebController,
            STATIC,
        ],
        template_config=TEMPLATES,
        exception_handlers=problems.exception_handlers(),
        # What a handler may ask for by name: the database, the clock, the card-token keys, the caller.
        dependencies={
            "db": Provide(context.db_of, sync_to_thread=False),
            "now": Provide(context.now_of, sync_to_thread=False),
            "secrets": Provide(context.secrets_of, sync_to_thread=False),
            "principal": Provide(context.caller),
        },
        before_request=_screen,
        after_response=metrics.after_response,
        # Logging is api/logs.py's (JSON, request ids, redaction), not Litestar's default setup.
        logging_config=None,
        request_max_body_size=MAX_BODY_BYTES,
        lifespan=[lifespan],
        middleware=[
            metrics.prometheus_config().middleware,
            RateLimitConfig(
                rate_limit=("second", limit),
                identifier_for_request=_caller_identity,
                exclude=["/schema", "/health"],
                middleware_class=RateLimitMiddleware if shared is None else SharedRateLimitMiddleware,
            ).middleware,
            DefineMiddleware(ApiKeyAuthentication, exclude=["^/schema"], exclude_from_auth_key=PUBLIC),
        ],
        stores=rate_limit_stores(shared),
        openapi_config=OpenAPIConfig(
            title="loyalty",
            version="0.1.0",
            description="Till, customer, marketer and admin API of the loyalty engine. "
            "Errors are RFC 9457 problem JSON; till writes need an Idempotency-Key header.",
            render_plugins=[SwaggerRenderPlugin()],
            path="/schema",
        ),
    )
    openapi.document(app.openapi_schema)
    # Outside routing (as Litestar's own OpenTelemetry plugin wraps it), so that every request, a 404
    # of the router too, gets a request id and an access line.
    app.asgi_handler = logs.RequestLog(app.asgi_handler)
    app.state.db = None
    app.state.secrets = secrets
    app.state.clock = clock
    app.state.shared = shared
    app.state.authenticate = KeyCache(authenticate, ttl=key_cache_seconds, shared=shared)
    return app
