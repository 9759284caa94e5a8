"""Replacing a lost card: the old card stops working at the till, the new one is the member's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from loyalty.cards.errors import InvalidCardNumber
from loyalty.errors import Conflict, NotAllowed, NotFound
from loyalty.members import membership
from loyalty.members.replacement import replace_card
from loyalty.points import transactions
from loyalty.storage import outbox
from loyalty.storage.models import AuditEntry, Event
from tests.storage.conftest import NOW, World, basket, make_world

LATER = NOW + timedelta(days=3)


async def _holder(world: World, count: int = 1) -> tuple[int, list[str]]:
    """A member with a card bound at a till, and ``count - 1`` more blank cards."""
    numbers = await membership.issue_cards(world.db, world.tenant_id, count, actor="t", now=NOW)
    member = await membership.resolve_card(world.db, world.tenant_id, numbers[0], now=NOW)
    return member.id, numbers


async def _events(world: World) -> list[tuple[int, str, dict[str, Any]]]:
    async with world.db.read() as s:
        rows = await s.scalars(select(Event).where(Event.tenant_id == world.tenant_id).order_by(Event.id))
        # From the replacement on: the first binding at a till writes its own card.activated.
        return [
            (e.member_id, e.type, e.data)
            for e in rows
            if e.occurred_at == LATER and e.type.startswith("card.")
        ]


async def _post(world: World, number: str, ext: str) -> int:
    posting = await transactions.post_transaction(
        world.db,
        world.tenant_id,
        outlet_id=world.outlet_id,
        external_id=ext,
        occurred_at=LATER,
        items=basket(("ITEM", 5_000, 1)),
        card_number=number,
        now=LATER,
    )
    return posting.member_id


async def test_a_new_number_replaces_the_lost_card(world: World) -> None:
    """Without a blank card at hand a new number is issued to the member; the till refuses the lost
    card from then on and books the new one on the same member."""
    member, (lost,) = await _holder(world)
    done = await replace_card(world.db, world.tenant_id, lost, actor="admin:1", now=LATER)
    assert (done.member_id, done.old_card, done.issued) == (member, lost, True)
    assert done.new_card != lost
    assert (await membership.get_card(world.db, world.tenant_id, lost)).state == "blocked"
    new = await membership.get_card(world.db, world.tenant_id, done.new_card)
    assert (new.state, new.member_id) == ("active", member)
    with pytest.raises(NotAllowed):
        await membership.resolve_card(world.db, world.tenant_id, lost, now=LATER)
    with pytest.raises(NotAllowed):
        await _post(world, lost, "with-lost")
    assert (await membership.resolve_card(world.db, world.tenant_id, done.new_card, now=LATER)).id == member
    assert await _post(world, done.new_card, "with-new") == member
    events = await _events(world)
    assert events == [
        (member, "card.blocked", {"card": lost}),
        (member, "card.activated", {"card": done.new_card}),
        (member, "card.replaced", {"old_card": lost, "new_card": done.new_card}),
    ]
    for _, kind, data in events:
        outbox.check(kind, data)
    async with world.db.read() as s:
        logged = (
            await s.scalars(
                select(AuditEntry).where(
                    AuditEntry.tenant_id == world.tenant_id, AuditEntry.action == "replace_card"
                )
            )
        ).all()
    assert [(e.entity_id, e.actor, e.details["new_card"]) for e in logged] == [
        (lost, "admin:1", done.new_card)
    ]


async def test_a_blank_card_handed_over_replaces_the_lost_card(world: World) -> None:
    """A blank card given to the member becomes theirs, as a till would bind it, and the lost one is
    blocked."""
    member, (lost, blank, _) = await _holder(world, 3)
    done = await replace_card(world.db, world.tenant_id, lost, new_card=blank, actor="admin", now=LATER)
    assert (done.new_card, done.issued) == (blank, False)
    assert (await membership.get_card(world.db, world.tenant_id, blank)).member_id == member
    assert (await membership.get_card(world.db, world.tenant_id, lost)).state == "blocked"
    assert await _post(world, blank, "with-blank") == member


@pytest.mark.parametrize("which", ["active", "blocked"])
async def test_a_card_that_is_not_blank_cannot_be_the_new_one(world: World, which: str) -> None:
    """Another member's card, or a blocked one, cannot be handed over; nothing changes (the lost card
    still works)."""
    member, (lost, other_card) = await _holder(world, 2)
    await membership.resolve_card(world.db, world.tenant_id, other_card, now=NOW)
    if which == "blocked":
        await membership.block_card(world.db, world.tenant_id, other_card, actor="t", now=NOW)
    with pytest.raises(Conflict):
        await replace_card(world.db, world.tenant_id, lost, new_card=other_card, actor="admin", now=LATER)
    assert (await membership.get_card(world.db, world.tenant_id, lost)).state == "active"
    assert await _post(world, lost, "still-works") == member
    assert await _events(world) == []


async def test_only_an_active_card_is_replaced(world: World) -> None:
    """A blank card has no member to give a new card to, and a blocked one was replaced already."""
    _, (lost, blank) = await _holder(world, 2)
    with pytest.raises(Conflict):
        await replace_card(world.db, world.tenant_id, blank, actor="admin", now=LATER)
    await replace_card(world.db, world.tenant_id, lost, actor="admin", now=LATER)
    with pytest.raises(Conflict):
        await replace_card(world.db, world.tenant_id, lost, actor="admin", now=LATER)


async def test_another_tenants_card_is_not_found(world: World) -> None:
    """A card number of another tenant names nothing here, as the lost card or as the new one."""
    other = await make_world(world.db)
    # Both tenants print numbers with the same prefix: theirs start at serials this tenant never had.
    await membership.issue_cards(other.db, other.tenant_id, 4, actor="t", now=NOW)
    _, (theirs,) = await _holder(other)
    _, (mine, blank) = await _holder(world, 2)
    with pytest.raises(NotFound):
        await replace_card(world.db, world.tenant_id, theirs, actor="admin", now=LATER)
    their_blank = (await membership.issue_cards(other.db, other.tenant_id, 1, actor="t", now=NOW))[0]
    with pytest.raises(NotFound):
        await replace_card(world.db, world.tenant_id, mine, new_card=their_blank, actor="admin", now=LATER)
    assert (await membership.get_card(world.db, world.tenant_id, mine)).state == "active"
    assert (await membership.get_card(other.db, other.tenant_id, theirs)).state == "active"
    assert (await membership.get_card(world.db, world.tenant_id, blank)).state == "blank"


async def test_a_mistyped_number_is_refused_before_any_lookup(world: World) -> None:
    """A number whose check digit is wrong is invalid input, not a missing card."""
    _, (lost,) = await _holder(world)
    typo = lost[:-1] + str((int(lost[-1]) + 1) % 10)
    with pytest.raises(InvalidCardNumber):
        await replace_card(world.db, world.tenant_id, typo, actor="admin", now=LATER)
    with pytest.raises(InvalidCardNumber):
        await replace_card(world.db, world.tenant_id, lost, new_card=typo, actor="admin", now=LATER)
