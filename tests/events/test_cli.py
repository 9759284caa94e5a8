"""``loyalty webhooks ...`` and ``loyalty dispatch`` on a SQLite file, against a loopback receiver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from standardwebhooks.webhooks import Webhook

from loyalty.members import membership
from loyalty.storage import outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Event, Tenant
from tests.cli import conftest as _cli
from tests.cli.conftest import Cli, ok, one_line_error

from .conftest import HANG, Receiver

cli = _cli.cli
db_file = _cli.db_file
migrated_template = _cli.migrated_template
ROOT = Path(__file__).resolve().parents[2]


def _events(path: Path, n: int, *, members: int = 1) -> list[int]:
    """``n`` events of ``members`` new members of the only tenant, written a second from now."""

    async def write() -> list[int]:
        db = Database.from_url(f"sqlite+aiosqlite:///{path}")
        try:
            async with db.read() as s:
                tenant = (await s.scalars(select(Tenant.id))).one()
            now = datetime.now(UTC)
            ids = [(await membership.create_member(db, tenant, now=now)).id for _ in range(members)]
            at = now + timedelta(seconds=1)
            rows = [
                outbox.row(
                    tenant,
                    ids[i % members],
                    "points.adjusted",
                    {"adjustment_id": i, "points": i, "reason": "t"},
                    at=at,
                )
                for i in range(n)
            ]
            async with db.write() as s:
                return sorted((await s.scalars(insert(Event).returning(Event.id), rows)).all())
        finally:
            await db.dispose()

    return asyncio.run(write())


def _json(result: Any) -> Any:
    return json.loads(result.out)


def test_an_operator_manages_webhooks_and_dispatches(cli: Cli, db_file: Path, receiver: Receiver) -> None:
    """Create (a private target only with --allow-private), list without secrets, dispatch once,
    read the log, rotate, disable, enable, redeliver; bad input is one line on stderr."""
    ok(cli("tenant", "create", "demo", "--name", "Demo", "--card-prefix", "7301"))
    one_line_error(cli("webhooks", "create", receiver.url), "public addresses only")
    one_line_error(
        cli("webhooks", "create", receiver.url, "--allow-private", "--event", "tier.change"),
        "did you mean tier.changed?",
    )
    created = ok(cli("webhooks", "create", receiver.url, "--allow-private", "--description", "CRM"))
    secret = created.out.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    listed = ok(cli("webhooks", "list", "--format", "json"))
    assert secret not in listed.out
    assert [(e["id"], e["state"], e["events"]) for e in _json(listed)] == [(1, "active", "(all)")]

    ids = _events(db_file, 3)
    time.sleep(1.1)  # the dispatcher's clock must reach the events' time (a second ahead)
    sent = ok(cli("dispatch", "--once", "--allow-private"))
    assert "3 delivered" in sent.out
    assert sorted(r.webhook_id for r in receiver.accepted()) == sorted(f"evt_{i}" for i in ids)
    for r in receiver.accepted():
        Webhook(secret).verify(r.body, r.headers)

    log = _json(ok(cli("webhooks", "deliveries", "--endpoint", "1", "--format", "json")))
    assert {(d["state"], d["attempts"], d["last_status"]) for d in log} == {("delivered", 1, 200)}
    one_line_error(cli("webhooks", "deliveries", "--state", "lost"), "not 'lost'")
    one_line_error(cli("webhooks", "deliveries", "--endpoint", "99"), "not found")

    rotated = ok(cli("webhooks", "rotate", "1"))
    new_secret = rotated.out.strip().splitlines()[-1]
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert "disabled" in ok(cli("webhooks", "disable", "1")).out
    assert "active" in ok(cli("webhooks", "enable", "1")).out

    again = ok(cli("webhooks", "redeliver", str(log[-1]["id"])))
    assert "pending again" in again.out
    one_line_error(cli("webhooks", "redeliver", str(log[-1]["id"])), "still pending")
    ok(cli("dispatch", "--once", "--allow-private"))
    last = receiver.accepted()[-1]
    assert last.webhook_id == log[-1]["webhook_id"]
    for key in (secret, new_secret):  # both sign during the rotation's overlap
        Webhook(key).verify(last.body, last.headers)
    one_line_error(cli("webhooks", "redeliver", "4242"), "not found")
    one_line_error(cli("webhooks", "rotate", "77"), "not found")


def test_a_killed_dispatch_process_loses_nothing(cli: Cli, db_file: Path, receiver: Receiver) -> None:
    """``loyalty dispatch`` killed (SIGKILL) while its requests hang leaves its deliveries pending;
    once the lease has run out, another dispatcher delivers every event."""
    ok(cli("tenant", "create", "demo", "--name", "Demo", "--card-prefix", "7301"))
    ok(cli("webhooks", "create", receiver.url, "--allow-private"))
    ids = _events(db_file, 6, members=3)
    time.sleep(1.1)
    arrived: list[str] = []
    receiver.respond = lambda r: (arrived.append(r.webhook_id), HANG)[1]
    env = {**os.environ, "LOYALTY_DATABASE_URL": f"sqlite+aiosqlite:///{db_file}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "dispatch", "--allow-private"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while len(arrived) < 3 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert len(arrived) == 3, process.stderr.read() if process.poll() is not None else arrived  # type: ignore[union-attr]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    receiver.respond = lambda _r: 200
    receiver.release.set()

    async def finish() -> None:
        from loyalty.events.dispatcher import Dispatcher

        from .conftest import fast

        db = Database.from_url(f"sqlite+aiosqlite:///{db_file}")
        try:
            later = lambda: datetime.now(UTC) + timedelta(minutes=2)  # noqa: E731 - past the lease
            async with Dispatcher(db, fast(), clock=later) as d:
                await d.run(once=True)
        finally:
            await db.dispose()

    asyncio.run(finish())
    assert {r.webhook_id for r in receiver.accepted()} == {f"evt_{i}" for i in ids}


def test_serve_with_dispatch_runs_a_dispatcher_beside_the_server(
    cli: Cli, db_file: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --dispatch`` sends webhooks from a thread while uvicorn runs, and stops it after."""
    import threading

    import uvicorn

    ok(cli("secrets", "init"))
    ok(cli("tenant", "create", "demo", "--name", "Demo", "--card-prefix", "7301"))
    ok(cli("webhooks", "create", receiver.url, "--allow-private"))
    ids = _events(db_file, 2)
    monkeypatch.setenv("LOYALTY_WEBHOOKS_ALLOW_PRIVATE", "1")
    served: list[bool] = []

    def fake_run(*_args: Any, **_kw: Any) -> None:
        deadline = time.monotonic() + 20
        while len(receiver.accepted()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        served.append(True)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    ok(cli("serve", "--dispatch"))
    assert served and sorted(r.webhook_id for r in receiver.accepted()) == sorted(f"evt_{i}" for i in ids)
    assert not any(t.name == "webhook-dispatcher" for t in threading.enumerate())
