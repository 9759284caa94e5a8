"""What the chaos scenarios share: a world to run against, a real server to kill, and the tally.

A scenario drives the API as tills do (httpx, the typed card number, a fresh Idempotency-Key per till
action and the same one on every retry of it), injects its faults, then counts against the database:
operations, faults injected, failures (an answer no till should get: a 5xx other than 503, or a
refusal of a valid request), lost (acknowledged but not booked), doubled (booked more than once, or a
retry answered differently from the first answer) and audit mismatches (``loyalty audit``'s findings).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from loyalty.admin import access, tenants
from loyalty.members import lookup, membership
from loyalty.ops.audit import audit
from loyalty.programs import versions
from loyalty.storage.db import Database

ROOT = Path(__file__).resolve().parents[2]
#: A program whose points do not depend on the member's state (no tiers, no visit rules), so that
#: the order in which receipts arrive cannot change what they earn.
PROGRAM = """
program: Scenario Bonus
currency: EUR
timezone: Europe/Berlin
points:
  expire_after_months: 24
  pending_days: 14
  rounding: floor
  max_receipt_age_days: 30
rewards:
  - {code: COFFEE, name: Free coffee, cost: 300}
  - {code: FREE-WASH, name: Free car wash}
rules:
  - id: base
    for_each: item
    where: item.category != "giftcard"
    earn: {per_currency_unit: 1}
  - id: organic-double
    for_each: item
    where: item.category == "organic"
    earn: {multiplier: 2}
  - id: car-wash-stamps
    for_each: item
    where: item.sku == "WASH"
    stamp: {card: wash, count: item.quantity, reward_at: 10, reward: FREE-WASH}
"""
COFFEE = 300


@dataclass
class Row:
    """One line of the soak table."""

    scenario: str
    database: str
    operations: int = 0
    faults: int = 0
    failures: int = 0
    lost: int = 0
    doubled: int = 0
    mismatches: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.failures or self.lost or self.doubled or self.mismatches)

    def note(self, text: str) -> None:
        if len(self.notes) < 10:
            self.notes.append(text)


HEADER = (
    "scenario",
    "database",
    "operations",
    "faults injected",
    "failures",
    "lost",
    "doubled",
    "audit mismatches",
)


def table(rows: list[Row]) -> str:
    cells = [HEADER] + [
        (
            r.scenario,
            r.database,
            *(str(v) for v in (r.operations, r.faults, r.failures, r.lost, r.doubled, r.mismatches)),
        )
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(c))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


@dataclass
class World:
    url: str
    tenant_id: int
    outlet_id: int
    cashier: str
    admin: str
    cards: list[str]
    member_ids: dict[str, int]

    def till(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cashier}", "Idempotency-Key": key}


async def build_world(url: str, members_count: int, *, points: int = 0) -> World:
    """A tenant with the scenario program (valid since 60 days), one outlet, keys, and
    ``members_count`` activated cards, each given ``points`` available points."""
    from loyalty.points.adjustments import adjust

    db = Database.from_url(url)
    now = datetime.now(UTC)
    since = now - timedelta(days=60)
    code = f"s{os.urandom(4).hex()}"
    try:
        t = await tenants.create_tenant(db, code=code, name=code, card_prefix="6012", now=since)
        draft = await versions.save_draft(db, t.id, PROGRAM, actor="scenario", now=since)
        await versions.publish(db, t.id, draft.id, actor="scenario", now=since, valid_from=since)
        partner = await tenants.create_partner(db, t.id, code="p", name="P", actor="scenario", now=now)
        outlet = await tenants.create_outlet(
            db, t.id, partner_id=partner.id, code="o", name="O", actor="scenario", now=now
        )
        cashier = await access.create_key(
            db, t.id, role="cashier", name="till", actor="scenario", now=now, outlet_id=outlet.id
        )
        admin = await access.create_key(db, t.id, role="admin", name="admin", actor="scenario", now=now)
        cards = await membership.issue_cards(
            db, t.id, members_count, actor="scenario", now=now, outlet_id=outlet.id
        )
        ids = {}
        for number in cards:
            ids[number] = (await membership.resolve_card(db, t.id, number, now=now)).id
            if points:
                await adjust(db, t.id, ids[number], points, reason="scenario", actor="scenario", now=now)
        assert await lookup.card_ids(db, t.id, cards)
        return World(url, t.id, outlet.id, cashier.secret, admin.secret, cards, ids)
    finally:
        await db.dispose()


async def count(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    db = Database.from_url(url)
    try:
        async with db.read() as s:
            return [tuple(r) for r in (await s.execute(text(sql), params)).all()]
    finally:
        await db.dispose()


async def audit_mismatches(url: str, tenant_id: int, row: Row) -> None:
    db = Database.from_url(url)
    try:
        report = await audit(db, tenant_id)
    finally:
        await db.dispose()
    for finding in report.findings:
        row.mismatches += finding.count
        row.note(f"audit {finding.check}: {finding.examples[:2]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``uvicorn api.app:create_app`` in its own process group; killed and restarted at will."""

    def __init__(
        self, url: str, secrets_file: Path, log: Path, *, workers: int = 1, env: dict[str, str] | None = None
    ):
        self.url, self.secrets_file, self.log, self.workers = url, secrets_file, log, workers
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        env = {
            **os.environ,
            "LOYALTY_DATABASE_URL": self.url,
            "LOYALTY_SECRETS_FILE": str(self.secrets_file),
            "LOYALTY_RATE_LIMIT": "1000000",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **self.env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and self.workers == 1:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server not up after 60 s: {self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure(self) -> bool:
        """Start the server again if it died; True if it had to."""
        if self.alive():
            return False
        self.stop()
        self.start()
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""


def run(coro: Any) -> Any:
    return asyncio.run(coro)
