"""How far behind the webhook dispatcher is, for a metrics scrape: events not fanned out yet, deliveries
not delivered yet, and the age of the oldest of each.

Read often (every scrape of every worker) and while the backlog may be at its longest (a receiver down
for hours), so each figure is one statement over a partial index that holds only the backlog
(``ix_events_undispatched``, ``ix_webhook_deliveries_pending``), and the counts stop at
:data:`BACKLOG_CAP` rows: past that the exact figure does not change what an operator does, and an
unbounded count would cost a scrape more the worse things get. Nothing here is per tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, literal_column, select, text

from loyalty.storage.db import Database
from loyalty.storage.models import Event, WebhookDelivery

#: Most backlog rows a reading looks at (per figure). A count that reaches it means "at least this".
BACKLOG_CAP = 10_000


@dataclass(frozen=True, slots=True)
class Backlog:
    """One reading. ``*_capped`` is true when a count stopped at :data:`BACKLOG_CAP`; the oldest age
    of deliveries is then the oldest among the rows looked at (a lower bound)."""

    undispatched_events: int
    #: Seconds since the oldest undispatched event occurred (its ``occurred_at``: a receipt a till
    #: sent late counts from when the purchase happened), 0 when there is none.
    oldest_event_seconds: float
    pending_deliveries: int
    #: Seconds since the oldest pending delivery was created (fanned out), 0 when there is none.
    oldest_delivery_seconds: float
    events_capped: bool
    deliveries_capped: bool


def _age(now: datetime, then: datetime | None) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None:  # SQLite hands back naive UTC
        then = then.replace(tzinfo=UTC)
    return max((now - then).total_seconds(), 0.0)


async def backlog(db: Database, *, now: datetime, cap: int = BACKLOG_CAP) -> Backlog:
    """The dispatcher's backlog right now (see the module docstring for what bounds its cost)."""
    undispatched = (
        select(Event.id)
        .where(text("NOT dispatched"))  # the partial index's own predicate
        .limit(cap)
        .subquery()
    )
    # The oldest by id: the first entry of the partial index, one row read however long the backlog.
    first_event = select(Event.occurred_at).where(text("NOT dispatched")).order_by(Event.id).limit(1)
    pending = (
        select(WebhookDelivery.created_at)
        .where(WebhookDelivery.state == literal_column("'pending'"))  # a literal: the partial index matches
        .limit(cap)
        .subquery()
    )
    async with db.read() as s:
        events = int((await s.execute(select(func.count()).select_from(undispatched))).scalar_one())
        oldest_event = (await s.execute(first_event)).scalar_one_or_none()
        deliveries, oldest_delivery = (
            await s.execute(select(func.count(), func.min(pending.c.created_at)).select_from(pending))
        ).one()
    return Backlog(
        undispatched_events=events,
        oldest_event_seconds=_age(now, oldest_event),
        pending_deliveries=int(deliveries),
        oldest_delivery_seconds=_age(now, oldest_delivery),
        events_capped=events >= cap,
        deliveries_capped=int(deliveries) >= cap,
    )
