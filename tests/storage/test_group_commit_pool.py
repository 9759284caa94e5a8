"""Group commit on a small pool (PostgreSQL, no pooler): postings waiting for a group write hold the
connection they read on, so the group must be written on one of those, never on one more from the pool.
Otherwise as many waiting postings as the pool holds stall until the pool's timeout and then fail."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import pytest

from loyalty.members import membership
from loyalty.points import transactions
from loyalty.storage.db import Database

from .conftest import NOW, basket, make_world
from .invariants import assert_books_balance

#: Connections in the engine's pool (no overflow): far fewer than the postings at once.
POOL_SIZE = 2
#: Postings sent at once, each its own receipt; MEMBERS of them share a member two by two.
POSTINGS = 40
MEMBERS = 20
#: How long the postings may take in all: well under the pool's 10 s wait, which a stall runs into.
DEADLINE_SECONDS = 8
#: A pool large enough for groups of several bookings to form (still far fewer than the postings), and
#: how many postings are cancelled at each moment of a group write.
GROUPING_POOL_SIZE = 6
CANCELS_EACH = 3


@pytest.fixture
def small(postgresql_url: str, runner: asyncio.Runner) -> Iterator[Database]:
    database = Database.from_url(postgresql_url, pool_size=POOL_SIZE, max_overflow=0)
    yield database
    runner.run(database.dispose())


async def _post(db: Database, tenant_id: int, outlet_id: int, receipt: str, member: int, cents: int) -> int:
    posted = await transactions.post_transaction(
        db,
        tenant_id,
        outlet_id=outlet_id,
        external_id=receipt,
        occurred_at=NOW,
        items=basket(("BREAD", cents, 1)),
        member_id=member,
        now=NOW,
    )
    return posted.points


async def test_more_concurrent_postings_than_pooled_connections_all_book(small: Database) -> None:
    """40 postings at once on a pool of 2: every one books its own points within the deadline (no
    wait for a connection the waiting postings hold), and the books balance."""
    world = await make_world(small)
    people = [(await membership.create_member(small, world.tenant_id, now=NOW)).id for _ in range(MEMBERS)]
    sent = [(f"r{i}", people[i % MEMBERS], 1000 * (i + 1)) for i in range(POSTINGS)]
    async with asyncio.timeout(DEADLINE_SECONDS):
        points = await asyncio.gather(
            *(_post(small, world.tenant_id, world.outlet_id, r, m, cents) for r, m, cents in sent)
        )
    assert points == [cents // 100 for _, _, cents in sent]
    assert await transactions.transaction_count(small, world.tenant_id) == POSTINGS
    for i, member in enumerate(people):
        view = await membership.get_member(small, world.tenant_id, member)
        assert view.pending == (i + 1) * 10 + (i + 1 + MEMBERS) * 10 and view.visits == 2
    await assert_books_balance(small, world.tenant_id)


async def test_cancelled_postings_neither_stall_the_group_nor_lose_its_bookings(
    postgresql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postings cancelled at each moment of a group write: still waiting (not written), chosen to lend
    their connection to the next group (not written, the group still is), lending it while the group is
    written (written: the unit keeps the connection until the write is done). The others all book, a
    posting after them too (the turn to write was never lost), and the books balance."""
    from loyalty.ledger import store

    kinds = ("waiting", "chosen", "writing")
    cancelled: dict[str, list[asyncio.Task[Any]]] = {kind: [] for kind in kinds}
    task_of: dict[int, asyncio.Task[Any]] = {}

    def cancel(waiter: store._Waiter, kind: str) -> None:
        task = task_of[id(waiter)]
        if len(cancelled[kind]) < CANCELS_EACH and not any(task in ts for ts in cancelled.values()):
            cancelled[kind].append(task)
            task.cancel()

    init, next_group, take = store._Waiter.__init__, store.GroupCommit._next, store.GroupCommit._take

    def recording(self: store._Waiter, booking: Any, conn: Any) -> None:
        init(self, booking, conn)
        task_of[id(self)] = cast(asyncio.Task[Any], asyncio.current_task())

    def cancelling_next(self: store.GroupCommit) -> None:
        before = [w for w in self._waiting if not w.done.done()]
        if len(before) > 1:
            cancel(before[-1], "waiting")
        next_group(self)
        for w in before:
            if w.writer is not None and w not in self._waiting and not w.done.done():
                cancel(w, "chosen")

    def cancelling_take(self: store.GroupCommit) -> list[store._Waiter]:
        lender = self._waiting[0] if self._waiting else None  # whose connection carries the group
        group = take(self)
        if lender in group and len(group) > 1:
            cancel(lender, "writing")
        return group

    monkeypatch.setattr(store._Waiter, "__init__", recording)
    monkeypatch.setattr(store.GroupCommit, "_next", cancelling_next)
    monkeypatch.setattr(store.GroupCommit, "_take", cancelling_take)
    db = Database.from_url(postgresql_url, pool_size=GROUPING_POOL_SIZE, max_overflow=0)
    try:
        world = await make_world(db)
        people = [(await membership.create_member(db, world.tenant_id, now=NOW)).id for _ in range(MEMBERS)]
        sent = [(f"c{i}", people[i % MEMBERS], 1000 * (i + 1)) for i in range(POSTINGS)]
        async with asyncio.timeout(DEADLINE_SECONDS):
            tasks = [
                asyncio.create_task(_post(db, world.tenant_id, world.outlet_id, r, m, cents))
                for r, m, cents in sent
            ]
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            after = await _post(db, world.tenant_id, world.outlet_id, "after", people[0], 500)
        assert after == 5
        gone = {task for kind in kinds for task in cancelled[kind]}
        for task, outcome, (_, _, cents) in zip(tasks, outcomes, sent, strict=True):
            assert (type(outcome) if task in gone else outcome) == (
                asyncio.CancelledError if task in gone else cents // 100
            )
        assert all(cancelled[kind] for kind in kinds), {kind: len(ts) for kind, ts in cancelled.items()}
        unwritten = len(cancelled["waiting"]) + len(cancelled["chosen"])
        assert await transactions.transaction_count(db, world.tenant_id) == POSTINGS - unwritten + 1
        await assert_books_balance(db, world.tenant_id)
    finally:
        await db.dispose()
