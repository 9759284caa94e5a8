"""Rate limits and key revocation shared by every API worker through Redis (issue 16).

The main tests run the real thing: ``loyalty serve --workers 2`` as a subprocess, with connections
held open to each of the two worker processes (which worker accepted a connection is read from
/proc), and the same run without Redis as the control that shows what per-process state lets
through. Each module run keeps to a Redis namespace of its own and deletes it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import os
import secrets as secrets_module
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from api.app import create_app
from loyalty.admin import access
from loyalty.cards.secrets import Secrets, init_secrets, load_secrets
from loyalty.storage.db import Database, upgrade
from tests.conftest import require_redis

from .conftest import Tenant, build_tenant

#: The servers' limit: small, so that a burst of a few dozen requests crosses it.
LIMIT = 20
#: Connections held open to each worker during a burst, and requests sent on each.
CONNECTIONS_PER_WORKER = 3
REQUESTS_PER_CONNECTION = 15
#: The promise: a revoked key is refused by every worker within this long.
REVOCATION_SECONDS = 1.0
#: How often each worker is asked during that second (slow enough to stay under LIMIT: a 429 would
#: say nothing about the key).
POLL_SECONDS = 0.15
KEYS = "/v1/admin/keys"
#: How long two workers may take to come up (each imports the CLI and the app: seconds when busy).
START_SECONDS = 90


# --- the world: one SQLite file, a tenant with admin keys for each test, Redis --------------------


@dataclass
class World:
    url: str
    secrets_file: Path
    secrets: Secrets
    tenant: Tenant
    tenant_code: str
    #: Admin keys by purpose: token and id.
    keys: dict[str, tuple[str, int]] = field(default_factory=dict)

    def auth(self, purpose: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[purpose][0]}"}


PURPOSES = (
    "burst-shared",
    "burst-local",
    "revoke-shared",
    "revoke-local",
    "ttl",
    "peek",
    "down",
    "cli",
    "revoker",
)


async def _admin_keys(url: str, tenant_id: int) -> dict[str, tuple[str, int]]:
    db = Database.from_url(url)
    try:
        keys = {}
        for purpose in PURPOSES:
            new = await access.create_key(
                db, tenant_id, role="admin", name=purpose, actor="test", now=datetime.now(UTC)
            )
            keys[purpose] = (new.secret, new.info.id)
        return keys
    finally:
        await db.dispose()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    folder = tmp_path_factory.mktemp("shared-limits")
    url = f"sqlite+aiosqlite:///{folder / 'loyalty.db'}"
    upgrade(url)
    secrets_file = init_secrets(folder / "secrets.json")
    secrets = load_secrets(secrets_file)
    code = f"sl{secrets_module.token_hex(3)}"
    tenant = asyncio.run(build_tenant(url, secrets, code))
    return World(url, secrets_file, secrets, tenant, code, asyncio.run(_admin_keys(url, tenant.id)))


@dataclass(frozen=True)
class SharedRedis:
    url: str
    namespace: str
    client: redis.Redis


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[SharedRedis]:
    """A namespace of this run's own in the test Redis; deleted afterwards."""
    url = require_redis()
    namespace = f"loyalty-test-{secrets_module.token_hex(6)}"
    client = redis.Redis.from_url(url)
    try:
        yield SharedRedis(url, namespace, client)
    finally:
        for name in list(client.scan_iter(match=f"{namespace}:*", count=1000)):
            client.delete(name)
        client.close()


# --- a real server with two workers -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
                todo += [int(c) for c in children]
                found += [int(c) for c in children]
    return found


def _server_side_inode(server_port: int, client_port: int) -> str | None:
    """The socket inode of the server's end of the local connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if local_port == server_port and remote_port == client_port:
            return fields[9]
    return None


def _owner(pids: list[int], inode: str) -> int | None:
    """Which of ``pids`` holds the socket ``inode``."""
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
    return None


@dataclass
class Conn:
    """A keep-alive connection and the worker process that accepted it."""

    http: http.client.HTTPConnection
    worker: int

    def send(self, method: str, path: str, headers: dict[str, str]) -> int:
        self.http.request(method, path, headers=headers)
        response = self.http.getresponse()
        response.read()
        assert not response.will_close, "the server closed a keep-alive connection"
        return response.status


class Server:
    """``loyalty serve --workers 2`` in its own process group."""

    def __init__(self, world: World, log: Path, redis_env: dict[str, str]) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOYALTY_REDIS")}
        env |= {
            "LOYALTY_DATABASE_URL": world.url,
            "LOYALTY_SECRETS_FILE": str(world.secrets_file),
            "LOYALTY_RATE_LIMIT": str(LIMIT),
            **redis_env,
        }
        command = [str(Path(sys.executable).parent / "loyalty"), "serve", "--workers", "2"]
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.conns: list[Conn] = []
        try:
            self.connect()
        except BaseException:
            self.stop()  # no server left behind when it never came up
            raise

    def connect(self) -> list[Conn]:
        """CONNECTIONS_PER_WORKER fresh connections to each worker (idle ones are closed by the server
        after a few seconds): connections are opened until the kernel has handed enough of them to
        each of the two processes."""
        for old in self.conns:
            old.http.close()
        self.conns = self._connect_to_both_workers()
        return self.conns

    def _connect_to_both_workers(self) -> list[Conn]:
        kept: list[Conn] = []
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.connect()
                client_port = conn.sock.getsockname()[1]
                Conn(conn, 0).send("GET", "/health", {})  # accepted by a worker by the time it answers
            except OSError:
                conn.close()
                time.sleep(0.2)
                continue
            inode = _server_side_inode(self.port, client_port)
            worker = _owner(_descendants(self.proc.pid), inode) if inode else None
            if worker is not None and sum(c.worker == worker for c in kept) < CONNECTIONS_PER_WORKER:
                kept.append(Conn(conn, worker))
                if len(kept) == 2 * CONNECTIONS_PER_WORKER:
                    return kept
            else:
                conn.close()
                time.sleep(0.02)  # the other worker may still be starting
        raise RuntimeError(f"could not reach two workers: {[c.worker for c in kept]}")

    @property
    def workers(self) -> list[int]:
        return sorted({c.worker for c in self.conns})

    def stop(self) -> None:
        for conn in self.conns:
            conn.http.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def shared_server(
    world: World, shared_redis: SharedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Two workers sharing limits and keys through Redis."""
    env = {"LOYALTY_REDIS_URL": shared_redis.url, "LOYALTY_REDIS_NAMESPACE": shared_redis.namespace}
    server = Server(world, tmp_path_factory.mktemp("shared-server") / "server.log", env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def local_server(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The control: two workers without Redis (the embedded default: each keeps its own)."""
    server = Server(world, tmp_path_factory.mktemp("local-server") / "server.log", {})
    try:
        yield server
    finally:
        server.stop()


# --- rate limits hold for the sum of the workers ----------------------------------------------------


@dataclass(frozen=True)
class Burst:
    ok: int
    ok_by_worker: dict[int, int]
    seconds: float


def _burst(server: Server, headers: dict[str, str]) -> Burst:
    """One request first (the key gets verified), then every connection sends its share at once."""
    server.connect()
    assert server.conns[0].send("GET", KEYS, headers) == 200
    start = threading.Barrier(len(server.conns))

    def send_all(conn: Conn) -> list[int]:
        start.wait()
        return [conn.send("GET", KEYS, headers) for _ in range(REQUESTS_PER_CONNECTION)]

    began = time.monotonic()
    with ThreadPoolExecutor(len(server.conns)) as pool:
        statuses = list(pool.map(send_all, server.conns))
    seconds = time.monotonic() - began
    assert {s for per_conn in statuses for s in per_conn} <= {200, 429}, statuses
    by_worker = {w: 0 for w in server.workers}
    for conn, per_conn in zip(server.conns, statuses, strict=True):
        by_worker[conn.worker] += per_conn.count(200)
    return Burst(sum(by_worker.values()), by_worker, seconds)


def test_a_burst_over_two_workers_gets_the_limit_once_not_once_per_worker(
    world: World, shared_server: Server, local_server: Server
) -> None:
    """One key's burst spread over both workers: with Redis at most LIMIT answers per second pass in
    all; without it each worker counts alone and more get through (the control)."""
    shared = _burst(shared_server, world.auth("burst-shared"))
    # The budget is taken in one atomic step in Redis, so no tolerance is needed beyond the windows
    # the burst touched: a window opens with its first request and lasts one second.
    windows = 1 + int(shared.seconds)
    assert 0 < shared.ok <= LIMIT * windows, shared
    assert len(shared_server.workers) == 2

    local = _burst(local_server, world.auth("burst-local"))
    assert local.ok > LIMIT, local
    assert all(n > 0 for n in local.ok_by_worker.values()), local  # both workers did let some through


# --- a revoked key is refused everywhere within a second ---------------------------------------------


def _refusals_after_revoking(
    world: World, server: Server, purpose: str, watch: float
) -> dict[int, list[Any]]:
    """Use key ``purpose`` on every connection (both workers verify it), revoke it through the API,
    then ask each worker every POLL_SECONDS for ``watch`` seconds. Per worker: (seconds after the
    revocation's answer, status) of each try."""
    headers = world.auth(purpose)
    server.connect()
    one_per_worker = [next(c for c in server.conns if c.worker == w) for w in server.workers]
    assert [c.send("GET", KEYS, headers) for c in one_per_worker] == [200, 200]
    key_id = world.keys[purpose][1]
    revoked = server.conns[0].send("POST", f"{KEYS}/{key_id}/revocation", world.auth("revoker"))
    assert revoked == 200
    answered = time.monotonic()
    tries: dict[int, list[Any]] = {c.worker: [] for c in one_per_worker}
    while (elapsed := time.monotonic() - answered) < watch:
        for conn in one_per_worker:
            tries[conn.worker].append(
                (round(time.monotonic() - answered, 3), conn.send("GET", KEYS, headers))
            )
        time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - answered - elapsed)))
    return tries


def test_a_revoked_key_is_refused_by_every_worker_within_a_second(
    world: World, shared_server: Server
) -> None:
    """After the revocation is answered, every worker answers 401 within REVOCATION_SECONDS, and
    never accepts the key again."""
    tries = _refusals_after_revoking(world, shared_server, "revoke-shared", watch=REVOCATION_SECONDS + 0.3)
    for worker, seen in tries.items():
        refused = [t for t, status in seen if status == 401]
        assert refused and refused[0] <= REVOCATION_SECONDS, (worker, seen)
        assert all(status == 401 for t, status in seen if t >= refused[0]), (worker, seen)


def test_without_redis_another_worker_still_accepts_a_revoked_key_after_a_second(
    world: World, local_server: Server
) -> None:
    """The control: each worker trusts its own five-second cache, so the worker that did not revoke
    the key still accepts it a second later (what the shared cache removes)."""
    tries = _refusals_after_revoking(world, local_server, "revoke-local", watch=REVOCATION_SECONDS + 0.3)
    late = [status for seen in tries.values() for t, status in seen if t > REVOCATION_SECONDS]
    assert 200 in late, tries


def test_every_name_the_api_writes_in_redis_expires(
    world: World, shared_server: Server, shared_redis: SharedRedis
) -> None:
    """Rate-limit counters, shared keys and revocation marks all carry a TTL (nothing grows for ever)."""
    conn = shared_server.connect()[0]
    assert conn.send("GET", KEYS, world.auth("ttl")) == 200  # a counter and a shared key
    assert conn.send("POST", f"{KEYS}/{world.keys['ttl'][1]}/revocation", world.auth("revoker")) == 200
    names = list(shared_redis.client.scan_iter(match=f"{shared_redis.namespace}:*", count=1000))
    kinds = {name.decode().removeprefix(shared_redis.namespace).split(":")[1] for name in names}
    assert {"ratelimit", "revoked"} <= kinds, names
    assert all(shared_redis.client.pttl(name) > 0 for name in names), names


# --- in one process: two apps as two workers ----------------------------------------------------------


def _app(world: World, redis_url: str, namespace: str | None = None, **options: Any) -> Any:
    """The app as one worker runs it, sharing through ``redis_url`` under ``namespace``."""
    return create_app(
        database_url=world.url,
        secrets=world.secrets,
        redis_url=redis_url,
        redis_namespace=namespace,
        **options,
    )


def test_a_key_verified_on_one_worker_spends_its_own_budget_on_another(
    world: World, shared_redis: SharedRedis
) -> None:
    """Worker B's first request with a key that worker A verified counts against the key's budget,
    not against the address's (which A's unverified first request already used)."""
    headers = world.auth("peek")
    shared = (shared_redis.url, shared_redis.namespace)
    with (
        TestClient(_app(world, *shared, rate_limit=50)) as a,
        TestClient(_app(world, *shared, rate_limit=50)) as b,
    ):
        # A's first request is not verified yet: the address's budget. Then A verifies the key (and
        # shares it), and its next three spend the key's budget.
        on_a = [a.get(KEYS, headers=headers) for _ in range(4)]
        on_b = b.get(KEYS, headers=headers)
    assert [r.status_code for r in [*on_a, on_b]] == [200] * 5
    remaining = [int(r.headers["ratelimit-remaining"]) for r in [*on_a, on_b]]
    # The key's fourth request leaves 46; the address's second would have left 48.
    assert remaining == [49, 49, 48, 47, 46], remaining


def test_the_cli_revocation_reaches_the_workers(
    world: World, shared_redis: SharedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`loyalty keys revoke` with LOYALTY_REDIS_URL set: a worker that had the key verified refuses it
    within REVOCATION_SECONDS (its shared entry would otherwise be trusted for five)."""
    from cli.app import main

    headers = world.auth("cli")
    with TestClient(_app(world, shared_redis.url, shared_redis.namespace)) as client:
        assert client.get(KEYS, headers=headers).status_code == 200
        monkeypatch.setenv("LOYALTY_DATABASE_URL", world.url)
        monkeypatch.setenv("LOYALTY_SECRETS_FILE", str(world.secrets_file))
        monkeypatch.setenv("LOYALTY_REDIS_URL", shared_redis.url)
        monkeypatch.setenv("LOYALTY_REDIS_NAMESPACE", shared_redis.namespace)
        monkeypatch.setattr(
            sys,
            "argv",
            ["loyalty", "keys", "revoke", str(world.keys["cli"][1]), "--tenant", world.tenant_code],
        )
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        revoked = time.monotonic()
        statuses = []
        while time.monotonic() - revoked < REVOCATION_SECONDS:
            statuses.append(client.get(KEYS, headers=headers).status_code)
            time.sleep(0.1)
    assert code == 0
    assert statuses[-1] == 401 and 200 not in statuses[statuses.index(401) :], statuses


def test_with_redis_down_the_api_serves_and_limits_per_process(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis unreachable at request time: keys are verified against the database, the limit is
    counted in this process (a 429 past it), one warning is logged, and revocation still works."""
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    headers = world.auth("down")
    with caplog.at_level(logging.WARNING), TestClient(_app(world, dead, rate_limit=3)) as client:
        statuses = [client.get(KEYS, headers=headers).status_code for _ in range(8)]
        revoked = client.post(f"{KEYS}/{world.keys['down'][1]}/revocation", headers=world.auth("revoker"))
        time.sleep(1.1)  # a fresh second for the limits
        after = client.get(KEYS, headers=headers).status_code
    assert statuses[:4] == [200] * 4 and 429 in statuses, statuses  # one on the address, three on the key
    assert revoked.status_code == 200 and after == 401, (revoked.text, after)
    warnings = [r for r in caplog.records if r.name == "api.shared" and "unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
