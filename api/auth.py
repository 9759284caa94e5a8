"""Who is calling: ``Authorization: Bearer <key>`` -> a Principal (tenant, role, outlet), and role guards.

Keys are verified by the domain layer (stored hashed). A verified key is remembered for a few seconds
so that a till's requests do not each cost a key lookup. Without Redis each process remembers its
own, and a revocation takes effect within ``KEY_CACHE_SECONDS``. With Redis (``api/shared.py``) the
workers share what they verified and a revocation deletes it there, so each process trusts its own
memory for at most ``LOCAL_KEY_SECONDS``: a revoked key stops working on every worker within that.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache, TTLCache
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from api.problems import FORBIDDEN, UNAUTHORIZED, Problem
from api.shared import Shared, SharedUnavailable
from loyalty.admin import access, shared_keys

log = logging.getLogger(__name__)

#: How long a verified key is trusted without asking the database again.
KEY_CACHE_SECONDS = 5.0
#: Verified keys remembered per process.
KEY_CACHE_SIZE = 10_000
#: With Redis, how long a process trusts its own memory of a verified key before it asks Redis again:
#: the bound on how late a revocation reaches a worker (the promise is one second).
LOCAL_KEY_SECONDS = 0.5

ROLES = ("admin", "marketer", "cashier")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a key of one tenant with one role; a cashier key is bound to one outlet."""

    tenant_id: int
    key_id: int
    role: str
    outlet_id: int | None = None


Authenticator = Callable[[str], Awaitable[Principal | None]]


class KeyCache:
    """Verified keys in front of the authenticator: trusted without a lookup for ``ttl`` seconds
    (so revocation takes effect within it), and remembered beyond that, up to KEY_CACHE_SIZE
    tokens, only to pick whose rate-limit budget a request spends (:meth:`peek`).

    With ``shared`` (Redis) a verified key is kept there for ``ttl`` for every worker, and here for
    at most LOCAL_KEY_SECONDS; :meth:`forget` deletes it there when the key is revoked. When Redis
    fails, the database answers instead (see ``api/shared.py``)."""

    def __init__(
        self, authenticate: Authenticator, ttl: float = KEY_CACHE_SECONDS, shared: Shared | None = None
    ) -> None:
        self._authenticate = authenticate
        self._shared = shared
        #: Milliseconds a verified key stays in Redis (0: not shared, as nothing is cached then).
        self._shared_ms = int(ttl * 1000)
        local = ttl if shared is None else min(ttl, LOCAL_KEY_SECONDS)
        self._fresh: TTLCache[str, Principal] = TTLCache(maxsize=KEY_CACHE_SIZE, ttl=max(local, 1e-9))
        self._known: LRUCache[str, Principal] = LRUCache(maxsize=KEY_CACHE_SIZE)

    def peek(self, token: str) -> Principal | None:
        """The caller behind ``token`` if it was ever verified and not found revoked since (the TTL
        does not matter here: this only picks whose rate-limit budget a request spends, so a till
        keeps its own budget even when anonymous traffic from its address is being limited).
        Never asks the database."""
        return self._known.get(token)

    async def recall(self, token: str) -> None:
        """Before :meth:`peek`: with Redis, learn a key another worker verified, so that its first
        request here already spends the key's budget. Never asks the database."""
        if self._shared is not None and token not in self._known:
            await self._from_shared(token)

    async def __call__(self, token: str) -> Principal | None:
        hit = self._fresh.get(token)
        if hit is not None:
            return hit
        shared = await self._from_shared(token)
        if shared is not None:
            return shared
        principal = await self._authenticate(token)
        if principal is None:
            self._known.pop(token, None)
            return None
        self._fresh[token] = self._known[token] = principal
        await self._share(token, principal)
        return principal

    async def forget(self, key_id: int) -> None:
        """Key ``key_id`` was just revoked: this process drops it at once, and with Redis every
        worker does within LOCAL_KEY_SECONDS. If Redis cannot be told, the others may accept the key
        for up to the TTL more; that is logged (the revocation itself stands in the database)."""
        for cache in (self._fresh, self._known):
            for token in list(cache.keys()):  # .get, not items(): an entry may expire meanwhile
                principal = cache.get(token)
                if principal is not None and principal.key_id == key_id:
                    cache.pop(token, None)
        if self._shared is None:
            return
        namespace = self._shared.namespace

        async def revoke(client: Any) -> None:
            await shared_keys.revoke(client, namespace, key_id)

        try:
            await self._shared.call(revoke, always=True)
        except SharedUnavailable:
            log.warning(
                "API key %s is revoked, but Redis could not be told: other workers may accept it for "
                "up to %.0f s more",
                key_id,
                self._shared_ms / 1000,
            )

    async def _from_shared(self, token: str) -> Principal | None:
        """The key behind ``token`` as some worker verified it, if Redis holds it for this very token."""
        parsed = access.parse_token(token)
        if self._shared is None or self._shared_ms <= 0 or parsed is None:
            return None
        namespace, key_id = self._shared.namespace, parsed[0]

        async def fetch(client: Any) -> bytes | None:
            return await shared_keys.fetch(client, namespace, key_id)

        try:
            entry = await self._shared.call(fetch)
        except SharedUnavailable:
            return None
        if entry is None:
            return None
        found = json.loads(entry)
        if not hmac.compare_digest(found["digest"], shared_keys.token_digest(token)):
            return None  # another token naming the same key id: not what was verified
        principal = Principal(found["tenant_id"], key_id, found["role"], found["outlet_id"])
        self._fresh[token] = self._known[token] = principal
        return principal

    async def _share(self, token: str, principal: Principal) -> None:
        """Tell every worker: ``token`` is a live key, for the TTL (unless it was revoked meanwhile)."""
        if self._shared is None or self._shared_ms <= 0:
            return
        namespace = self._shared.namespace
        payload = json.dumps(
            {
                "digest": shared_keys.token_digest(token),
                "tenant_id": principal.tenant_id,
                "role": principal.role,
                "outlet_id": principal.outlet_id,
            }
        ).encode()

        async def store(client: Any) -> bool:
            return await shared_keys.store(client, namespace, principal.key_id, payload, self._shared_ms)

        # Unshared, this worker still remembers it for LOCAL_KEY_SECONDS; the others ask the database.
        with contextlib.suppress(SharedUnavailable):
            await self._shared.call(store)


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            UNAUTHORIZED,
            "send Authorization: Bearer <api key>",
            headers={"WWW-Authenticate": 'Bearer realm="loyalty"'},
        )
    return token.strip()


async def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller's Principal: ``request.user`` once the authentication middleware has set it (it
    calls this, once per request), else verified from the bearer token; 401 without a live key."""
    user = connection.scope.get("user")
    if isinstance(user, Principal):
        return user
    authenticate: Authenticator = connection.app.state.authenticate
    principal = await authenticate(bearer_token(connection))
    if principal is None:
        raise Problem(
            UNAUTHORIZED,
            "unknown or revoked API key",
            headers={"WWW-Authenticate": 'Bearer realm="loyalty", error="invalid_token"'},
        )
    return principal


#: Route option marking what anyone may call without a key (probes, customer pages, static files).
PUBLIC = "exclude_from_auth"


class ApiKeyAuthentication(AbstractAuthenticationMiddleware):
    """``request.user`` is the verified caller (a :class:`Principal`) on every route not marked
    public (``opt={PUBLIC: True}``); without a valid key the request ends here with a 401 problem.
    It runs after the rate limiter, so anonymous traffic is limited before any key is looked up."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        return AuthenticationResult(user=await principal_of(connection), auth=None)


def requires(
    *roles: str,
) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]:
    """A guard: the caller's key must have one of ``roles`` (admin keys may do what marketers may)."""
    allowed = set(roles)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = await principal_of(connection)
        if principal.role not in allowed:
            raise Problem(FORBIDDEN, f"a {principal.role} key may not call this endpoint")

    guard.__name__ = f"requires_{'_'.join(roles)}"
    return guard
