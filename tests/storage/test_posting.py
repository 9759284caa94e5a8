"""Posting purchases: points, lots, idempotency, program versions, stamps and vouchers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from loyalty.cards.errors import InvalidCardNumber
from loyalty.errors import InvalidInput, NotFound
from loyalty.members import membership
from loyalty.points import balances, transactions
from loyalty.programs import versions

from .conftest import NOW, PROGRAM, World, basket, make_world
from .invariants import assert_books_balance


async def post(world: World, external_id: str, items, member_id: int, *, at=NOW, now=NOW):  # type: ignore[no-untyped-def]
    return await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id=external_id,
        occurred_at=at,
        items=items,
        member_id=member_id,
        now=now,
    )


async def test_purchase_earns_pending_points(world: World) -> None:
    """A purchase earns one point per euro, pending until the return window has passed."""
    member = await membership.create_member(world.db, world.tenant_id, now=NOW)
    posting = await post(world, "r1", basket(("BREAD", 350, 2), ("CIG", 900, 1, "tobacco")), member.id)
    assert posting.points == 7 and posting.amount == 1600
    assert posting.pending_until == NOW + timedelta(days=14)
    view = await balances.balance(world.db, world.tenant_id, member.id, now=NOW)
    assert (view.available, view.pending, view.debt) == (0, 7, 0)
    assert posting.evaluation["explanation"], "the evaluation is stored with its explanation"
    await assert_books_balance(world.db, world.tenant_id)


async def test_same_receipt_twice_books_once(world: World) -> None:
    """Posting the same (outlet, external id) again returns the first result and writes nothing."""
    member = await membership.create_member(world.db, world.tenant_id, now=NOW)
    first = await post(world, "r1", basket(("BREAD", 1000, 1)), member.id)
    again = await post(world, "r1", basket(("BREAD", 9900, 1)), member.id)
    assert again.replayed and not first.replayed
    assert again.transaction_id == first.transaction_id and again.points == first.points == 10
    view = await balances.balance(world.db, world.tenant_id, member.id, now=NOW)
    assert view.pending == 10
    assert await transactions.transaction_count(world.db, world.tenant_id) == 1


async def test_offline_purchase_priced_by_version_of_its_time(db) -> None:  # type: ignore[no-untyped-def]
    """A purchase is priced by the version valid at its occurred_at, even when posted later."""
    world = await make_world(db)
    later = NOW + timedelta(days=1)
    doubled = PROGRAM.replace("per_currency_unit: 1", "per_currency_unit: 2")
    v2 = await versions.create_version(db, world.tenant_id, doubled, actor="m", now=later)
    member = await membership.create_member(db, world.tenant_id, now=NOW)
    old = await post(
        world,
        "offline",
        basket(("BREAD", 1000, 1)),
        member.id,
        at=NOW + timedelta(hours=1),
        now=later + timedelta(hours=1),
    )
    new = await post(
        world,
        "online",
        basket(("BREAD", 1000, 1)),
        member.id,
        at=later + timedelta(hours=1),
        now=later + timedelta(hours=1),
    )
    assert (old.program_version_id, old.points) == (world.version_id, 10)
    assert (new.program_version_id, new.points) == (v2.id, 20)


async def test_published_version_is_immutable(world: World) -> None:
    """A published version cannot be published again or edited; a new draft gets the next number."""
    draft = await versions.save_draft(world.db, world.tenant_id, PROGRAM, actor="m", now=NOW)
    assert draft.number == 2 and draft.status == "draft"
    with pytest.raises(Exception, match="already published"):
        await versions.publish(world.db, world.tenant_id, world.version_id, actor="m", now=NOW)


async def test_invalid_program_is_refused_with_issues(world: World) -> None:
    """A draft with an error is refused with every issue, and nothing is stored."""
    with pytest.raises(InvalidInput) as err:
        await versions.save_draft(
            world.db, world.tenant_id, PROGRAM.replace("item.category", "item.categry"), actor="m", now=NOW
        )
    assert err.value.issues
    assert len(await versions.list_versions(world.db, world.tenant_id)) == 1


async def test_blank_card_binds_on_first_use(world: World) -> None:
    """A blank card becomes a new member's card the first time a till posts with it."""
    [number] = await membership.issue_cards(world.db, world.tenant_id, 1, actor="admin", now=NOW)
    posting = await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id="c1",
        occurred_at=NOW,
        items=basket(("BREAD", 500, 1)),
        card_number=number,
        now=NOW,
    )
    card = await membership.get_card(world.db, world.tenant_id, number)
    assert card.state == "active" and card.member_id == posting.member_id
    again = await membership.resolve_card(world.db, world.tenant_id, number, now=NOW)
    assert again.id == posting.member_id


async def test_mistyped_card_number_is_refused(world: World) -> None:
    """A number with a wrong check digit is an input error, not a lookup."""
    [number] = await membership.issue_cards(world.db, world.tenant_id, 1, actor="admin", now=NOW)
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    with pytest.raises(InvalidCardNumber):
        await membership.resolve_card(world.db, world.tenant_id, wrong, now=NOW)


async def test_other_tenant_sees_nothing(db) -> None:  # type: ignore[no-untyped-def]
    """A member of one tenant is not found through another tenant."""
    a, b = await make_world(db), await make_world(db)
    member = await membership.create_member(db, a.tenant_id, now=NOW)
    with pytest.raises(NotFound):
        await membership.get_member(db, b.tenant_id, member.id)
    with pytest.raises(NotFound):
        await post(b, "x", basket(("BREAD", 100, 1)), member.id)


async def test_stamps_fill_card_and_issue_voucher(world: World) -> None:
    """Stamps accumulate per card; reaching reward_at issues a voucher and the card starts over."""
    member = await membership.create_member(world.db, world.tenant_id, now=NOW)
    await post(world, "w1", basket(("WASH", 800, 3)), member.id)
    second = await post(world, "w2", basket(("WASH", 800, 3)), member.id)
    assert len(second.voucher_ids) == 1
    view = await balances.balance(world.db, world.tenant_id, member.id, now=NOW)
    assert [(c.card, c.stamps) for c in view.stamp_cards] == [("wash", 1)]
    assert [v.reward_code for v in view.vouchers] == ["FREE-WASH"]


async def test_bad_basket_is_refused(world: World) -> None:
    """A line with a zero quantity is an input error and nothing is written."""
    member = await membership.create_member(world.db, world.tenant_id, now=NOW)
    with pytest.raises(InvalidInput):
        await post(world, "bad", basket(("BREAD", 100, 0)), member.id)
    assert await transactions.transaction_count(world.db, world.tenant_id) == 0
