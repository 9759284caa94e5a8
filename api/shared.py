"""What the API's worker processes share through Redis when ``LOYALTY_REDIS_URL`` is set: rate-limit
counters (so a limit holds for the sum of all workers and hosts) and verified keys (``api/auth.py``).

Without the variable nothing here is used: each worker keeps its own counters and keys, as before.

When Redis fails at request time the API keeps serving tills: this worker counts the limits itself
(a limit then holds per worker again) and verifies keys against the database, trusting a verified
key for at most ``auth.LOCAL_KEY_SECONDS``, so a revocation still lands within a second. It logs one
warning when Redis goes away and one line when it is back, and tries Redis again every
``RETRY_SECONDS`` rather than on every request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from litestar import Litestar, Request
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitMiddleware
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from litestar.types import Receive, Scope, Send
from redis.asyncio import Redis
from redis.exceptions import RedisError

from loyalty.admin import shared_keys

log = logging.getLogger(__name__)

T = TypeVar("T")

#: After Redis failed, this worker manages alone for this long before it asks Redis again: one slow
#: connect per interval instead of one per request while Redis is away.
RETRY_SECONDS = 2.0
#: The store the rate limiter counts in (Litestar's name for it).
RATE_LIMIT_STORE = "rate_limit"
#: This process's own counters: the only store without Redis, the fallback with it.
LOCAL_RATE_LIMIT_STORE = "rate_limit_local"

#: Take one request from a budget in one step (so two workers can never both take the last one):
#: the window starts with its first request and lasts ARGV[2] ms; a full budget takes nothing.
#: Returns {taken (0/1), requests counted in the window, ms until the window ends}.
_TAKE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  return {0, n, redis.call('PTTL', KEYS[1])}
end
if n == 0 then
  redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
  return {1, 1, tonumber(ARGV[2])}
end
return {1, redis.call('INCR', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""


class SharedUnavailable(Exception):
    """Redis is not configured, failed just now, or failed less than RETRY_SECONDS ago."""


class Shared:
    """This worker's connection to the shared Redis, and whether to use it right now."""

    def __init__(self, client: Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._retry_at = 0.0
        self._down = False

    @classmethod
    def configure(cls, url: str | None = None, namespace: str | None = None) -> Shared | None:
        """The shared Redis of ``url`` (default ``LOYALTY_REDIS_URL``); None when none is configured.
        Nothing connects yet: the first request does, in the server's event loop."""
        where = shared_keys.redis_url(url)
        if where is None:
            return None
        return cls(shared_keys.connect(where), shared_keys.namespace(namespace))

    async def call(self, operation: Callable[[Redis], Awaitable[T]], *, always: bool = False) -> T:
        """Run ``operation`` on Redis; :class:`SharedUnavailable` if Redis is down (or was, lately,
        unless ``always``: a revocation is rare and worth a try whenever it happens)."""
        if not always and time.monotonic() < self._retry_at:
            raise SharedUnavailable("Redis failed moments ago")
        try:
            result = await operation(self.client)
        except (RedisError, OSError) as exc:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            if not self._down:
                self._down = True
                log.warning(
                    "Redis unreachable (%s: %s): this worker limits requests on its own and verifies "
                    "keys against the database until it is back",
                    type(exc).__name__,
                    exc,
                )
            raise SharedUnavailable(str(exc)) from exc
        if self._down:
            self._down = False
            log.warning("Redis reachable again: rate limits and verified keys are shared once more")
        return result

    async def close(self) -> None:
        await self.client.aclose()


def rate_limit_stores(shared: Shared | None) -> dict[str, Store]:
    """The rate limiter's stores: this process's memory alone without Redis; with it, Redis (under
    ``<namespace>:ratelimit``) and the memory to fall back on."""
    if shared is None:
        return {RATE_LIMIT_STORE: MemoryStore()}
    return {
        RATE_LIMIT_STORE: RedisStore(shared.client, namespace=f"{shared.namespace}:ratelimit"),
        LOCAL_RATE_LIMIT_STORE: MemoryStore(),
    }


def local_rate_limit_store(app: Litestar) -> MemoryStore:
    """The store holding this process's own counters (the one to sweep)."""
    name = (
        LOCAL_RATE_LIMIT_STORE
        if isinstance(app.stores.get(RATE_LIMIT_STORE), RedisStore)
        else RATE_LIMIT_STORE
    )
    store = app.stores.get(name)
    assert isinstance(store, MemoryStore)
    return store


class Recaller(Protocol):
    """What the limiter asks of the key cache (``app.state.authenticate``) before choosing a budget."""

    async def recall(self, token: str) -> None: ...


def bearer(request: Request[Any, Any, Any]) -> str:
    """The token of an ``Authorization`` header, unverified ("" without one)."""
    return request.headers.get("authorization", "").partition(" ")[2].strip()


class SharedRateLimitMiddleware(RateLimitMiddleware):
    """Litestar's rate limiter with its counters in Redis, taken atomically. (Litestar's own reads a
    counter and writes it back, which is atomic only within one process: two workers reading the same
    count would both pass.) Before choosing whose budget a request spends it lets the key cache learn
    from Redis a key that another worker verified, so a till spends its key's budget on every worker.
    When Redis fails it counts in this process, exactly as without Redis."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app: Litestar = scope["litestar_app"]
        request: Request[Any, Any, Any] = app.request_class(scope)
        if await self.should_check_request(request=request):
            token = bearer(request)
            if token:
                recaller: Recaller = app.state.authenticate
                await recaller.recall(token)
            key = self.cache_key_from_request(request)
            try:
                taken, cache_object = await self._take_shared(app, key)
            except SharedUnavailable:
                taken, cache_object = await self._take_local(app, key)
            if not taken:
                raise TooManyRequestsException(
                    headers=self.create_response_headers(cache_object=cache_object)
                    if self.config.set_rate_limit_headers
                    else None
                )
            if self.config.set_rate_limit_headers:
                send = self.create_send_wrapper(send=send, cache_object=cache_object)
        await self.app(scope, receive, send)

    async def _take_shared(self, app: Litestar, key: str) -> tuple[bool, CacheObject]:
        shared: Shared | None = getattr(app.state, "shared", None)
        store = app.stores.get(self.config.store)
        if shared is None or not isinstance(store, RedisStore):
            raise SharedUnavailable("no Redis configured")
        name = f"{store.namespace}:{key}"
        window_ms = DURATION_VALUES[self.unit] * 1000

        async def take(client: Redis) -> list[int]:
            answer: list[int] = await client.eval(_TAKE, 1, name, self.max_requests, window_ms)
            return answer

        taken, count, left_ms = await shared.call(take)
        now = int(time.time())
        # The headers are computed from a history's length, as Litestar's own limiter does.
        reset = now + max(math.ceil(max(left_ms, 0) / 1000), 0)
        return bool(taken), CacheObject(history=[now] * int(count), reset=reset)

    async def _take_local(self, app: Litestar, key: str) -> tuple[bool, CacheObject]:
        """Litestar's own step, on this process's memory."""
        store = app.stores.get(LOCAL_RATE_LIMIT_STORE)
        async with self._lock:
            cache_object = await self.retrieve_cached_history(key, store)
            if len(cache_object.history) >= self.max_requests:
                return False, cache_object
            await self.set_cached_history(key=key, cache_object=cache_object, store=store)
        return True, cache_object
