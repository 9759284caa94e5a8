"""Races on PostgreSQL with real parallel connections: money-like operations stay exact."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from loyalty.errors import InsufficientPoints
from loyalty.members import membership
from loyalty.ops import jobs
from loyalty.points import adjustments, redemptions, transactions
from loyalty.storage.db import Database

from .conftest import NOW, basket, make_world
from .invariants import assert_books_balance


@pytest.fixture
def pg(postgresql_url: str, runner: asyncio.Runner):  # type: ignore[no-untyped-def]
    database = Database.from_url(postgresql_url, pool_size=25, max_overflow=40)
    yield database
    runner.run(database.dispose())


async def test_fifty_concurrent_redemptions_against_three_covered(pg: Database) -> None:
    """50 concurrent redemptions of a 300-point reward against 900 points: exactly 3 succeed."""
    world = await make_world(pg)
    member = (await membership.create_member(pg, world.tenant_id, now=NOW)).id
    for _ in range(3):  # three lots, so draws cross lots too
        await adjustments.adjust(pg, world.tenant_id, member, 300, reason="setup", actor="t", now=NOW)

    async def attempt() -> bool:
        try:
            await redemptions.redeem(pg, world.tenant_id, member, "COFFEE", now=NOW)
        except InsufficientPoints:
            return False
        return True

    outcomes = await asyncio.gather(*(attempt() for _ in range(50)))
    assert sum(outcomes) == 3
    assert (await membership.get_member(pg, world.tenant_id, member)).available == 0
    await assert_books_balance(pg, world.tenant_id)


async def test_twenty_concurrent_posts_of_one_receipt_book_once(pg: Database) -> None:
    """20 concurrent posts of the same external id create one transaction and one set of points."""
    world = await make_world(pg)
    member = (await membership.create_member(pg, world.tenant_id, now=NOW)).id
    postings = await asyncio.gather(
        *(
            transactions.post_transaction(
                pg,
                world.tenant_id,
                outlet_id=world.outlet_id,
                external_id="same",
                occurred_at=NOW,
                items=basket(("BREAD", 1000, 1)),
                member_id=member,
                now=NOW,
            )
            for _ in range(20)
        )
    )
    assert len({p.transaction_id for p in postings}) == 1
    assert sum(not p.replayed for p in postings) == 1
    assert await transactions.transaction_count(pg, world.tenant_id) == 1
    assert (await membership.get_member(pg, world.tenant_id, member)).pending == 10
    await assert_books_balance(pg, world.tenant_id)


async def test_expiry_job_twice_at_once_expires_each_lot_once(pg: Database) -> None:
    """Two expiry runs at the same time expire every lot exactly once."""
    world = await make_world(pg)
    ids = [(await membership.create_member(pg, world.tenant_id, now=NOW)).id for _ in range(20)]
    for member in ids:
        await adjustments.adjust(pg, world.tenant_id, member, 100, reason="setup", actor="t", now=NOW)
    later = datetime(2025, 6, 30, tzinfo=UTC)
    first, second = await asyncio.gather(
        jobs.expire_lots(pg, world.tenant_id, now=later), jobs.expire_lots(pg, world.tenant_id, now=later)
    )
    assert sorted([first.lots, second.lots]) == [0, 20]
    assert first.points + second.points == 2000
    await assert_books_balance(pg, world.tenant_id)


async def test_redemptions_racing_expiry_and_refunds_keep_books(pg: Database) -> None:
    """Redemptions, refunds and an expiry run interleaving on the same members leave balanced books."""
    world = await make_world(pg)
    ids = [(await membership.create_member(pg, world.tenant_id, now=NOW)).id for _ in range(5)]
    postings = []
    for i, member in enumerate(ids):
        await adjustments.adjust(pg, world.tenant_id, member, 600, reason="setup", actor="t", now=NOW)
        postings.append(
            await transactions.post_transaction(
                pg,
                world.tenant_id,
                outlet_id=world.outlet_id,
                external_id=f"p{i}",
                occurred_at=NOW,
                items=basket(("BREAD", 20_000, 1)),
                member_id=member,
                now=NOW,
            )
        )
    later = datetime(2025, 5, 31, 22, 0, tzinfo=UTC)

    async def redeem(member: int) -> None:
        with contextlib.suppress(InsufficientPoints):
            await redemptions.redeem(pg, world.tenant_id, member, "COFFEE", now=later)

    await asyncio.gather(
        *(redeem(m) for m in ids for _ in range(3)),
        *(transactions.refund(pg, world.tenant_id, p.transaction_id, now=later) for p in postings),
        jobs.expire_lots(pg, world.tenant_id, now=later),
        jobs.release_pending(pg, world.tenant_id, now=later),
    )
    await assert_books_balance(pg, world.tenant_id)


async def test_concurrent_posts_are_written_together_and_each_lands_once(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Posts arriving while another is being written go out as one statement (group commit); each
    lands exactly once with its own points, also when two of a group are for the same member or the
    same receipt (those are written apart)."""
    from loyalty.ledger import store

    sizes: list[int] = []
    take = store.GroupCommit._take

    def counting(self: store.GroupCommit) -> list:  # type: ignore[type-arg]
        group = take(self)
        sizes.append(len(group))
        return group

    monkeypatch.setattr(store.GroupCommit, "_take", counting)
    world = await make_world(pg)
    people = [(await membership.create_member(pg, world.tenant_id, now=NOW)).id for _ in range(30)]
    receipts = [(f"r{i}", people[i % 30], 1000 * (i + 1)) for i in range(60)] + [("r0", people[0], 1000)]
    postings = await asyncio.gather(
        *(
            transactions.post_transaction(
                pg,
                world.tenant_id,
                outlet_id=world.outlet_id,
                external_id=receipt,
                occurred_at=NOW,
                items=basket(("BREAD", cents, 1)),
                member_id=member,
                now=NOW,
            )
            for receipt, member, cents in receipts
        )
    )
    assert max(sizes, default=0) > 1, "no posts were written together"
    assert len({p.transaction_id for p in postings}) == 60
    for (_, _, cents), posting in zip(receipts, postings, strict=True):
        assert posting.points == cents // 100
    for i, member in enumerate(people):
        view = await membership.get_member(pg, world.tenant_id, member)
        assert view.pending == (i + 1) * 10 + (i + 31) * 10 and view.visits == 2
    await assert_books_balance(pg, world.tenant_id)


async def test_concurrent_cancellations_of_one_redemption_restore_it_once(pg: Database) -> None:
    """Ten tills cancelling the same redemption at once: one succeeds, the points come back once."""
    from loyalty.errors import Conflict

    world = await make_world(pg)
    member = (await membership.create_member(pg, world.tenant_id, now=NOW)).id
    await adjustments.adjust(pg, world.tenant_id, member, 500, reason="setup", actor="t", now=NOW)
    done = await redemptions.redeem(pg, world.tenant_id, member, "COFFEE", now=NOW)

    async def cancel() -> bool:
        try:
            await redemptions.cancel(pg, world.tenant_id, done.redemption_id, now=NOW)
        except Conflict:
            return False
        return True

    outcomes = await asyncio.gather(*(cancel() for _ in range(10)))
    assert sum(outcomes) == 1
    assert (await membership.get_member(pg, world.tenant_id, member)).available == 500
    await assert_books_balance(pg, world.tenant_id)


async def test_the_tier_job_never_undoes_an_upgrade_that_lands_while_it_runs(pg: Database) -> None:
    """A purchase that upgrades a member while the tier job waits for the member's row is kept."""
    world = await make_world(pg)
    member = (await membership.create_member(pg, world.tenant_id, now=NOW)).id
    # No tier yet: the job sees the member as one to set (to bronze) when it starts.
    async with pg.driver_connection() as conn:
        tx = conn.transaction()
        await tx.start()
        # A purchase in flight: it holds the member's row while it books 1,500 points and the upgrade.
        await conn.execute("SELECT id FROM members WHERE id = $1 FOR UPDATE", member)
        job = asyncio.create_task(jobs.evaluate_tiers(pg, world.tenant_id, now=NOW + timedelta(minutes=1)))
        for _ in range(500):  # until the job waits for the row (pg_locks is live, unlike pg_stat_activity)
            waiting = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted")
            if waiting:
                break
            await asyncio.sleep(0.01)
        assert waiting, "the tier job never waited for the member's row"
        await conn.execute(
            "INSERT INTO transactions (tenant_id, member_id, outlet_id, external_id, channel, occurred_at,"
            " posted_at, program_version_id, amount, points, amount_refunded, points_refunded, evaluation)"
            " VALUES ($1, $2, $3, 'upgrade', 'till', $4, $4, $5, 150000, 1500, 0, 0, '{}')",
            world.tenant_id,
            member,
            world.outlet_id,
            NOW,
            world.version_id,
        )
        await conn.execute(
            "UPDATE members SET tier = 'silver', revision = revision + 1 WHERE id = $1", member
        )
        await tx.commit()
    await job
    assert (await membership.get_member(pg, world.tenant_id, member)).tier == "silver"
