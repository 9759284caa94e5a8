"""The guard against server-side request forgery: a webhook URL may only point at the public internet.

A tenant admin names the URL the dispatcher will POST to. Without this guard that is a way to make
our servers talk to what only they can reach: the database, the cloud's metadata service
(169.254.169.254), an admin port on localhost. So a URL must be ``http`` or ``https``, carry no
user name or password, and name a host whose every address is global: one private, loopback,
link-local, multicast, reserved or unspecified address (or an IPv6 form of one: IPv4-mapped, 6to4,
Teredo) refuses the whole URL, since a client may connect to any of them.

The check runs when an endpoint is created and again before each delivery, because a name's
addresses can change after it was checked (DNS rebinding). The dispatcher's transport
(:mod:`loyalty.events.transport`) connects to the very addresses :meth:`Guard.addresses` checked, not
to a second resolution of the name, so a DNS server answering a public address to the check and a
private one a moment later does not win. What remains: a host's verdict is reused for
:data:`RESOLVE_CACHE_SECONDS`, and a kept-alive connection is reused without a new check, so a record
that turns private is noticed within seconds on a new connection, but an open connection stays with
the (checked, public) address it was opened to.

Operators running receivers on their own network allow private targets for the whole process
(``LOYALTY_WEBHOOKS_ALLOW_PRIVATE=1``, or ``--allow-private`` on the command line); a tenant admin
through the API never can.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Awaitable, Callable
from urllib.parse import SplitResult, urlsplit

from loyalty.errors import InvalidInput

#: Longest URL an endpoint may have (the column's width).
MAX_URL_LENGTH = 2000
#: How long a host's checked addresses are trusted before the next delivery checks them again: the
#: dispatcher sends hundreds of requests a second to the same few hosts, and a resolution per request
#: would cost a thread hop each. Short enough that a changed record is noticed within seconds.
RESOLVE_CACHE_SECONDS = 10.0
#: Hosts whose checked addresses are kept at most (the cache must not grow with hostile input).
RESOLVE_CACHE_SIZE = 1024
ALLOW_PRIVATE_ENV = "LOYALTY_WEBHOOKS_ALLOW_PRIVATE"
#: Longest wait for a name's addresses: an API request creating an endpoint waits for it, so a slow
#: or hostile DNS server must not hold it for the resolver's own (much longer) timeout.
RESOLVE_TIMEOUT_SECONDS = 5.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``host, port`` -> the addresses the host resolves to (getaddrinfo's, or a test's).
Resolver = Callable[[str, int], Awaitable[list[str]]]


class UnsafeTarget(InvalidInput):
    """The URL is not one the dispatcher may send to (scheme, credentials, or a private address)."""


def private_allowed() -> bool:
    """Whether the operator allowed private targets for this process (the environment setting)."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def parse(url: str) -> SplitResult:
    """The URL's parts, when its form is acceptable: http(s), a host, no credentials, a valid port."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"the URL must have 1 to {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise UnsafeTarget("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - a malformed IPv6 literal ("http://[::1") raises only here
    except ValueError:
        raise UnsafeTarget("the URL is malformed (check the brackets around an IPv6 address)") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeTarget(f"the URL must start with http:// or https://, not {parts.scheme or url!r}")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTarget("the URL must not carry a user name or password (sign with the secret)")
    if not parts.hostname:
        raise UnsafeTarget("the URL must name a host")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise UnsafeTarget("the URL's port must be a number from 1 to 65535") from None
    return parts


def unsafe_reason(address: IpAddress) -> str | None:
    """Why the dispatcher must not connect to ``address``, or None when it is a global address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None:
            inner = unsafe_reason(embedded)
            return None if inner is None else f"{inner} (inside {address})"
    for reason, flag in (
        ("loopback", address.is_loopback),
        ("private", address.is_private),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
        ("not global", not address.is_global),
    ):
        if flag:
            return f"{address} is a {reason} address"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses as the operating system resolves them (getaddrinfo, in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))  # the system's order of preference


class Guard:
    """Checks webhook URLs; remembers a host's verdict for :data:`RESOLVE_CACHE_SECONDS`."""

    def __init__(
        self,
        *,
        allow_private: bool | None = None,
        resolver: Resolver = system_resolver,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        #: None: ask the environment (so a test or an operator can set it after import).
        self.allow_private = private_allowed() if allow_private is None else allow_private
        self._resolve = resolver
        self._monotonic = monotonic
        self._cache: dict[tuple[str, int], tuple[float, str | None, list[str]]] = {}

    async def check(self, url: str, *, cached: bool = False) -> None:
        """Raise :class:`UnsafeTarget` unless the dispatcher may send to ``url``. With ``cached``, a
        host checked less than :data:`RESOLVE_CACHE_SECONDS` ago is not resolved again."""
        parts = parse(url)
        if not self.allow_private:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            await self.addresses(parts.hostname or "", port, cached=cached)

    async def addresses(self, host: str, port: int, *, cached: bool = True) -> list[str]:
        """The addresses of ``host`` the dispatcher may connect to (all of them checked), or
        :class:`UnsafeTarget`. With private targets allowed, whatever the host resolves to."""
        key = (host, port)
        hit = self._cache.get(key) if cached else None
        if hit is not None and self._monotonic() - hit[0] < RESOLVE_CACHE_SECONDS:
            _, reason, found = hit
        else:
            reason, found = await self._verdict(host, port)
            if len(self._cache) >= RESOLVE_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = (self._monotonic(), reason, found)
        if reason is not None:
            raise UnsafeTarget(f"{host}: {reason}")
        return found

    async def _verdict(self, host: str, port: int) -> tuple[str | None, list[str]]:
        try:
            literal: IpAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            return (None if self.allow_private else _refusal(unsafe_reason(literal))), [host]
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            return f"cannot be resolved (no answer in {RESOLVE_TIMEOUT_SECONDS:.0f} s)", []
        except (OSError, UnicodeError) as exc:
            return f"cannot be resolved ({exc})", []
        if not addresses:
            return "resolves to no address", []
        if not self.allow_private:
            for text in addresses:
                # A scope id (fe80::1%eth0) is link-local anyway; ip_address refuses the suffix.
                reason = unsafe_reason(ipaddress.ip_address(text.split("%", 1)[0]))
                if reason is not None:
                    return _refusal(f"resolves to {reason}"), []
        return None, addresses


def _refusal(reason: str | None) -> str | None:
    if reason is None:
        return None
    return f"{reason}; webhooks go to public addresses only (an operator may allow private ones)"
