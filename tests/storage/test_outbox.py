"""The outbox: every change that matters to another system writes its event in the same transaction,
each event follows its type's published schema, and a change that rolls back leaves no event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from loyalty.members import membership
from loyalty.ops import jobs
from loyalty.points import redemptions, refunds, transactions
from loyalty.programs import versions
from loyalty.storage import outbox
from loyalty.storage.db import Database
from loyalty.storage.models import Event, Transaction

from .conftest import NOW, PROGRAM, World, basket, make_world
from .helpers import member_with, post


async def _events(
    db: Database, tenant_id: int, member_id: int | None = None, *, tiers: bool = True
) -> list[Event]:
    """The events written, in order; ``tiers=False`` leaves out tier changes (a member's first
    purchase gives them the bottom tier)."""
    async with db.read() as s:
        query = select(Event).where(Event.tenant_id == tenant_id)
        if member_id is not None:
            query = query.where(Event.member_id == member_id)
        if not tiers:
            query = query.where(Event.type != "tier.changed")
        return list((await s.scalars(query.order_by(Event.id))).all())


def _checked(events: list[Event]) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of each event, after holding it to its type's schema and version."""
    for e in events:
        outbox.check(e.type, e.data)
        assert e.version == outbox.CATALOGUE[e.type].version
    return [(e.type, e.data) for e in events]


async def test_a_purchase_writes_its_event_with_the_booked_figures(world: World) -> None:
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posted = await post(world, "r1", 12_345, member)
    [(kind, data), (tier, change)] = _checked(await _events(world.db, world.tenant_id, member))
    assert (kind, tier) == ("purchase.posted", "tier.changed")
    assert change == {"from_tier": None, "to_tier": "bronze", "reason": "earn", "qualifying": 123}
    assert data["transaction_id"] == posted.transaction_id
    assert (data["amount"], data["points"], data["currency"]) == (12_345, 123, "EUR")
    assert data["external_id"] == "r1" and data["outlet_id"] == world.outlet_id
    assert data["pending_until"] == (NOW + timedelta(days=14)).isoformat()


async def test_a_replayed_receipt_writes_no_second_event(world: World) -> None:
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await post(world, "r1", 5_000, member)
    again = await post(world, "r1", 5_000, member)
    assert again.replayed
    assert [e.type for e in await _events(world.db, world.tenant_id, member, tiers=False)] == [
        "purchase.posted"
    ]


async def test_tier_upgrade_and_full_stamp_card_are_evented(world: World) -> None:
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="big",
        occurred_at=NOW,
        items=basket(("TV", 150_000, 1), ("WASH", 500, 5)),
        member_id=member,
        now=NOW,
    )
    events = _checked(await _events(world.db, world.tenant_id, member))
    kinds = [k for k, _ in events]
    assert kinds == ["purchase.posted", "tier.changed", "stamp_card.completed", "voucher.issued"]
    tier = events[1][1]
    assert (tier["from_tier"], tier["to_tier"], tier["reason"]) == (None, "silver", "earn")
    assert events[3][1]["reward"] == "FREE-WASH" and events[3][1]["stamp_card"] == "wash"


async def test_refund_redemption_cancel_and_adjustment_are_evented(world: World) -> None:
    member = await member_with(world, 500)
    posted = await post(world, "r1", 10_000, member)
    await refunds.refund(world.db, world.tenant_id, posted.transaction_id, lines={0: 1}, now=NOW)
    done = await redemptions.redeem(world.db, world.tenant_id, member, "COFFEE", now=NOW)
    await redemptions.cancel(world.db, world.tenant_id, done.redemption_id, now=NOW + timedelta(hours=1))
    events = _checked(await _events(world.db, world.tenant_id, member, tiers=False))
    assert [k for k, _ in events] == [
        "points.adjusted",
        "purchase.posted",
        "purchase.refunded",
        "redemption.created",
        "redemption.cancelled",
    ]
    assert events[0][1]["points"] == 500 and events[0][1]["reason"] == "setup"
    assert (events[2][1]["points"], events[2][1]["amount"]) == (100, 10_000)
    assert events[3][1]["cost"] == 300 and events[4][1]["points_returned"] == 300


async def test_release_expiry_and_tier_jobs_event_each_member_once(world: World) -> None:
    a = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    b = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await post(world, "a1", 20_000, a)
    await post(world, "a2", 30_000, a)
    await post(world, "b1", 150_000, b)  # silver on earning
    await jobs.release_pending(world.db, world.tenant_id, now=NOW + timedelta(days=15))
    await jobs.expire_lots(world.db, world.tenant_id, now=NOW + timedelta(days=120))
    await jobs.evaluate_tiers(world.db, world.tenant_id, now=NOW + timedelta(days=400))
    of_a = _checked(await _events(world.db, world.tenant_id, a, tiers=False))
    assert [k for k, _ in of_a] == ["purchase.posted", "purchase.posted", "points.released", "points.expired"]
    assert of_a[2][1] == {"points": 500, "lots": 2} and of_a[3][1] == {"points": 500, "lots": 2}
    of_b = _checked(await _events(world.db, world.tenant_id, b))
    assert [k for k, _ in of_b][-1] == "tier.changed"
    assert of_b[-1][1] | {"qualifying": 0} == {
        "from_tier": "silver",
        "to_tier": "bronze",
        "reason": "evaluation",
        "qualifying": 0,
    }


async def test_card_activation_and_block_are_evented(world: World) -> None:
    [number] = await membership.issue_cards(world.db, world.tenant_id, 1, actor="t", now=NOW)
    view = await membership.resolve_card(world.db, world.tenant_id, number, now=NOW)
    await membership.block_card(world.db, world.tenant_id, number, actor="t", now=NOW)
    assert _checked(await _events(world.db, world.tenant_id, view.id)) == [
        ("card.activated", {"card": number}),
        ("card.blocked", {"card": number}),
    ]


async def test_an_import_writes_no_events(world: World) -> None:
    """History brought in is not news: the importer books it without events."""
    from loyalty.ops import importer

    [number] = await membership.issue_cards(world.db, world.tenant_id, 1, actor="t", now=NOW)
    rows = [
        importer.Purchase(
            line=1, outlet="b1", external_id="h1", card=number,
            occurred_at=NOW - timedelta(days=3), items=basket(("ITEM", 1_000, 1)),
        )
    ]  # fmt: skip
    report = await importer.import_purchases(world.db, world.tenant_id, rows)
    assert report.imported == 1
    assert await _events(world.db, world.tenant_id) == []


async def test_a_posting_that_fails_in_the_database_leaves_no_event(world: World) -> None:
    """The event is part of the posting's own write: when the database refuses the posting (here a
    trigger on one basket line), neither the purchase nor its event is there."""
    db = world.db
    member = (await membership.create_member(db, world.tenant_id, now=NOW)).id
    if db.dialect == "sqlite":
        ddl = [
            "CREATE TRIGGER boom BEFORE INSERT ON transaction_items WHEN NEW.sku = 'BOOM'"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        ]
        undo = ["DROP TRIGGER boom"]
    else:
        ddl = [
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.sku = 'BOOM' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER boom BEFORE INSERT ON transaction_items FOR EACH ROW EXECUTE FUNCTION boom()",
        ]
        undo = ["DROP TRIGGER boom ON transaction_items", "DROP FUNCTION boom()"]
    async with db.write() as s:
        for sql in ddl:
            await s.execute(text(sql))
    try:
        with pytest.raises(Exception, match="boom"):
            await transactions.post_transaction(
                db,
                world.tenant_id,
                outlet_id=world.outlet_id,
                external_id="bad",
                occurred_at=NOW,
                items=basket(("ITEM", 1_000, 1), ("BOOM", 1_000, 1)),
                member_id=member,
                now=NOW,
            )
    finally:
        async with db.write() as s:
            for sql in undo:
                await s.execute(text(sql))
    async with db.read() as s:
        assert (await s.scalars(select(Transaction.id).where(Transaction.member_id == member))).all() == []
    assert await _events(db, world.tenant_id, member) == []
    await post(world, "good", 1_000, member)
    assert [e.type for e in await _events(db, world.tenant_id, member, tiers=False)] == ["purchase.posted"]


async def test_concurrent_postings_write_one_event_each(world: World) -> None:
    """Postings that race on one member (retried after a stale read) still write one event each."""
    member = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    posted = await asyncio.gather(*(post(world, f"c{i}", 1_000 + i, member) for i in range(12)))
    events = await _events(world.db, world.tenant_id, member, tiers=False)
    assert sorted(e.data["transaction_id"] for e in events) == sorted(p.transaction_id for p in posted)


def test_every_catalogued_type_has_a_schema_with_its_fields_described() -> None:
    schemas = outbox.json_schemas()
    assert set(schemas) == set(outbox.CATALOGUE)
    for name, entry in schemas.items():
        assert entry["version"] >= 1 and entry["summary"], name
        assert entry["data"]["type"] == "object", name
    assert schemas["points.expiring"]["marketing"] and not schemas["purchase.posted"]["marketing"]


async def _consent(db: Database, member_id: int) -> None:
    from sqlalchemy import update

    from loyalty.storage.models import Member

    async with db.write() as s:
        await s.execute(update(Member).where(Member.id == member_id).values(marketing_consent=True))


REMINDING = PROGRAM.replace(
    "points: {expire_after_months: 2, pending_days: 14, rounding: floor}",
    "points: {expire_after_months: 2, pending_days: 14, rounding: floor, expiry_reminder_days: 10}",
)


async def test_expiry_reminders_go_once_and_only_to_consenting_members(db: Database) -> None:
    """A marketing event: members who said yes get one reminder per expiry, ``days`` before it."""
    world = await make_world(db, REMINDING)
    yes = (await membership.create_member(db, world.tenant_id, now=NOW)).id
    no = (await membership.create_member(db, world.tenant_id, now=NOW)).id
    await _consent(db, yes)
    for who in (yes, no):
        await post(world, f"{who}-1", 20_000, who)
        await post(world, f"{who}-2", 30_000, who)
    # Lots of purchases on 2025-03-10 expire at the end of May (Europe/Berlin): 2025-05-31 22:00 UTC.
    early = await jobs.remind_expiring(db, world.tenant_id, now=datetime(2025, 5, 1, tzinfo=UTC))
    assert (early.members, early.points) == (0, 0)
    due = datetime(2025, 5, 25, tzinfo=UTC)
    first = await jobs.remind_expiring(db, world.tenant_id, now=due)
    again = await jobs.remind_expiring(db, world.tenant_id, now=due + timedelta(days=1))
    assert (first.members, first.lots, first.points) == (1, 2, 500)
    assert (again.members, again.points) == (0, 0)
    [(_, data)] = _checked(
        [e for e in await _events(db, world.tenant_id, yes) if e.type == "points.expiring"]
    )
    assert data == {"points": 500, "expires_at": "2025-05-31T22:00:00+00:00", "days_before": 10}
    assert not [e for e in await _events(db, world.tenant_id, no) if e.type == "points.expiring"]


async def test_segment_changes_are_evented_for_consenting_members_only(world: World) -> None:
    from loyalty.value import segments

    yes = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    no = (await membership.create_member(world.db, world.tenant_id, now=NOW)).id
    await _consent(world.db, yes)
    program = PROGRAM + "segments:\n  - {name: shoppers, when: member.visits >= 1}\n"
    await versions.create_version(world.db, world.tenant_id, program, actor="m", now=NOW - timedelta(days=1))
    for who in (yes, no):
        await post(world, f"s{who}", 2_000, who)
    await segments.run(world.db, world.tenant_id, now=NOW + timedelta(hours=1))
    changed = _checked([e for e in await _events(world.db, world.tenant_id) if e.type.startswith("member.")])
    assert changed == [("member.segment_changed", {"from_segment": "", "to_segment": "shoppers"})]
    assert [
        e.member_id for e in await _events(world.db, world.tenant_id) if e.type.startswith("member.")
    ] == [yes]


def test_the_event_catalogue_in_docs_is_current() -> None:
    """docs/events.md is generated from the catalogue: a schema change shows up there or fails here."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "events.md"
    assert path.read_text() == outbox.catalogue_markdown(), (
        "docs/events.md is stale: python -m loyalty.storage.outbox > docs/events.md"
    )
