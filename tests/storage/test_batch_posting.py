"""Batch posting (imports) books exactly what posting the same purchases one by one books."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from loyalty.cards.numbers import make_card_number
from loyalty.members import membership
from loyalty.ops import importer
from loyalty.points import posting
from loyalty.storage.db import Database

from .conftest import NOW, basket, make_world
from .invariants import assert_books_balance

PREFIX = "60"


def _history(seed: int) -> list[tuple[int, str, Any, Any]]:
    """About 14 months of purchases of 12 members: enough for silver (1,000 points in 12 months) to be
    reached, kept and lost again, with washes for stamps and vouchers."""
    rnd = random.Random(seed)
    out = []
    at = NOW - timedelta(days=420)
    for i in range(400):
        at += timedelta(hours=rnd.randint(1, 40))
        lines = [("ITEM", rnd.choice((900, 2500, 7000, 15000)), rnd.randint(1, 2))]
        if rnd.random() < 0.2:
            lines.append(("WASH", 500, rnd.randint(1, 3)))
        out.append((rnd.randrange(12), f"h{i}", at, basket(*lines)))
    return out


async def _books(db: Database, tenant_id: int) -> dict[str, Any]:
    async with db.read() as s:

        async def rows(sql: str) -> list[Any]:
            return [tuple(r) for r in (await s.execute(text(sql), {"t": tenant_id})).all()]

        return {
            "members": await rows(
                "SELECT c.number, m.available, m.pending, m.debt, m.tier, m.visits FROM members m"
                " JOIN cards c ON c.member_id = m.id WHERE m.tenant_id = :t ORDER BY c.number"
            ),
            "purchases": await rows(
                "SELECT external_id, points, amount FROM transactions WHERE tenant_id = :t"
                " ORDER BY external_id"
            ),
            "lots": await rows(
                "SELECT t.external_id, l.state, l.earned, l.remaining FROM point_lots l"
                " JOIN transactions t ON t.id = l.transaction_id WHERE l.tenant_id = :t"
                " ORDER BY t.external_id"
            ),
            "tiers": await rows(
                "SELECT c.number, h.from_tier, h.to_tier, h.qualifying FROM tier_history h"
                " JOIN cards c ON c.member_id = h.member_id WHERE h.tenant_id = :t"
                " ORDER BY c.number, h.id"
            ),
            "stamps": await rows(
                "SELECT c.number, s.stamps FROM stamp_cards s JOIN cards c ON c.member_id = s.member_id"
                " WHERE s.tenant_id = :t ORDER BY c.number"
            ),
            "vouchers": await rows(
                "SELECT t.external_id, count(*) FROM vouchers v"
                " JOIN transactions t ON t.id = v.transaction_id"
                " WHERE v.tenant_id = :t GROUP BY t.external_id ORDER BY t.external_id"
            ),
        }


async def test_an_import_books_what_posting_one_by_one_books(db: Database) -> None:
    """The same history, imported in batches (replayed in memory) and posted purchase by purchase,
    leaves the same balances, lots, tiers, stamps and vouchers."""
    history = _history(seed=7)
    cards = [make_card_number(PREFIX, 100 + n) for n in range(12)]

    one_by_one = await make_world(db)
    ids = {}
    for n, card in enumerate(cards):
        member = await membership.create_member(db, one_by_one.tenant_id, now=NOW - timedelta(days=500))
        ids[n] = member.id
        async with db.write() as s:
            await s.execute(
                text(
                    "INSERT INTO cards"
                    " (tenant_id, member_id, number, serial, state, created_at, activated_at)"
                    " VALUES (:t, :m, :n, :serial, 'active', :at, :at)"
                ),
                {"t": one_by_one.tenant_id, "m": member.id, "n": card, "serial": 100 + n, "at": NOW},
            )
    for who, receipt, at, items in history:
        await posting.post_transaction(
            db,
            one_by_one.tenant_id,
            outlet_id=one_by_one.outlet_id,
            external_id=receipt,
            occurred_at=at,
            items=items,
            member_id=ids[who],
            now=at,
            channel="import",
            explain=False,
        )

    batched = await make_world(db)
    rows = [
        importer.Purchase(i + 1, "b1", receipt, cards[who], at, items)
        for i, (who, receipt, at, items) in enumerate(history)
    ]
    report = await importer.import_purchases(db, batched.tenant_id, rows, batch_size=37)
    assert (report.imported, report.rejected) == (len(history), 0)

    expected, got = await _books(db, one_by_one.tenant_id), await _books(db, batched.tenant_id)
    assert got["tiers"], "the history reaches silver"
    for part in expected:
        assert got[part] == expected[part], part
    await assert_books_balance(db, batched.tenant_id)
