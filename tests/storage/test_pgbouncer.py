"""Behind PgBouncer in transaction pooling, postings and redemptions book exactly and leave nothing
behind on the server connections; without the pooler settings the service cannot work there.

The PgBouncer is LOYALTY_TEST_PGBOUNCER (``make test`` starts one), else the default port of
deploy/pgbouncer/start.sh; without one these tests skip (under CI=true they fail).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from loyalty.errors import InsufficientPoints
from loyalty.members import membership
from loyalty.points import adjustments, redemptions, transactions
from loyalty.storage.db import Database, pooler
from tests.conftest import DEFAULT_PGBOUNCER_URL, PGBOUNCER_URL, require_pgbouncer, through_pgbouncer

from .conftest import NOW, basket, make_world
from .invariants import assert_books_balance

#: Concurrent postings (each its own receipt) and redemptions in the mixed run, half on each engine.
POSTINGS = 40
REDEMPTIONS = 30
#: Client connections per engine: one more than its share of the requests, so that none waits for
#: the pool here (group commit writes on a waiting posting's own connection; test_group_commit_pool
#: covers small pools). PgBouncer serves all of them with its server pool
#: (start.sh: 20 per database), so a client connection's transactions move between server connections.
POOL_SIZE = (POSTINGS + REDEMPTIONS) // 2 + 1
#: Transactions held open at once to look at that many server connections.
SERVERS_LOOKED_AT = 8
#: Longest wait for them to be open together (a pooler with fewer servers than that stops waiting).
TOGETHER_SECONDS = 5


@pytest.fixture(scope="module")
def pooled_url(postgresql_url: str) -> str:
    """The storage tests' database through PgBouncer, with the service's pooler settings."""
    pgbouncer = PGBOUNCER_URL or DEFAULT_PGBOUNCER_URL
    require_pgbouncer(pgbouncer)
    return through_pgbouncer(postgresql_url, pgbouncer)


@pytest.fixture
def engines(pooled_url: str, runner: asyncio.Runner) -> Iterator[list[Database]]:
    """Two engines on the pooler (two processes of one service, as it were)."""
    pair = [Database.from_url(pooled_url, pool_size=POOL_SIZE) for _ in range(2)]
    yield pair
    for database in pair:
        runner.run(database.dispose())


async def test_a_client_connection_changes_server_connection_between_transactions(
    engines: list[Database],
) -> None:
    """Through the pooler a connection's next transaction may run on another server connection (what
    makes session state unsafe there): two clients end their transactions, and the first one's next
    statement runs on the server the second one released last."""
    async with engines[0].driver_connection() as first, engines[0].driver_connection() as second:
        first_tx, second_tx = first.transaction(), second.transaction()
        await first_tx.start()
        before = await first.fetchval("SELECT pg_backend_pid()")
        await second_tx.start()
        other = await second.fetchval("SELECT pg_backend_pid()")
        await first_tx.commit()
        await second_tx.commit()
        after = await first.fetchval("SELECT pg_backend_pid()")
    assert before != other
    assert after == other


async def test_postings_and_redemptions_through_the_pooler_book_exactly(engines: list[Database]) -> None:
    """40 postings and 30 redemptions at once over two engines, 70 client connections on PgBouncer's
    few server connections: every posting books, exactly the covered redemptions succeed, the books
    balance, and no server connection is left holding a named prepared statement."""
    db = engines[0]
    world = await make_world(db)
    members = [(await membership.create_member(db, world.tenant_id, now=NOW)).id for _ in range(4)]
    spender = members[0]
    for _ in range(3):  # 900 points in three lots: three 300-point coffees
        await adjustments.adjust(db, world.tenant_id, spender, 300, reason="setup", actor="t", now=NOW)

    async def post(i: int) -> int:
        posting = await transactions.post_transaction(
            engines[i % 2],
            world.tenant_id,
            outlet_id=world.outlet_id,
            external_id=f"pooled-{i}",
            occurred_at=NOW,
            items=basket(("BREAD", 1000, 1)),
            member_id=members[1 + i % 3],
            now=NOW,
        )
        return posting.transaction_id

    async def redeem(i: int) -> bool:
        with contextlib.suppress(InsufficientPoints):
            await redemptions.redeem(engines[i % 2], world.tenant_id, spender, "COFFEE", now=NOW)
            return True
        return False

    outcomes = await asyncio.gather(
        *(post(i) for i in range(POSTINGS)), *(redeem(i) for i in range(REDEMPTIONS))
    )
    assert len(set(outcomes[:POSTINGS])) == POSTINGS
    assert sum(outcomes[POSTINGS:]) == 3
    assert await transactions.transaction_count(db, world.tenant_id) == POSTINGS
    assert (await membership.get_member(db, world.tenant_id, spender)).available == 0
    pending = [(await membership.get_member(db, world.tenant_id, m)).pending for m in members[1:]]
    assert sum(pending) == POSTINGS * 10
    await assert_books_balance(db, world.tenant_id)
    assert await _named_statements(engines) == 0


async def _named_statements(engines: list[Database]) -> int:
    """Named prepared statements on the server connections the engines reach now (the transactions
    are open at once, so each holds a server connection of its own)."""
    together = asyncio.Barrier(SERVERS_LOOKED_AT)

    async def count(db: Database) -> int:
        async with db.driver_connection() as conn, conn.transaction():
            found = int(await conn.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE name <> ''"))
            with contextlib.suppress(TimeoutError, asyncio.BrokenBarrierError):
                async with asyncio.timeout(TOGETHER_SECONDS):
                    await together.wait()
            return found

    return sum(await asyncio.gather(*(count(engines[i % 2]) for i in range(SERVERS_LOOKED_AT))))


async def test_without_the_pooler_settings_pgbouncer_refuses_the_service(pooled_url: str) -> None:
    """The same URL without ``?pooler=pgbouncer``: the service asks for its plan cache mode at
    connect time, which PgBouncer refuses, so a misconfigured deployment fails at once."""
    db = Database.from_url(pooled_url.replace("?pooler=pgbouncer", ""))
    try:
        problem = await db.readiness()
    finally:
        await db.dispose()
    assert problem is not None and "plan_cache_mode" in problem


async def test_named_statements_of_two_processes_collide_behind_the_pooler(
    pooled_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the settings avoid: asyncpg's default named statements, numbered from 1 in every process,
    meet on a shared server connection ("already exists"); with its statement cache off (the pooler
    settings) the same two clients work."""
    import asyncpg
    import asyncpg.connection

    # PgBouncer's own pool of the "postgres" database: what this leaves behind there touches no test.
    dsn = PGBOUNCER_URL or DEFAULT_PGBOUNCER_URL

    async def two_processes(**settings: int) -> None:
        first = await asyncpg.connect(dsn, **settings)
        second = await asyncpg.connect(dsn, **settings)
        try:
            for conn, query in ((first, "SELECT $1::int + 1"), (second, "SELECT $1::int + 2")):
                monkeypatch.setattr(asyncpg.connection, "_uid", 0)  # a new process numbers from 1
                await conn.fetchval(query, 1)
        finally:
            # The server the failed statement released last: where the first one's statement is.
            await first.execute("DEALLOCATE ALL")
            await first.close()
            await second.close()

    with pytest.raises(asyncpg.DuplicatePreparedStatementError):
        await two_processes()
    await two_processes(statement_cache_size=0)


def test_the_pooler_is_named_by_the_url_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``?pooler=pgbouncer`` or LOYALTY_DB_POOLER=pgbouncer selects the pooler settings (the URL
    first); any other pooler name is refused rather than ignored."""
    url = "postgresql+asyncpg://postgres@127.0.0.1:6432/shop"
    monkeypatch.delenv("LOYALTY_DB_POOLER", raising=False)
    assert pooler(url) is None
    assert pooler(url + "?pooler=pgbouncer") == "pgbouncer"
    monkeypatch.setenv("LOYALTY_DB_POOLER", "pgbouncer")
    assert pooler(url) == "pgbouncer"
    with pytest.raises(ValueError, match="unknown connection pooler 'pgpool'"):
        pooler(url + "?pooler=pgpool")
