"""Who is calling: ``Authorization: Bearer <key>`` -> a Principal (tenant, role, outlet), and role guards.

Keys are verified by the domain layer (stored hashed). A verified key is remembered for a few seconds
per process so that a till's requests do not each cost a key lookup; revocation therefore takes
effect within ``KEY_CACHE_SECONDS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache, TTLCache
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from api.problems import FORBIDDEN, UNAUTHORIZED, Problem

#: How long a verified key is trusted without asking the database again.
KEY_CACHE_SECONDS = 5.0
#: Verified keys remembered per process.
KEY_CACHE_SIZE = 10_000

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
    tokens, only to pick whose rate-limit budget a request spends (:meth:`peek`)."""

    def __init__(self, authenticate: Authenticator, ttl: float = KEY_CACHE_SECONDS) -> None:
        self._authenticate = authenticate
        self._fresh: TTLCache[str, Principal] = TTLCache(maxsize=KEY_CACHE_SIZE, ttl=max(ttl, 1e-9))
        self._known: LRUCache[str, Principal] = LRUCache(maxsize=KEY_CACHE_SIZE)

    def peek(self, token: str) -> Principal | None:
        """The caller behind ``token`` if it was ever verified and not found revoked since (the TTL
        does not matter here: this only picks whose rate-limit budget a request spends, so a till
        keeps its own budget even when anonymous traffic from its address is being limited).
        Never asks the database."""
        return self._known.get(token)

    async def __call__(self, token: str) -> Principal | None:
        hit = self._fresh.get(token)
        if hit is not None:
            return hit
        principal = await self._authenticate(token)
        if principal is None:
            self._known.pop(token, None)
            return None
        self._fresh[token] = self._known[token] = principal
        return principal


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
