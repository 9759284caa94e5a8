"""`loyalty serve` stops gracefully: on SIGTERM it refuses new connections at once, lets the request in
flight finish and book, and exits 0; several workers share one fresh metrics directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from loyalty.cards.secrets import init_secrets, load_secrets
from tests.api.conftest import build_tenant
from tests.cli.conftest import Cli, ok, one_line_error

ROOT = Path(__file__).resolve().parents[2]
#: Upper bound on every wait of this test: far above what each step takes (well under a second).
PATIENCE = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(check: Any, what: str, timeout: float = PATIENCE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(postgresql_url: str, tmp_path: Path) -> None:
    """A purchase blocked on the member's row lock when SIGTERM arrives: the port closes at once, the
    purchase still gets its 201 and is booked once the lock goes, and the server exits with 0."""
    import asyncpg

    secrets_file = init_secrets(tmp_path / "secrets.json")
    tenant = asyncio.run(
        build_tenant(postgresql_url, load_secrets(secrets_file), f"stop{uuid.uuid4().hex[:8]}")
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "LOYALTY_DATABASE_URL": postgresql_url,
        "LOYALTY_SECRETS_FILE": str(secrets_file),
        "LOYALTY_SHUTDOWN_SECONDS": "20",
        "LOYALTY_RATE_LIMIT": "100000",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            start_new_session=True,
        )
    loop = asyncio.new_event_loop()
    dsn = postgresql_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    lock = loop.run_until_complete(asyncpg.connect(dsn))
    watch = loop.run_until_complete(asyncpg.connect(dsn))
    try:

        def up() -> bool:
            assert server.poll() is None, f"serve exited with {server.returncode}: {log.read_text()}"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            return False

        _until(up, "the server answers /health")
        assert httpx.get(f"{base}/v1/cards/{tenant.token}/balance", timeout=5).status_code == 200

        # Hold the member's row: the purchase blocks inside the server, in flight.
        loop.run_until_complete(lock.execute("BEGIN"))
        loop.run_until_complete(
            lock.execute("SELECT 1 FROM members WHERE id = $1 FOR UPDATE", tenant.member_id)
        )
        answer: dict[str, httpx.Response] = {}
        body = {
            "card": tenant.card,
            "external_id": "in-flight-1",
            "occurred_at": datetime.now(UTC).isoformat(),
            "items": [{"sku": "LATTE", "category": "coffee", "quantity": 1, "unit_price": 450}],
        }

        def post() -> None:
            answer["r"] = httpx.post(
                f"{base}/v1/till/transactions",
                json=body,
                headers=tenant.headers(**{"Idempotency-Key": "in-flight-1"}),
                timeout=PATIENCE,
            )

        client = threading.Thread(target=post)
        client.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        _until(
            lambda: answer or loop.run_until_complete(watch.fetchval(waiting)) > 0,
            "the purchase waits on the lock",
        )
        assert not answer, f"the purchase did not wait: {answer['r'].status_code} {answer['r'].text}"

        server.send_signal(signal.SIGTERM)
        _until(lambda: _refused(port), "new connections are refused")
        assert client.is_alive() and server.poll() is None  # still waiting for the purchase

        loop.run_until_complete(lock.execute("ROLLBACK"))
        client.join(PATIENCE)
        assert not client.is_alive()
        r = answer["r"]
        assert r.status_code == 201, r.text
        assert server.wait(PATIENCE) == 0, log.read_text()
        booked = loop.run_until_complete(
            watch.fetchval(
                "SELECT count(*) FROM transactions WHERE tenant_id = $1 AND external_id = 'in-flight-1'",
                tenant.id,
            )
        )
        assert booked == 1
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(PATIENCE)
        for conn in (lock, watch):
            loop.run_until_complete(conn.close())
        loop.close()

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    posted = [line for line in lines if line.get("route") == "/v1/till/transactions"]
    assert len(posted) == 1 and posted[0]["status"] == 201 and posted[0]["request_id"]
    assert any(line.get("event") == "Shutting down" for line in lines)
    assert tenant.token not in log.read_text()


def test_several_workers_share_a_fresh_metrics_directory(
    db_file: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --workers 2, uvicorn runs with PROMETHEUS_MULTIPROC_DIR naming a new, empty directory that
    is gone (and the variable unset) once the server stops; one worker needs none."""
    import uvicorn

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    ok(cli("secrets", "init"))
    seen: list[tuple[str | None, list[str]]] = []

    def run(app: str, **options: Any) -> None:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        seen.append((directory, sorted(os.listdir(directory)) if directory else []))

    monkeypatch.setattr(uvicorn, "run", run)
    ok(cli("serve", "--workers", "2"))
    ok(cli("serve", "--workers", "1"))
    (directory, contents), (single, _) = seen
    assert directory is not None and contents == [] and not Path(directory).exists()
    assert single is None and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_serve_refuses_a_bad_shutdown_timeout_or_log_format(
    db_file: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A graceful timeout that is not a whole number of seconds in range, or an unknown log format:
    one error line, no server."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start"))
    ok(cli("secrets", "init"))
    for bad in ("0", "-5", "soon", "1.5", "99999"):
        monkeypatch.setenv("LOYALTY_SHUTDOWN_SECONDS", bad)
        one_line_error(cli("serve"), "LOYALTY_SHUTDOWN_SECONDS")
    monkeypatch.delenv("LOYALTY_SHUTDOWN_SECONDS")
    monkeypatch.setenv("LOYALTY_LOG_FORMAT", "xml")
    one_line_error(cli("serve"), "LOYALTY_LOG_FORMAT")
