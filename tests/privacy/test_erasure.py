"""Erasure: a member's personal data goes, the books stay exactly as they were."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from loyalty.errors import Conflict, NotAllowed, NotFound
from loyalty.members import membership
from loyalty.ops.audit import audit
from loyalty.points import transactions
from loyalty.privacy import erasure, export
from loyalty.storage.db import Database
from loyalty.storage.models import (
    AuditEntry,
    Card,
    Consent,
    Event,
    LedgerEntry,
    LotDraw,
    Member,
    MemberFigures,
    SegmentMove,
    Transaction,
    TransactionItem,
)
from loyalty.value import segments

from .shop import NOW, SECRET_SKUS, SECRET_TAGS, build_shop, figures, make_world


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, leaf) of a JSON document; dict keys are paths, so every value is reached."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, f"{path}[{i}]")
    else:
        yield path, value


def _leaks(path: str, leaf: Any, cards: list[str]) -> bool:
    key = path.rsplit(".", 1)[-1]
    if isinstance(leaf, str) and (any(c in leaf for c in cards) or leaf in SECRET_SKUS + SECRET_TAGS):
        return True
    if key in ("sku", "category", "number"):
        return bool(leaf not in ("", None))
    if key in ("card", "old_card", "new_card") and ".data." in path:
        return bool(leaf != "")  # in events; a stamp card's "card" is its kind, not a card number
    return key.startswith("tags[")  # only a tags list with something in it has leaves


def personal_data(document: dict[str, Any], cards: list[str]) -> list[str]:
    """Where the document still holds a card number, a tag, a SKU or a category."""
    return [f"{path} = {leaf!r}" for path, leaf in walk(document) if _leaks(path, leaf, cards)]


async def _ledger_rows(db: Database, tenant_id: int) -> tuple[Any, ...]:
    async with db.read() as s:
        entries = (
            await s.execute(
                select(LedgerEntry.id, LedgerEntry.member_id, LedgerEntry.account, LedgerEntry.amount)
                .where(LedgerEntry.tenant_id == tenant_id)
                .order_by(LedgerEntry.id)
            )
        ).all()
        draws = (
            await s.execute(
                select(LotDraw.id, LotDraw.lot_id, LotDraw.amount).where(LotDraw.tenant_id == tenant_id)
            )
        ).all()
    return tuple(entries), tuple(sorted(draws))


def _without_time(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "exported_at"}


async def test_erasure_removes_personal_data_and_keeps_every_figure(db: Database) -> None:
    """After erasing a member, their export holds no card number, tag, SKU or category; liability,
    monthly, partner reports and the audit give the same figures; other members are untouched; the
    ledger is unchanged; and a till can still return an item of the erased member's purchase."""
    shop = await build_shop(db)
    t = shop.tenant_id
    before = await figures(db, t)
    assert before["audit"][0], before["audit"]
    ledger_before = await _ledger_rows(db, t)
    others_before = [_without_time(await export.export(db, t, m, now=NOW)) for m in (shop.bob, shop.carol)]
    exported = await export.export(db, t, shop.alice, now=NOW)
    # The check can fail: before the erasure, the export holds all of it.
    leaks = personal_data(exported, shop.cards[shop.alice])
    assert any("number" in leak for leak in leaks) and any("SKU-RYE-750" in leak for leak in leaks)
    assert any("vip-list" in leak for leak in leaks) and any(".card =" in leak for leak in leaks)

    result = await erasure.erase(db, t, shop.alice, actor="admin-key:1", now=NOW)
    assert (result.cards, result.purchases) == (2, 3)
    assert result.events_scrubbed == 2 and result.figures_removed == 1 and result.segment_moves_removed >= 1

    after = await figures(db, t)
    assert after == before
    assert await _ledger_rows(db, t) == ledger_before
    report = await audit(db, t)
    assert report.ok and report.purchases_recorded == 3 and report.purchases == 6
    assert [_without_time(await export.export(db, t, m, now=NOW)) for m in (shop.bob, shop.carol)] == (
        others_before
    )

    document = await export.export(db, t, shop.alice, now=NOW)
    assert personal_data(document, shop.cards[shop.alice]) == []
    member = document["member"]
    assert (member["state"], member["closed_at"], member["tags"], member["segment"]) == (
        "erased",
        NOW.isoformat(),
        [],
        "",
    )
    assert member["marketing_consent"] is False and document["cards"] == []
    assert document["figures"] is None and document["segment_moves"] == []
    assert [c["source"] for c in document["consents"]] == ["erasure"]
    assert document["events"][-1]["type"] == "member.erased"
    # The books of the member are still there, whole.
    assert len(document["transactions"]) == 3 and document["redemptions"] and document["lots"]
    assert all(t_["detail_purged_at"] == NOW.isoformat() for t_ in document["transactions"])
    lines = document["transactions"][2]["items"]
    assert [
        (i["line"], i["unit_price"], i["quantity"], i["points"], i["refunded_quantity"]) for i in lines
    ] == [
        (0, 3000, 3, 90, 1),
        (1, 250, 2, 5, 0),
    ]
    evaluation = document["transactions"][2]["evaluation"]
    assert evaluation["total"] == 95 and "inputs" not in evaluation
    assert [i["points"] for i in evaluation["items"]] == [90, 5]

    async with db.read() as s:
        cards = (
            await s.execute(
                select(Card.member_id, Card.state).where(
                    Card.tenant_id == t, Card.number.in_(shop.cards[shop.alice])
                )
            )
        ).all()
        audit_entry = await s.scalar(
            select(AuditEntry).where(AuditEntry.tenant_id == t, AuditEntry.action == "erase_member")
        )
    assert sorted(cards) == [(None, "blocked"), (None, "blocked")]
    assert audit_entry is not None and audit_entry.entity_id == str(shop.alice)
    with pytest.raises(NotAllowed, match="blocked"):
        await membership.resolve_card(db, t, shop.cards[shop.alice][0], now=NOW)

    # A till returns the second line of the erased member's recent purchase.
    refund = await transactions.refund(
        db, t, shop.alice_purchases[2], lines={1: 2}, now=NOW + timedelta(hours=1)
    )
    assert (refund.points, refund.amount, refund.lines) == (5, 500, {1: 2})
    # And a car wash of the old purchase whose stamps became a voucher: its points go back (they had
    # expired), the voucher stays, since a purged basket no longer says which lines gave stamps.
    wash = await transactions.refund(
        db, t, shop.alice_purchases[1], lines={0: 1}, now=NOW + timedelta(hours=2)
    )
    assert (wash.points, wash.amount) == (15, 1500)
    vouchers = (await export.export(db, t, shop.alice, now=NOW))["vouchers"]
    assert [v["status"] for v in vouchers] == ["issued"]
    assert (await audit(db, t)).ok


async def test_erasing_twice_is_a_conflict_and_writes_nothing(db: Database) -> None:
    """A second erasure of the same member is refused with a clear Conflict; an unknown member or
    another tenant's member is NotFound."""
    world = await make_world(db)
    other = await make_world(db)
    member = (await membership.create_member(db, world.tenant_id, now=NOW, tags=("x",))).id
    await erasure.erase(db, world.tenant_id, member, actor="a", now=NOW)
    with pytest.raises(Conflict, match="already erased"):
        await erasure.erase(db, world.tenant_id, member, actor="a", now=NOW + timedelta(days=1))
    with pytest.raises(NotFound):
        await erasure.erase(db, other.tenant_id, member, actor="a", now=NOW)
    async with db.read() as s:
        erased_events = await s.scalar(
            select(func.count()).where(Event.member_id == member, Event.type == "member.erased")
        )
        consents = await s.scalar(select(func.count()).where(Consent.member_id == member))
        state = (await s.execute(select(Member.state, Member.closed_at).where(Member.id == member))).one()
    assert (erased_events, consents, tuple(state)) == (1, 1, ("erased", NOW))


async def test_erasure_removes_profiling_and_scrubs_stored_events(db: Database) -> None:
    """The member's figures and segment moves are deleted, a later segment run does not profile them
    again, and their card events no longer name a card; the other members keep theirs."""
    shop = await build_shop(db)
    t = shop.tenant_id
    await erasure.erase(db, t, shop.alice, actor="a", now=NOW)
    await segments.run(db, t, now=NOW + timedelta(days=1))
    async with db.read() as s:
        figures_left = (
            await s.scalars(select(MemberFigures.member_id).where(MemberFigures.tenant_id == t))
        ).all()
        moves_left = set(
            (await s.scalars(select(SegmentMove.member_id).where(SegmentMove.tenant_id == t))).all()
        )
        card_events = (
            await s.execute(
                select(Event.member_id, Event.data).where(
                    Event.tenant_id == t, Event.type == "card.activated"
                )
            )
        ).all()
        items = (
            await s.execute(
                select(TransactionItem.member_id, TransactionItem.sku, TransactionItem.category).where(
                    TransactionItem.tenant_id == t
                )
            )
        ).all()
        purged = (
            await s.execute(
                select(Transaction.member_id, Transaction.detail_purged_at).where(Transaction.tenant_id == t)
            )
        ).all()
    assert shop.alice not in figures_left and {shop.bob, shop.carol} <= set(figures_left)
    async with db.read() as s:
        card_entries = (
            await s.execute(
                select(AuditEntry.action, AuditEntry.entity_id, AuditEntry.details).where(
                    AuditEntry.tenant_id == t, AuditEntry.entity == "card"
                )
            )
        ).all()
    named = [entity_id for _, entity_id, _ in card_entries]
    assert named.count("") == 2 and shop.cards[shop.bob][0] in named
    assert not any(n in str(details) for n in shop.cards[shop.alice] for _, _, details in card_entries)
    assert {d.get("member_id") for a, e, d in card_entries if e == ""} == {shop.alice}
    assert shop.alice not in moves_left and moves_left
    assert {(m, d["card"] == "") for m, d in card_events} == {
        (shop.alice, True),
        (shop.bob, False),
        (shop.carol, False),
    }
    assert all((sku, cat) == ("", "") for m, sku, cat in items if m == shop.alice)
    assert all(sku != "" for m, sku, _ in items if m != shop.alice)
    assert all((at is not None) == (m == shop.alice) for m, at in purged)


async def test_the_jobs_settle_an_erased_members_debt_like_anyones(db: Database) -> None:
    """A return of an erased member's purchase can leave a debt (the points were spent); the release
    job then pays it from their next released lot instead of failing for the whole tenant."""
    from loyalty.ops import jobs
    from loyalty.points import redemptions, refunds
    from tests.storage.conftest import basket
    from tests.storage.helpers import post

    world = await make_world(db)
    member = (await membership.create_member(db, world.tenant_id, now=NOW)).id
    first = await post(world, "r1", 40_000, member, at=NOW - timedelta(days=30), now=NOW - timedelta(days=30))
    await jobs.release_pending(db, world.tenant_id, now=NOW - timedelta(days=10))
    await redemptions.redeem(db, world.tenant_id, member, "COFFEE", now=NOW - timedelta(days=9))
    await transactions.post_transaction(
        db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="r2",
        occurred_at=NOW - timedelta(days=1),
        items=basket(("ITEM", 50_000, 1)),
        member_id=member,
        now=NOW - timedelta(days=1),
    )
    await erasure.erase(db, world.tenant_id, member, actor="t", now=NOW)
    returned = await refunds.refund(db, world.tenant_id, first.transaction_id, now=NOW)
    assert returned.debt == 300  # 400 points back, 300 of them spent on the coffee
    done = await jobs.release_pending(db, world.tenant_id, now=NOW + timedelta(days=20))
    assert done.points == 500
    after = await membership.get_member(db, world.tenant_id, member)
    assert (after.available, after.debt) == (200, 0)
    assert (await audit(db, world.tenant_id)).ok
