"""The app factory: every controller, middleware and error mapping is assembled here and only here."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from litestar import Litestar, Request, get
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.stores.memory import MemoryStore

from api import openapi, problems
from api.admin import AdminController, CardBatchController
from api.auth import KEY_CACHE_SECONDS, KeyCache, Principal
from api.customer import CustomerController
from api.programs import ProgramController
from api.till import TillController
from api.web import STATIC, TEMPLATES, WebController
from api.web_dashboard import DashboardController
from loyalty import access
from loyalty.db import Database
from loyalty.secrets import Secrets, load_secrets

#: Largest request body the API reads (a 1,000-line basket is about 150 kB).
MAX_BODY_BYTES = 1024 * 1024
#: Requests per second one API key (or, without a key, one address) may make, per worker process.
DEFAULT_RATE_LIMIT = 200

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@get("/health", operation_id="health", tags=["ops"], sync_to_thread=False)
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


JSON_TYPES = ("application/json",)


async def _require_json(request: Request[Any, Any, Any]) -> None:
    """A body sent to a JSON endpoint must say it is JSON (program documents take YAML too)."""
    if request.method not in ("POST", "PUT", "PATCH") or request.route_handler.opt.get("document"):
        return
    if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
        return
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise problems.Problem(problems.UNSUPPORTED, "send the body as application/json")


def _caller_identity(request: Request[Any, Any, Any]) -> str:
    """Rate limits count per API key (its public id), else per client address."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    parsed = access.parse_token(token)
    if parsed is not None:
        return f"key:{parsed[0]}"
    return f"addr:{request.client.host if request.client else 'unknown'}"


def create_app(
    *,
    database_url: str | None = None,
    secrets: Secrets | None = None,
    clock: Clock = _utcnow,
    rate_limit: int | None = None,
    key_cache_seconds: float = KEY_CACHE_SECONDS,
) -> Litestar:
    """Build the app; it opens ``database_url`` (default LOYALTY_DATABASE_URL) when it starts, in the
    server's event loop, and reads the secrets file unless ``secrets`` are given."""

    async def authenticate(token: str) -> Principal | None:
        key = await access.verify_key(app.state.db, token)
        return None if key is None else Principal(key.tenant_id, key.id, key.role, key.outlet_id)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.db = Database.from_url(database_url)
        if app.state.secrets is None:
            app.state.secrets = load_secrets()
        try:
            yield
        finally:
            await app.state.db.dispose()

    limit = rate_limit or int(os.environ.get("LOYALTY_RATE_LIMIT", DEFAULT_RATE_LIMIT))
    app = Litestar(
        route_handlers=[
            health,
            TillController,
            CustomerController,
            ProgramController,
            AdminController,
            CardBatchController,
            DashboardController,
            WebController,
            STATIC,
        ],
        template_config=TEMPLATES,
        exception_handlers={Exception: problems.handle},
        before_request=_require_json,
        request_max_body_size=MAX_BODY_BYTES,
        lifespan=[lifespan],
        middleware=[
            RateLimitConfig(
                rate_limit=("second", limit),
                identifier_for_request=_caller_identity,
                exclude=["/schema", "/health"],
            ).middleware
        ],
        stores={"rate_limit": MemoryStore()},
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
    app.state.db = None
    app.state.secrets = secrets
    app.state.clock = clock
    app.state.authenticate = KeyCache(authenticate, ttl=key_cache_seconds)
    return app
