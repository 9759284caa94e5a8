"""The dispatcher's HTTP/1.1 transport for ``httpx.AsyncClient``: kept-alive connections on asyncio
streams, opened only to the addresses the guard checked.

Why not httpx's own transport: two reasons, both measured or shown in the tests.

* It resolves the host again when it connects, a second resolution the guard never saw (the DNS
  rebinding window :mod:`loyalty.events.guard` describes). This transport connects to the checked
  addresses themselves; TLS still verifies the certificate against the host's name.
* Its pool (httpcore on anyio) cost about 4 ms of CPU per webhook at 32-64 connections (every request
  checks every pooled connection's socket through anyio's attribute lookups), which held the dispatcher
  near 100 events/s on two cores. A webhook is one small POST and one small answer: this transport
  does that in a fraction of the time (``benchmarks/bench_dispatch.py``).

It speaks just what a webhook needs: a request with a known body length, an answer with a
``content-length``, chunked, or read-to-close body, of which at most ``body_cap`` bytes are kept (a
longer body closes the connection rather than being read). No proxies, no HTTP/2, no redirects (the
client does not follow them either). A connection goes back to the pool only after a complete answer
that did not ask to close; any error or cancellation closes it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict

import httpx

from loyalty.events.guard import Guard

#: Longest status line plus headers accepted from a receiver.
MAX_HEAD = 64 * 1024
#: Idle connections kept per host (more are closed when they come back).
MAX_IDLE_PER_HOST = 64

_Key = tuple[str, str, int]


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class PinnedTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio, connecting only to addresses :meth:`Guard.addresses` returned."""

    def __init__(
        self,
        guard: Guard,
        *,
        connect_timeout: float = 5.0,
        body_cap: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.guard = guard
        self.connect_timeout = connect_timeout
        self.body_cap = body_cap
        self._ssl = ssl_context
        self._idle: defaultdict[_Key, list[_Connection]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}", request=request)
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        body = request.content
        head = [f"{request.method} {url.raw_path.decode('ascii')} HTTP/1.1\r\n".encode()]
        for name, value in request.headers.raw:
            if name.lower() not in (b"content-length", b"transfer-encoding", b"connection"):
                head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        message = b"".join(head) + body

        idle = self._idle[key]
        conn = idle.pop() if idle else None
        if conn is not None and conn.reader.at_eof():
            conn.close()  # the receiver closed it while it was idle
            conn = None
        fresh = conn is None
        if conn is None:
            conn = await self._connect(key, request)
        try:
            try:
                conn.writer.write(message)
                await conn.writer.drain()
                status, headers = await self._read_head(conn, request)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if fresh:
                    raise httpx.ReadError(
                        f"connection lost: {exc or type(exc).__name__}", request=request
                    ) from exc
                # A kept-alive connection the receiver had just closed: once more on a new one.
                conn.close()
                conn = await self._connect(key, request)
                conn.writer.write(message)
                await conn.writer.drain()
                status, headers = await self._read_head(conn, request)
            if status in (204, 304) or 100 <= status < 200:
                content, reusable = b"", True  # no body, whatever the headers say (RFC 9112, 6.3)
            else:
                content, reusable = await self._read_body(conn, headers, request)
        except BaseException:
            conn.close()
            raise
        if reusable and len(self._idle[key]) < MAX_IDLE_PER_HOST:
            self._idle[key].append(conn)
        else:
            conn.close()
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(content), request=request)

    async def _connect(self, key: _Key, request: httpx.Request) -> _Connection:
        scheme, host, port = key
        addresses = await self.guard.addresses(host, port)
        context = None
        if scheme == "https":
            # httpx's own default (certifi's roots), so https behaves as with any httpx client.
            context = self._ssl = self._ssl or httpx.create_ssl_context()
        failure: BaseException | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    reader, writer = await asyncio.open_connection(
                        address,
                        port,
                        ssl=context,
                        server_hostname=host if context is not None else None,
                        limit=MAX_HEAD,
                    )
                return _Connection(reader, writer)
            except TimeoutError as exc:
                failure = httpx.ConnectTimeout(
                    f"connecting to {address}:{port} took too long", request=request
                )
                failure.__cause__ = exc
            except (OSError, ssl.SSLError) as exc:
                failure = httpx.ConnectError(f"{address}:{port}: {exc}", request=request)
                failure.__cause__ = exc
        raise failure or httpx.ConnectError(f"{host}: no address", request=request)

    @staticmethod
    async def _read_head(conn: _Connection, request: httpx.Request) -> tuple[int, list[tuple[bytes, bytes]]]:
        try:
            raw = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise httpx.RemoteProtocolError("answer headers too long", request=request) from exc
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}", request=request)
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise httpx.RemoteProtocolError("malformed answer header", request=request)
            headers.append((name.strip(), value.strip()))
        return int(parts[1]), headers

    async def _read_body(
        self, conn: _Connection, headers: list[tuple[bytes, bytes]], request: httpx.Request
    ) -> tuple[bytes, bool]:
        """The body (at most ``body_cap`` bytes) and whether the connection can serve another request."""
        fields = {name.lower(): value for name, value in headers}
        keep = fields.get(b"connection", b"").lower() != b"close"
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            return await self._read_chunked(conn, request, keep)
        length = fields.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                raise httpx.RemoteProtocolError("bad content-length", request=request)
            size = int(length)
            if size > self.body_cap:
                return await conn.reader.readexactly(self.body_cap), False
            return await conn.reader.readexactly(size), keep
        # Neither: the body runs to the end of the connection.
        return await conn.reader.read(self.body_cap), False

    async def _read_chunked(
        self, conn: _Connection, request: httpx.Request, keep: bool
    ) -> tuple[bytes, bool]:
        body = b""
        while True:
            line = await conn.reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise httpx.RemoteProtocolError("bad chunk size", request=request) from exc
            if size == 0:
                while await conn.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return body, keep
            if len(body) + size > self.body_cap:
                return body + await conn.reader.read(self.body_cap - len(body)), False
            body += await conn.reader.readexactly(size)
            await conn.reader.readexactly(2)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
