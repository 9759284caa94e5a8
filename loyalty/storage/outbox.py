"""The outbox: events for other systems, written in the transaction of the change they tell of.

Every event names its member and has a type from :data:`CATALOGUE`, whose pydantic model is the
versioned schema of its ``data`` (``docs/events.md`` is generated from it, and the tests hold every
event the engine writes to it). A ledger operation adds its events to its booking (:func:`row`,
written in the booking's one statement); other writers add them to their session (:func:`record`).
The dispatcher (``loyalty.events``) later fans each event out to the webhook endpoints that take it.

Marketing events (``marketing=True``) are written only for members who consented to marketing; the
writer of such an event checks the member's ``marketing_consent`` in the same transaction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from loyalty.storage.models import Event

#: ``LOYALTY_OUTBOX=off``: postings write no events. Only for measuring what the outbox costs a posting
#: (``benchmarks/load_till.py`` runs the till's posts both ways in one run); never in a deployment.
POSTING_EVENTS = os.environ.get("LOYALTY_OUTBOX", "on") != "off"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


Minor = Field(description="Money in minor units of the program's currency (cents).")


class PurchasePosted(_Data):
    transaction_id: int
    outlet_id: int
    external_id: str = Field(description="The till's own receipt id.")
    occurred_at: datetime
    amount: int = Minor
    currency: str
    points: int
    pending_until: datetime | None = Field(description="When the points turn spendable (None: at once).")
    program_version_id: int = Field(description="The program version that priced it (its id).")


class PurchaseRefunded(_Data):
    refund_id: int
    transaction_id: int
    amount: int = Minor
    points: int = Field(description="Points the refund took back.")
    debt: int = Field(description="Of those, points already spent: owed by the member.")


class RedemptionCreated(_Data):
    redemption_id: int
    reward: str
    cost: int = Field(description="Points paid (0 for a voucher).")
    outlet_id: int | None
    voucher_id: int | None = Field(description="The voucher used, for a voucher's reward.")


class RedemptionCancelled(_Data):
    redemption_id: int
    points_returned: int
    voucher_id: int | None = Field(description="The voucher given back, for a voucher's reward.")


class VoucherIssued(_Data):
    voucher_id: int
    reward: str
    stamp_card: str
    transaction_id: int


class StampCardCompleted(_Data):
    stamp_card: str
    reward: str
    voucher_id: int
    transaction_id: int


class TierChanged(_Data):
    from_tier: str | None
    to_tier: str
    reason: str = Field(
        description="``earn`` (an upgrade at a purchase), ``evaluation`` (the tier job) or ``merge``."
    )
    qualifying: int


class PointsReleased(_Data):
    points: int
    lots: int


class PointsExpiring(_Data):
    points: int
    expires_at: datetime
    days_before: int


class PointsExpired(_Data):
    points: int
    lots: int


class PointsAdjusted(_Data):
    adjustment_id: int
    points: int
    reason: str


class CardChanged(_Data):
    card: str = Field(description="The card number (removed from stored events when the member is erased).")


class CardReplaced(_Data):
    old_card: str
    new_card: str


class MemberErased(_Data):
    pass


class MemberMerged(_Data):
    into_member_id: int
    points_moved: int


class SegmentChanged(_Data):
    from_segment: str
    to_segment: str


class ConsentChanged(_Data):
    marketing: bool
    source: str


@dataclass(frozen=True)
class EventType:
    version: int
    schema: type[_Data]
    #: Written only for members who consented to marketing.
    marketing: bool
    summary: str


CATALOGUE: dict[str, EventType] = {
    "purchase.posted": EventType(
        1, PurchasePosted, False, "A purchase was booked at a till (an import of history writes none)."
    ),
    "purchase.refunded": EventType(1, PurchaseRefunded, False, "Items of a purchase were returned."),
    "redemption.created": EventType(1, RedemptionCreated, False, "A reward was redeemed."),
    "redemption.cancelled": EventType(1, RedemptionCancelled, False, "A redemption was cancelled."),
    "voucher.issued": EventType(1, VoucherIssued, False, "A full stamp card issued a voucher."),
    "stamp_card.completed": EventType(1, StampCardCompleted, False, "A stamp card was filled."),
    "tier.changed": EventType(1, TierChanged, False, "The member's tier changed."),
    "points.released": EventType(1, PointsReleased, False, "Pending points turned spendable."),
    "points.expiring": EventType(1, PointsExpiring, True, "Points expire soon (a reminder)."),
    "points.expired": EventType(1, PointsExpired, False, "Points expired."),
    "points.adjusted": EventType(1, PointsAdjusted, False, "An admin corrected the balance."),
    "card.activated": EventType(1, CardChanged, False, "A card was bound to the member."),
    "card.blocked": EventType(1, CardChanged, False, "A card was blocked."),
    "card.replaced": EventType(1, CardReplaced, False, "A lost card was replaced by a new one."),
    "member.erased": EventType(1, MemberErased, False, "The member's personal data was erased."),
    "member.merged": EventType(1, MemberMerged, False, "The member was merged into another."),
    "member.segment_changed": EventType(1, SegmentChanged, True, "A segment run moved the member."),
    "member.consent_changed": EventType(
        1, ConsentChanged, False, "Marketing consent was given or withdrawn."
    ),
}

EventName = Literal[
    "purchase.posted",
    "purchase.refunded",
    "redemption.created",
    "redemption.cancelled",
    "voucher.issued",
    "stamp_card.completed",
    "tier.changed",
    "points.released",
    "points.expiring",
    "points.expired",
    "points.adjusted",
    "card.activated",
    "card.blocked",
    "card.replaced",
    "member.erased",
    "member.merged",
    "member.segment_changed",
    "member.consent_changed",
]


def row(tenant_id: int, member_id: int, type: str, data: dict[str, Any], *, at: datetime) -> dict[str, Any]:
    """An event as a row (for a ledger booking, or a bulk insert). ``data`` must follow the type's
    schema; instants in it are written as ISO 8601 text."""
    return {
        "tenant_id": tenant_id,
        "member_id": member_id,
        "type": type,
        "version": CATALOGUE[type].version,
        "occurred_at": at,
        "data": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()},
    }


async def record(
    session: AsyncSession, tenant_id: int, member_id: int, type: str, data: dict[str, Any], *, at: datetime
) -> None:
    """Append one event in the caller's transaction: the change and its event commit together."""
    await session.execute(insert(Event).values(row(tenant_id, member_id, type, data, at=at)))


def check(type: str, data: dict[str, Any]) -> None:
    """Raise if ``data`` does not follow the type's schema (tests hold every written event to it)."""
    CATALOGUE[type].schema.model_validate(data)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Each event type's JSON schema, with its version and whether it is a marketing event."""
    return {
        name: {
            "version": t.version,
            "marketing": t.marketing,
            "summary": t.summary,
            "data": t.schema.model_json_schema(),
        }
        for name, t in CATALOGUE.items()
    }


def catalogue_markdown() -> str:
    """``docs/events.md``: the catalogue with each type's JSON schema (a test keeps the file equal to
    this; regenerate with ``python -m loyalty.storage.outbox > docs/events.md``)."""
    import json

    lines = [
        "# Events",
        "",
        "<!-- Generated by `python -m loyalty.storage.outbox > docs/events.md`; a test keeps it current. -->",
        "",
        "Every event is written to the outbox in the same database transaction as the change it tells of",
        "and delivered to each subscribed webhook endpoint as a Standard Webhooks message (README,",
        '"Events and webhooks"). The body of a message:',
        "",
        "```json",
        '{"id": "evt_1042", "type": "purchase.posted", "version": 1,',
        ' "timestamp": "2026-03-01T09:30:00+00:00", "member_id": 17,',
        ' "data": {"transaction_id": 311, "...": "..."}}',
        "```",
        "",
        "`id` is also the `webhook-id` header: the same on every retry, so a receiver deduplicates by it.",
        "`timestamp` is when the change happened; `version` is the version of the type's `data` schema",
        "(a change that is not backwards compatible gets a new version, never a silent edit). Instants",
        "are ISO 8601 with their offset; money is in minor units of the program's currency.",
        "Marketing events are written only for members who consented to marketing.",
        "",
        "| type | version | marketing | when |",
        "|---|---|---|---|",
    ]
    for name, t in CATALOGUE.items():
        lines.append(f"| `{name}` | {t.version} | {'yes' if t.marketing else 'no'} | {t.summary} |")
    for name, t in CATALOGUE.items():
        schema = t.schema.model_json_schema()
        schema.pop("title", None)
        lines += ["", f"## `{name}` (version {t.version})", "", t.summary, "", "```json"]
        lines += json.dumps(schema, indent=2, sort_keys=True).splitlines()
        lines.append("```")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(catalogue_markdown(), end="")
