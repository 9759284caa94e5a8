"""The export: every section of what the engine holds about a member, in one JSON document."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from loyalty.errors import NotFound
from loyalty.members import consent
from loyalty.privacy import export
from loyalty.storage.db import Database
from loyalty.storage.models import Event, LedgerEntry, PointLot

from .shop import NOW, build_shop, make_world

SECTIONS = {
    "member",
    "consents",
    "cards",
    "transactions",
    "ledger_entries",
    "lots",
    "redemptions",
    "vouchers",
    "stamp_cards",
    "tier_history",
    "adjustments",
    "figures",
    "segment_moves",
    "events",
}


async def test_the_export_holds_every_section_of_the_member(db: Database) -> None:
    """A member with purchases, a refund, a redemption, an expiry, a voucher, segment figures and
    webhook deliveries finds each of them in their export, and only their own rows."""
    shop = await build_shop(db)
    t = shop.tenant_id
    await consent.set_consent(db, t, shop.alice, marketing=True, source="app", actor="customer", now=NOW)
    doc = await export.export(db, t, shop.alice, now=NOW)
    json.dumps(doc)  # one JSON document, nothing a JSON encoder cannot write
    assert set(doc) >= SECTIONS and (doc["member_id"], doc["tenant_id"]) == (shop.alice, t)
    member = doc["member"]
    assert (member["id"], member["state"], member["marketing_consent"], member["tags"]) == (
        shop.alice,
        "active",
        True,
        ["vip-list", "newsletter-2024"],
    )
    assert member["available"] + member["pending"] > 0 and member["segment"]
    assert [c["source"] for c in doc["consents"]] == ["app"]
    assert sorted(c["number"] for c in doc["cards"]) == sorted(shop.cards[shop.alice])
    assert [tx["id"] for tx in doc["transactions"]] == shop.alice_purchases
    first, _, recent = doc["transactions"]
    assert [(i["line"], i["sku"], i["tags"]) for i in first["items"]] == [
        (0, "SKU-RYE-750", ["organic-fan"]),
        (1, "SKU-OAT-MILK", ["organic-fan", "vegan"]),
    ]
    assert [(r["external_id"], r["points"], r["items"][0]["line"]) for r in recent["refunds"]] == [
        ("r1", 30, 0)
    ]
    causes = {e["cause"] for e in doc["ledger_entries"]}
    assert {"earn", "release", "redemption", "expiry", "refund"} <= causes
    assert any(lot["draws"] for lot in doc["lots"]) and any(lot["state"] == "expired" for lot in doc["lots"])
    assert [r["reward_code"] for r in doc["redemptions"]] == ["CAKE"]
    assert [v["reward_code"] for v in doc["vouchers"]] == ["FREE-WASH"]
    assert [(s["card"], s["stamps"]) for s in doc["stamp_cards"]] == [("wash", 0)]
    assert doc["figures"] is not None and doc["figures"]["segment"] == member["segment"]
    assert doc["segment_moves"] and doc["segment_moves"][-1]["to_segment"] == member["segment"]
    assert doc["events"] and all(e["deliveries"] for e in doc["events"][:-1])
    states = {d["state"] for e in doc["events"] for d in e["deliveries"]}
    assert states == {"pending", "delivered"}
    # Only the member's own rows (the rows do not repeat the member id: compare with the database).
    async with db.read() as s:
        for model, section in ((Event, "events"), (LedgerEntry, "ledger_entries"), (PointLot, "lots")):
            ids = (
                await s.scalars(select(model.id).where(model.member_id == shop.alice).order_by(model.id))
            ).all()
            assert [r["id"] for r in doc[section]] == list(ids), section
    assert [(r["from_tier"], r["to_tier"]) for r in doc["tier_history"]] == [(None, "bronze")]
    assert doc["adjustments"] == []
    carol = await export.export(db, t, shop.carol, now=NOW)
    assert [a["reason"] for a in carol["adjustments"]] == ["goodwill"]


async def test_the_export_reads_page_by_page_and_gives_the_same_document(
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With pages of two rows, the document is the same as with one page."""
    shop = await build_shop(db)
    whole = await export.export(db, shop.tenant_id, shop.alice, now=NOW)
    monkeypatch.setattr(export, "PAGE", 2)
    paged = await export.export(db, shop.tenant_id, shop.alice, now=NOW)
    assert paged == whole and len(whole["ledger_entries"]) > 2


async def test_another_tenants_member_is_not_found(db: Database) -> None:
    """A member id of another tenant names nothing."""
    shop = await build_shop(db)
    other = await make_world(db)
    with pytest.raises(NotFound):
        await export.export(db, other.tenant_id, shop.alice, now=NOW)
