"""The dispatcher's HTTP/1.1 transport: kept-alive connections to the guard's checked addresses,
answers of every framing read up to the cap, never more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from loyalty.events.guard import Guard, UnsafeTarget
from loyalty.events.transport import PinnedTransport

Answer = Callable[[bytes], Awaitable[bytes | None]]


@asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[tuple[int, list[int], list[bytes]]]:
    """A raw HTTP/1.1 server on 127.0.0.1 answering each request with ``answer(head)`` (None: hang
    up); yields its port, the peer port of each connection, and each request's head."""
    peers: list[int] = []
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[1])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                heads.append(head)
                reply = await answer(head)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], peers, heads
    finally:
        srv.close()


def _resolver(table: dict[str, list[str]]) -> Callable[[str, int], Awaitable[list[str]]]:
    async def resolve(host: str, _port: int) -> list[str]:
        return table[host]

    return resolve


async def _ok(_head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_connections_are_kept_alive_and_go_to_the_checked_address() -> None:
    """Ten requests to a name only the guard's resolver knows reach the address it checked, over one
    connection, with the name (and port) in the Host header."""
    guard = Guard(allow_private=True, resolver=_resolver({"hooks.test": ["127.0.0.1"]}))
    async with (
        server(_ok) as (port, peers, heads),
        httpx.AsyncClient(transport=PinnedTransport(guard)) as client,
    ):
        for n in range(10):
            r = await client.post(f"http://hooks.test:{port}/in?n={n}", content=b'{"a":1}')
            assert (r.status_code, r.content) == (200, b"ok")
    assert len(peers) == 1
    assert heads[3].startswith(b"POST /in?n=3 HTTP/1.1\r\n")
    assert f"host: hooks.test:{port}".encode() in heads[3].lower()


async def test_the_transport_refuses_what_the_guard_refuses() -> None:
    """A name that resolves to loopback is never connected to when private targets are not allowed."""
    guard = Guard(allow_private=False, resolver=_resolver({"evil.test": ["127.0.0.1"]}))
    async with (
        server(_ok) as (port, peers, _heads),
        httpx.AsyncClient(transport=PinnedTransport(guard)) as client,
    ):
        with pytest.raises(UnsafeTarget):
            await client.post(f"http://evil.test:{port}/", content=b"{}")
    assert peers == []


@pytest.mark.parametrize(
    ("reply", "body", "reused"),
    [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n",
            b"ok!!!",
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", b"", True),
        # No framing at all: a 204 has no body (RFC 9112, 6.3), so nothing is waited for.
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
        (b"HTTP/1.1 500 Oops\r\ncontent-length: 4\r\nconnection: close\r\n\r\nfail", b"fail", False),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100000, b"x" * 64, False),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n186a0\r\n"
            + b"x" * 100000
            + b"\r\n0\r\n\r\n",
            b"x" * 64,
            False,
        ),
    ],
)
async def test_answers_of_every_framing_are_read_up_to_the_cap(
    reply: bytes, body: bytes, reused: bool
) -> None:
    """Chunked, empty and closing answers are read; a long body is cut at the cap and its connection
    dropped (a receiver cannot make the dispatcher read megabytes); a complete one is reused."""

    async def answer(_head: bytes) -> bytes:
        return reply

    guard = Guard(allow_private=True)
    async with (
        server(answer) as (port, peers, _heads),
        httpx.AsyncClient(transport=PinnedTransport(guard, body_cap=64)) as client,
    ):
        first = await client.post(f"http://127.0.0.1:{port}/", content=b"{}")
        await client.post(f"http://127.0.0.1:{port}/", content=b"{}")
    assert first.content == body
    assert len(peers) == (1 if reused else 2)


async def test_a_connection_the_receiver_closed_is_replaced() -> None:
    """The receiver hangs up on every second request without answering: the transport sends that
    request again on a new connection (at-least-once), so every call gets its answer."""
    calls = 0

    async def answer(_head: bytes) -> bytes | None:
        nonlocal calls
        calls += 1
        return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" if calls % 2 else None

    async with (
        server(answer) as (port, peers, heads),
        httpx.AsyncClient(transport=PinnedTransport(Guard(allow_private=True))) as client,
    ):
        for _ in range(3):
            assert (await client.post(f"http://127.0.0.1:{port}/", content=b"{}")).status_code == 200
    assert (len(heads), len(peers)) == (5, 3)


async def test_an_answer_that_is_not_http_is_a_protocol_error() -> None:
    async def answer(_head: bytes) -> bytes:
        return b"SSH-2.0-OpenSSH\r\n\r\n"

    async with (
        server(answer) as (port, _peers, _heads),
        httpx.AsyncClient(transport=PinnedTransport(Guard(allow_private=True))) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"http://127.0.0.1:{port}/", content=b"{}")


async def test_https_goes_to_the_checked_address_and_verifies_the_name(tmp_path: Path) -> None:
    """Over TLS the transport connects to the checked address yet verifies the certificate against
    the URL's host name: a certificate for another name is refused."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hooks.test",
         "-addext", "subjectAltName=DNS:hooks.test", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntls")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = srv.sockets[0].getsockname()[1]
    names = {"hooks.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}
    transport = PinnedTransport(Guard(allow_private=True, resolver=_resolver(names)), ssl_context=trusting)
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.post(f"https://hooks.test:{port}/", content=b"{}")
            assert (r.status_code, r.content) == (200, b"tls")
            with pytest.raises(httpx.ConnectError, match=r"certificate|hostname"):
                await client.post(f"https://other.test:{port}/", content=b"{}")
    finally:
        srv.close()
