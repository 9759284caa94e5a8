"""A shop with history for the privacy tests: several members, purchases with item detail at two
partners, a refund, a redemption, an expiry, a stamp voucher, a segment run and webhook deliveries;
and every figure the books answer with, to compare before and after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, update

import rules
from loyalty.admin import tenants
from loyalty.members import membership
from loyalty.ops import audit, jobs, reports
from loyalty.points import adjustments, redemptions, transactions
from loyalty.storage.db import Database
from loyalty.storage.models import Event, WebhookDelivery, WebhookEndpoint
from loyalty.value import segments
from tests.storage.conftest import NOW, PROGRAM, SETUP, make_world

__all__ = [
    "NOW",
    "OLD",
    "PRIVATE_PROGRAM",
    "PROGRAM",
    "RECENT",
    "SECRET_SKUS",
    "SECRET_TAGS",
    "SETUP",
    "Shop",
    "build_shop",
    "figures",
    "item",
    "make_world",
]

#: The storage test program, with basket detail kept six months and one segment.
PRIVATE_PROGRAM = (
    PROGRAM.replace("tiers:\n", "privacy: {basket_detail_months: 6}\ntiers:\n", 1)
    + """\
segments:
  - name: regular
    when: customer.purchase_days >= 2
  - name: occasional
    when: customer.purchase_days >= 1
"""
)
OLD = datetime(2024, 6, 10, 10, 0, tzinfo=UTC)
RECENT = NOW - timedelta(days=9)
#: What the shop's target member bought: SKUs and tags that must vanish with an erasure.
SECRET_SKUS = ("SKU-RYE-750", "SKU-OAT-MILK", "WASH")
SECRET_TAGS = ("vip-list", "newsletter-2024", "organic-fan")


def item(sku: str, cents: int, quantity: int = 1, category: str = "food", tags: tuple[str, ...] = ()) -> Any:
    return rules.Item(sku=sku, unit_price=cents, quantity=quantity, category=category, tags=tags)


@dataclass
class Shop:
    db: Database
    tenant_id: int
    bakery: int
    wash: int
    alice: int
    bob: int
    carol: int
    #: Card numbers per member.
    cards: dict[int, list[str]]
    #: Alice's purchases: old (bakery), old (wash), recent (bakery, refunded in part).
    alice_purchases: list[int]
    other_purchases: list[int]
    endpoint_id: int


async def build_shop(db: Database, program: str = PRIVATE_PROGRAM) -> Shop:
    world = await make_world(db, program)
    t = world.tenant_id
    wash_partner = await tenants.create_partner(db, t, code="carwash", name="Car wash", actor="t", now=SETUP)
    wash = (
        await tenants.create_outlet(
            db, t, partner_id=wash_partner.id, code="w1", name="Wash 1", actor="t", now=SETUP
        )
    ).id
    numbers = await membership.issue_cards(db, t, 4, actor="t", now=SETUP, outlet_id=world.outlet_id)
    alice = (await membership.create_member(db, t, now=SETUP, tags=SECRET_TAGS[:2])).id
    bob = (await membership.create_member(db, t, now=SETUP, tags=("staff",))).id
    carol = (await membership.resolve_card(db, t, numbers[3], now=SETUP)).id
    for number, member in ((numbers[0], alice), (numbers[1], alice), (numbers[2], bob)):
        await membership.assign_card(db, t, number, member, actor="t", now=SETUP)

    async def buy(member: int, outlet: int, ext: str, at: datetime, *items: Any) -> int:
        posted = await transactions.post_transaction(
            db,
            t,
            outlet_id=outlet,
            external_id=ext,
            occurred_at=at,
            items=tuple(items),
            member_id=member,
            now=at,
        )
        return posted.transaction_id

    a1 = await buy(
        alice,
        world.outlet_id,
        "a1",
        OLD,
        item("SKU-RYE-750", 3000, 2, "bakery", ("organic-fan",)),
        item("SKU-OAT-MILK", 250, 4, "dairy", ("organic-fan", "vegan")),
    )
    a2 = await buy(alice, wash, "a2", OLD + timedelta(hours=2), item("WASH", 1500, 5, "service"))
    b1 = await buy(bob, world.outlet_id, "b1", OLD, item("SKU-BAGUETTE", 2000, 1))
    await jobs.release_pending(db, t, now=OLD + timedelta(days=20))
    await redemptions.redeem(db, t, alice, "CAKE", now=OLD + timedelta(days=21), outlet_id=world.outlet_id)
    await jobs.expire_lots(db, t, now=datetime(2024, 9, 5, tzinfo=UTC))
    a3 = await buy(
        alice,
        world.outlet_id,
        "a3",
        RECENT,
        item("SKU-RYE-750", 3000, 3, "bakery", ("organic-fan",)),
        item("SKU-OAT-MILK", 250, 2, "dairy"),
    )
    await transactions.refund(db, t, a3, lines={0: 1}, now=RECENT + timedelta(hours=1), external_id="r1")
    c1 = await buy(carol, wash, "c1", RECENT, item("WASH", 1500, 2, "service"))
    b2 = await buy(bob, wash, "b2", RECENT, item("WASH", 1500, 1, "service"))
    await adjustments.adjust(db, t, carol, 40, reason="goodwill", actor="t", now=RECENT)
    await segments.run(db, t, now=NOW)
    async with db.write() as s:
        endpoint_id = await s.scalar(
            insert(WebhookEndpoint)
            .values(
                tenant_id=t,
                url="https://crm.example.com/hook",
                description="crm",
                event_types=[],
                secret="whsec_dGVzdA==",
                state="active",
                created_at=SETUP,
                created_by="t",
                updated_at=SETUP,
            )
            .returning(WebhookEndpoint.id)
        )
        events = (
            await s.execute(Event.__table__.select().where(Event.tenant_id == t).order_by(Event.id))
        ).all()
        await s.execute(
            insert(WebhookDelivery),
            [
                {
                    "tenant_id": t,
                    "endpoint_id": endpoint_id,
                    "event_id": e.id,
                    "member_id": e.member_id,
                    "state": "delivered" if i % 2 else "pending",
                    "attempts": 1,
                    "next_attempt_at": NOW,
                    "created_at": NOW,
                }
                for i, e in enumerate(events)
            ],
        )
        # As the dispatcher's fan-out leaves them: an event with its deliveries is dispatched (else a
        # later fan-out of every tenant, as tests/storage/test_shard_ready.py runs, would fan it again).
        await s.execute(update(Event).where(Event.tenant_id == t).values(dispatched=True))
    assert endpoint_id is not None
    return Shop(
        db,
        t,
        world.outlet_id,
        wash,
        alice,
        bob,
        carol,
        {alice: numbers[:2], bob: [numbers[2]], carol: [numbers[3]]},
        [a1, a2, a3],
        [b1, c1, b2],
        endpoint_id,
    )


async def figures(db: Database, tenant_id: int) -> dict[str, Any]:
    """Every figure the books answer with: liability, monthly movements, partner settlement, audit."""
    report = await audit.audit(db, tenant_id)
    return {
        "liability": await reports.liability(db, tenant_id),
        "monthly": await reports.movements(
            db, tenant_id, since=datetime(2024, 1, 1, tzinfo=UTC), months=18, now=NOW
        ),
        "partners": await reports.settlement(
            db, tenant_id, since=datetime(2024, 1, 1, tzinfo=UTC), until=datetime(2026, 1, 1, tzinfo=UTC)
        ),
        "audit": (report.ok, report.members, report.entries, report.lots, report.purchases, report.findings),
    }
