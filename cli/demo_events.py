"""The demo's events step: a CRM's webhook receiver on this machine gets the till day's events, each
signature checked with the Standard Webhooks library; then one member is erased and the books are
shown unchanged."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from loyalty.events import endpoints
from loyalty.events.dispatcher import Dispatcher, Settings
from loyalty.events.guard import Guard
from loyalty.ops import audit as ledger_audit
from loyalty.ops import reports
from loyalty.privacy import erasure, export
from loyalty.storage.db import Database

#: What the demo's CRM subscribes to: the till day's news (the month-end jobs' releases and expiries
#: of 2,000 members would be sent too, but are not the point here).
TYPES = ["purchase.posted", "purchase.refunded", "redemption.created", "tier.changed", "voucher.issued"]


@dataclass
class Receiver:
    """A minimal HTTP/1.1 webhook receiver: verifies each message, drops repeats by ``webhook-id``."""

    secret: str = ""
    seen: set[str] = field(default_factory=set)
    types: Counter[str] = field(default_factory=Counter)
    forged: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                try:
                    message: Any = Webhook(self.secret).verify(body, headers)
                except WebhookVerificationError:
                    self.forged += 1
                    writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                else:
                    if headers["webhook-id"] not in self.seen:
                        self.seen.add(headers["webhook-id"])
                        self.types[message["type"]] += 1
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield receiver, f"http://127.0.0.1:{port}/hooks"
    finally:
        server.close()
        await server.wait_closed()


async def subscribe(db: Database, tenant_id: int, url: str, receiver: Receiver, now: datetime) -> None:
    """The CRM's endpoint. Loopback is allowed here by the operator (the demo), never by a tenant."""
    created = await endpoints.create_endpoint(
        db, tenant_id, url, event_types=TYPES, actor="demo", now=now, guard=Guard(allow_private=True)
    )
    receiver.secret = created.secret


async def deliver(db: Database, receiver: Receiver, out: Console) -> None:
    async with Dispatcher(db, Settings(allow_private=True)) as d:
        stats = await d.run(once=True)
    kinds = ", ".join(f"{kind} {n}" for kind, n in receiver.types.most_common())
    out.print(
        f"Webhooks: {len(receiver.seen):,} events delivered to a receiver on this machine, every signature"
        f" verified with the Standard Webhooks library ({receiver.forged} refused): {kinds}"
    )
    if stats.dead or receiver.forged or not receiver.seen:
        raise RuntimeError(f"the demo's webhooks did not arrive: {stats}")


async def erase_one(
    db: Database,
    tenant_id: int,
    member_id: int,
    now: datetime,
    out: Console,
    audited: ledger_audit.AuditReport,
) -> None:
    """Erase a member; the liability, the partner settlement and the audit (``audited``: the one the
    demo ran just before) are as before."""
    since, until = now - timedelta(days=3 * 365), now + timedelta(days=1)
    before = (
        await reports.liability(db, tenant_id),
        await reports.settlement(db, tenant_id, since=since, until=until),
        audited,
    )
    await erasure.erase(db, tenant_id, member_id, actor="demo", now=now)
    after = (
        await reports.liability(db, tenant_id),
        await reports.settlement(db, tenant_id, since=since, until=until),
        await ledger_audit.audit(db, tenant_id),
    )
    document = await export.export(db, tenant_id, member_id, now=now)
    same = before[0] == after[0] and before[1] == after[1] and _figures(before[2]) == _figures(after[2])
    if not same or not after[2].ok:
        raise RuntimeError("erasing a member changed the books")
    out.print(
        f"Erased member {member_id} on request: cards unlinked and blocked, {len(document['transactions'])}"
        " purchase(s) kept without their basket detail; liability, partner settlement and the audit"
        f" ({after[2].purchases:,} purchases, {after[2].purchases_recorded} checked against their recorded"
        " points) are the same as before."
    )


def _figures(report: ledger_audit.AuditReport) -> tuple[int, int, int, int, bool]:
    return report.members, report.entries, report.lots, report.purchases, report.ok
