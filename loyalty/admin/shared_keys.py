"""Verified API keys shared by every API worker through Redis, and the one step that ends them.

Why it lives here: keys are revoked by the admin API and by the command line, and the command line
may not import ``api``; so the layout of the shared entries and what a revoker must do sit beside
the keys themselves (:mod:`.access`). The API's key cache (``api/auth.py``) reads and writes the
entries; whoever revokes a key calls :func:`revoke` (or :func:`announce_revocation`).

Layout, under a namespace (``LOYALTY_REDIS_NAMESPACE``, default ``loyalty``); every name expires:

``<ns>:key:<key id>``
    a key some worker verified against the database: the token's SHA-256 and whom it stands for
    (the payload is the API's); it expires after the key cache's TTL.
``<ns>:revoked:<key id>``
    a revocation mark. While it stands no worker stores that key again, so a verification that read
    the database just before the revocation cannot put the key back just after it.

The entry is named by the key's id, not by the token's hash, because the revoker knows the id only;
the stored hash still ties the entry to the one token that was verified, so a forged token naming
a real key id never matches it.
"""

from __future__ import annotations

import hashlib
import os

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

#: Where the shared state lives; unset means every worker keeps its own (the embedded default).
REDIS_URL_ENV = "LOYALTY_REDIS_URL"
#: Prefix of every name we write, so that several deployments (or test runs) can share one Redis.
NAMESPACE_ENV = "LOYALTY_REDIS_NAMESPACE"
DEFAULT_NAMESPACE = "loyalty"
#: A Redis that does not answer within this long counts as down (the same host answers in < 1 ms);
#: callers then fall back to what one process can do alone.
TIMEOUT_SECONDS = 0.5
#: Retries of a failed command (redis-py's default is three, with backoff: too slow for a till).
RETRIES = 1
#: How long a revocation mark stands: far longer than any verification takes between reading the
#: database and storing its answer, which is the only race the mark has to close.
REVOKED_MARK_SECONDS = 60

#: Store a verified key unless a revocation mark stands; both in one step, so a revocation can never
#: fall between the check and the write.
_STORE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def redis_url(url: str | None = None) -> str | None:
    """The Redis to share state through: ``url``, else ``LOYALTY_REDIS_URL``; None when neither is set."""
    return url or os.environ.get(REDIS_URL_ENV) or None


def namespace(name: str | None = None) -> str:
    return name or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE


def connect(url: str) -> Redis:
    """A client whose calls fail fast when Redis is down, instead of holding a till's request."""
    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=TIMEOUT_SECONDS,
        socket_timeout=TIMEOUT_SECONDS,
        # One immediate retry: enough to replace a pooled connection that Redis closed (a restart).
        retry=Retry(NoBackoff(), RETRIES),
    )
    return client


def entry_name(ns: str, key_id: int) -> str:
    return f"{ns}:key:{key_id}"


def mark_name(ns: str, key_id: int) -> str:
    return f"{ns}:revoked:{key_id}"


def token_digest(token: str) -> str:
    """What an entry stores of the token: its SHA-256 (the token itself never leaves the process)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def fetch(client: Redis, ns: str, key_id: int) -> bytes | None:
    """The entry of key ``key_id``, if a worker verified it within the TTL and it was not revoked since."""
    value = await client.get(entry_name(ns, key_id))
    return value.encode() if isinstance(value, str) else value  # str only if decoding was switched on


async def store(client: Redis, ns: str, key_id: int, payload: bytes, ttl_ms: int) -> bool:
    """Share a key just verified against the database for ``ttl_ms``; False if it was revoked meanwhile."""
    stored = await client.eval(_STORE, 2, entry_name(ns, key_id), mark_name(ns, key_id), payload, ttl_ms)
    return bool(stored)


async def revoke(client: Redis, ns: str, key_id: int) -> None:
    """After the key's revocation is committed: drop its entry and mark it, in one transaction, so
    that the next request on any worker that has no entry asks the database (which refuses it)."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(entry_name(ns, key_id))
        pipe.set(mark_name(ns, key_id), b"1", ex=REVOKED_MARK_SECONDS)
        await pipe.execute()


async def announce_revocation(key_id: int, url: str | None = None, ns: str | None = None) -> bool:
    """For a revoker outside the API (the command line): :func:`revoke` through the configured Redis.
    False when no Redis is configured; a Redis error propagates (the caller says what it means)."""
    where = redis_url(url)
    if where is None:
        return False
    client = connect(where)
    try:
        await revoke(client, namespace(ns), key_id)
    finally:
        await client.aclose()
    return True


__all__ = [
    "announce_revocation",
    "connect",
    "fetch",
    "namespace",
    "redis_url",
    "revoke",
    "store",
    "token_digest",
]
