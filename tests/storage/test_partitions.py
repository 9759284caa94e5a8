"""Monthly partitions on PostgreSQL: the migration of a populated database, pruning, months ahead and
DEFAULT, retention of detail, and the till's receipt staying unique across months."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loyalty.ledger import store
from loyalty.ops import audit, jobs, reports
from loyalty.points import posting, redemptions, refunds
from loyalty.privacy import retention
from loyalty.storage import partitions
from loyalty.storage.db import Database, upgrade_async
from loyalty.storage.models import load_all
from tests.conftest import throwaway_postgresql

from .conftest import NOW, PROGRAM, make_world
from .helpers import member_with, post

TABLES = tuple(partitions.PARTITIONED)
PRIVATE = PROGRAM.replace("tiers:\n", "privacy: {basket_detail_months: 3}\ntiers:\n", 1)
LONGER = PROGRAM.replace("tiers:\n", "privacy: {basket_detail_months: 4}\ntiers:\n", 1)


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (dropped afterwards)."""
    with throwaway_postgresql() as url:
        yield url


@pytest.fixture
def pg(postgresql_url: str) -> Database:
    from .conftest import _databases

    if postgresql_url not in _databases:
        _databases[postgresql_url] = Database.from_url(postgresql_url)
    return _databases[postgresql_url]


def at(year: int, month: int, day: int = 10, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


async def _fingerprint(db: Database) -> dict[str, Any]:
    """Every row of the four tables (their model columns), by table: equal before and after."""
    out: dict[str, Any] = {}
    async with db.driver_connection() as conn:
        for table in TABLES:
            columns = ", ".join(c.name for c in load_all().tables[table].columns)
            out[table] = await conn.fetchval(
                f"SELECT count(*)::text || ':' || coalesce(md5(string_agg(r::text, '|' ORDER BY r.id)), '')"
                f" FROM (SELECT {columns} FROM {table}) r"
            )
        out["members"] = [
            tuple(r) for r in await conn.fetch("SELECT id, available, pending, debt FROM members ORDER BY id")
        ]
    return out


async def _figures(db: Database, tenant_id: int, year: int = 2025) -> tuple[Any, ...]:
    """The reports (January to April of ``year``) and the audit of one tenant."""
    moves = await reports.movements(db, tenant_id, since=at(year, 1), months=4, now=NOW)
    sales = await reports.settlement(db, tenant_id, since=at(year, 1, 1, 0), until=at(year, 5, 1, 0))
    found = await audit.audit(db, tenant_id)
    return moves, sales, await reports.liability(db, tenant_id), found.findings, found.purchases


async def _where(db: Database, table: str, key: str) -> list[tuple[str, str]]:
    """(partition, month of the key) of every row of ``table``."""
    async with db.driver_connection() as conn:
        rows = await conn.fetch(
            f"SELECT tableoid::regclass::text, to_char({key} AT TIME ZONE 'UTC', 'YYYY_MM') FROM {table}"
        )
    return [(r[0], r[1]) for r in rows]


async def test_migration_partitions_a_populated_database(
    fresh_pg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0006 -> 0007 on a database with purchases, refunds, redemptions and job runs keeps every row,
    balance, report and audit result; rows sit in their months; ids continue; new postings work and
    a receipt sent again with another time is still booked once."""
    await upgrade_async(fresh_pg, "0006")
    db = Database.from_url(fresh_pg)
    # The code before 0007 wrote items without their month (the column comes with the migration).
    monkeypatch.setattr(store, "_item_months", lambda booking: None)
    # ... and looked receipts up in transactions (transaction_receipts comes with it too).
    monkeypatch.setattr(posting, "RECEIPTS_TABLE", False)
    posting._context_sql.cache_clear()
    try:
        world = await make_world(db)
        alice, bob = await member_with(world, 0), await member_with(world, 500, now=at(2025, 1, 2))
        firsts = [await post(world, f"r{i}", 1_250, alice, at=at(2025, 1 + i % 3, 5 + i)) for i in range(6)]
        await post(world, "b1", 4_000, bob, at=at(2025, 2, 20))
        await refunds.refund(db, world.tenant_id, firsts[0].transaction_id, now=at(2025, 1, 9))
        await redemptions.redeem(db, world.tenant_id, bob, "CAKE", now=at(2025, 3, 1))
        for day in (at(2025, 3, 1), at(2025, 5, 2)):
            await jobs.run_all(db, world.tenant_id, now=day)
        before, figures = await _fingerprint(db), await _figures(db, world.tenant_id)
        assert figures[3] == [] and figures[4] == 7
    finally:
        await db.dispose()

    monkeypatch.undo()
    posting._context_sql.cache_clear()
    await upgrade_async(fresh_pg)
    db = Database.from_url(fresh_pg)
    try:
        async with db.driver_connection() as conn:
            assert all([await partitions.is_partitioned(conn, t) for t in TABLES])
            last_id = await conn.fetchval("SELECT max(id) FROM transactions")
        assert await _fingerprint(db) == before
        assert await _figures(db, world.tenant_id) == figures
        for table, key in partitions.PARTITIONED.items():
            placed = await _where(db, table, key)
            assert placed and all(part == f"{table}_p{month}" for part, month in placed), placed

        later = await post(world, "new", 900, alice, at=at(2025, 4, 3), now=at(2025, 4, 3))
        assert later.transaction_id > last_id
        assert ("transactions_p2025_04", "2025_04") in await _where(db, "transactions", "occurred_at")
        assert ("transaction_items_p2025_04", "2025_04") in await _where(
            db, "transaction_items", "occurred_at"
        )

        # The same receipt again, months later: booked once (the first posting is replayed).
        again = await post(world, "r1", 1_250, alice, at=at(2025, 4, 20), now=at(2025, 4, 20))
        assert again.replayed and again.transaction_id == firsts[1].transaction_id
        import asyncpg

        async with db.driver_connection() as conn:
            with pytest.raises(asyncpg.UniqueViolationError) as refused:
                await conn.execute(
                    "INSERT INTO transactions (tenant_id, member_id, outlet_id, external_id, channel,"
                    " occurred_at, posted_at, program_version_id, amount, points, amount_refunded,"
                    " points_refunded, evaluation) VALUES ($1, $2, $3, 'r1', 'till', $4, $4, $5, 0, 0, 0, 0,"
                    " '{}')",
                    world.tenant_id,
                    alice,
                    world.outlet_id,
                    at(2026, 12, 1),
                    world.version_id,
                )
        assert refused.value.table_name == "transactions"
        assert (await audit.audit(db, world.tenant_id)).findings == []
    finally:
        await db.dispose()


async def _explained(db: Database, captured: list[tuple[str, tuple[Any, ...]]]) -> dict[str, list[str]]:
    """The partitions the captured statements read, all together."""
    seen: dict[str, set[str]] = {}
    async with db.driver_connection() as conn:
        for sql, args in captured:
            for table, names in (await partitions.scanned(conn, sql, *args)).items():
                seen.setdefault(table, set()).update(names)
    return {t: sorted(n) for t, n in seen.items()}


def _months_of(table: str, first: tuple[int, int], last: tuple[int, int]) -> list[str]:
    return [partitions.partition_name(table, y, m) for y, m in partitions.months(first, last)]


async def test_reports_and_jobs_read_only_their_months(pg: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """EXPLAIN of the queries the monthly report, the settlement and the jobs really run: the report
    of (Berlin) March reads March and the last hours of February, the settlement of a UTC month one
    partition, the tier window its twelve months, and expiry no month of the books at all."""
    async with pg.driver_connection() as conn:
        await partitions.ensure(conn, now=NOW, since=at(2023, 12))
    world = await make_world(pg)
    member = await member_with(world, 0)
    for month in (1, 2, 3, 4):
        await post(world, f"m{month}", 2_000, member, at=at(2025, month), now=at(2025, month))

    statements: list[tuple[str, tuple[Any, ...]]] = []

    def capture(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        statements.append((sql, tuple(params or ())))

    from sqlalchemy import event

    event.listen(pg.engine.sync_engine, "before_cursor_execute", capture)
    try:
        await reports.movements(pg, world.tenant_id, since=at(2025, 3), months=1, now=NOW)
        report = [s for s in statements if "ledger_entries" in s[0]]
        statements.clear()
        await reports.settlement(pg, world.tenant_id, since=at(2025, 3, 1, 0), until=at(2025, 4, 1, 0))
        settlement = [s for s in statements if "transactions" in s[0]]
    finally:
        event.remove(pg.engine.sync_engine, "before_cursor_execute", capture)
    assert len(report) == 1 and len(settlement) == 1
    assert await _explained(pg, report) == {
        "ledger_entries": _months_of("ledger_entries", (2025, 2), (2025, 3))
    }
    assert await _explained(pg, settlement) == {"transactions": ["transactions_p2025_03"]}

    unit_sql: list[tuple[str, tuple[Any, ...]]] = []
    original_fetch, original_execute = store.PgUnit.fetch, store.PgUnit.execute

    async def fetch(self: store.PgUnit, sql: str, *args: Any) -> Any:
        unit_sql.append((sql, args))
        return await original_fetch(self, sql, *args)

    async def execute(self: store.PgUnit, sql: str, *args: Any) -> int:
        unit_sql.append((sql, args))
        return await original_execute(self, sql, *args)

    monkeypatch.setattr(store.PgUnit, "fetch", fetch)
    monkeypatch.setattr(store.PgUnit, "execute", execute)
    await jobs.expire_lots(pg, world.tenant_id, now=at(2025, 5, 2))
    expiry = list(unit_sql)
    unit_sql.clear()
    await jobs.evaluate_tiers(pg, world.tenant_id, now=at(2025, 5, 2))
    tiers = [s for s in unit_sql if "FROM transactions" in s[0]]
    monkeypatch.undo()

    assert any("INSERT INTO ledger_entries" in s for s, _ in expiry)  # it did book the expiry
    assert await _explained(pg, expiry) == {}
    assert tiers and await _explained(pg, tiers) == {
        "transactions": _months_of("transactions", (2024, 5), (2025, 5))
    }


async def test_ensure_creates_months_ahead_and_splits_default(pg: Database) -> None:
    """Rows of a month without a partition wait in DEFAULT; creating the month moves them in, every
    key and guard still holding: items with their purchase, the receipt unique, the books append-only."""
    world = await make_world(pg)
    member = await member_with(world, 0, now=at(2031, 5, 1))
    first = await post(world, "far", 3_000, member, at=at(2031, 5, 3), now=at(2031, 5, 3))
    for table, key in partitions.PARTITIONED.items():
        assert ("_".join([table, "default"]), "2031_05") in await _where(pg, table, key)

    async with pg.driver_connection() as conn:
        done = await partitions.ensure(conn, now=at(2031, 5, 3), ahead=2)
        again = await partitions.ensure(conn, now=at(2031, 5, 3), ahead=2)
    # Months other tests left waiting in DEFAULT are created too (see the next test); these at least.
    assert {partitions.partition_name(t, 2031, m) for t in TABLES for m in (5, 6, 7)} <= set(done.created)
    assert again.created == []
    assert {partitions.partition_name(t, 2031, 5) for t in TABLES} <= set(done.moved)
    for table, key in partitions.PARTITIONED.items():
        placed = {p for p, month in await _where(pg, table, key) if month == "2031_05"}
        assert placed == {partitions.partition_name(table, 2031, 5)}

    replay = await post(world, "far", 3_000, member, at=at(2031, 6, 1), now=at(2031, 6, 1))
    assert replay.replayed and replay.transaction_id == first.transaction_id
    assert (await audit.audit(pg, world.tenant_id)).findings == []
    import asyncpg

    async with pg.driver_connection() as conn:
        for sql in ("DELETE FROM ledger_entries_p2031_05", "TRUNCATE ledger_entries_p2031_05"):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(sql)


async def test_ensure_moves_imported_history_out_of_default(pg: Database) -> None:
    """History booked for months long before the partitions (an import of old purchases) waits in
    DEFAULT only until the next ensure: the nightly one, without ``since``, creates those months too
    and moves the rows, so retention and pruning see them like any month."""
    world = await make_world(pg, now=at(2012, 1, 1))
    member = await member_with(world, 0, now=at(2012, 2, 1))
    await post(world, "old", 2_000, member, at=at(2012, 2, 3), now=at(2012, 2, 3))
    for table, key in partitions.PARTITIONED.items():
        assert (partitions.default_name(table), "2012_02") in await _where(pg, table, key)

    async with pg.driver_connection() as conn:
        done = await partitions.ensure(conn, now=at(2026, 11, 30))
    assert {partitions.partition_name(t, 2012, 2) for t in TABLES} <= set(done.moved)
    for table, key in partitions.PARTITIONED.items():
        placed = {p for p, month in await _where(pg, table, key) if month == "2012_02"}
        assert placed == {partitions.partition_name(table, 2012, 2)}
    assert (await audit.audit(pg, world.tenant_id)).findings == []


async def test_retention_drops_old_detail_months_only(fresh_pg: str) -> None:
    """Basket lines go by month once every tenant's retention passed it (the longest wins) and their
    purchases read as purged; events go after the events retention unless undelivered; the books stay."""
    await upgrade_async(fresh_pg)
    db = Database.from_url(fresh_pg)
    now = at(2023, 9, 15)
    try:
        async with db.driver_connection() as conn:
            await partitions.ensure(conn, now=now, since=at(2023, 1))
        short, long = (
            await make_world(db, PRIVATE, now=at(2022, 12)),
            await make_world(db, LONGER, now=at(2022, 12)),
        )
        for w in (short, long):
            m = await member_with(w, 0, now=at(2023, 1, 1))
            for month in range(1, 10):
                await post(w, f"x{month}", 1_000 + month, m, at=at(2023, month), now=at(2023, month))
        async with db.driver_connection() as conn:
            await conn.execute("UPDATE events SET dispatched = true WHERE occurred_at < '2023-04-01'")
            endpoint = await conn.fetchval(
                "INSERT INTO webhook_endpoints (tenant_id, url, description, event_types, secret, state,"
                " created_at, created_by, updated_at) VALUES ($1, 'https://x.example', '', '[]', 's',"
                " 'active', now(), 't', now()) RETURNING id",
                long.tenant_id,
            )
            await conn.execute(
                "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_id, member_id, state,"
                " attempts, next_attempt_at, created_at) SELECT tenant_id, $1, id, member_id, 'pending',"
                " 0, now(), now() FROM events WHERE tenant_id = $2"
                " AND occurred_at >= '2023-02-01' AND occurred_at < '2023-03-01'",
                endpoint,
                long.tenant_id,
            )
            entries_before = await conn.fetchval("SELECT count(*) FROM ledger_entries")
        figures_before = [await _figures(db, w.tenant_id, 2023) for w in (short, long)]

        plan = await retention.drop_old_partitions(db, now=now, events_months=6, dry_run=True)
        fates = {(f.partition, f.action) for f in plan}
        # Items: the 4-month retention ends 2023-05-15: January to April go. Events: before March.
        assert fates == {
            *((partitions.partition_name("transaction_items", 2023, m), "would drop") for m in (1, 2, 3, 4)),
            ("events_p2023_01", "would drop"),
            ("events_p2023_02", "kept"),
        }
        async with db.driver_connection() as conn:
            assert (
                len(await partitions.partitions(conn, ["transaction_items"])) > 4
            )  # a dry run changes nothing
            assert (
                await conn.fetchval("SELECT count(*) FROM transactions WHERE detail_purged_at IS NOT NULL")
                == 0
            )

        done = await retention.drop_old_partitions(db, now=now, events_months=6)
        assert {(f.partition, f.action) for f in done} == {
            (p, "dropped" if a != "kept" else a) for p, a in fates
        }
        async with db.driver_connection() as conn:
            left = {p.name for p in await partitions.partitions(conn)}
            purged = await conn.fetch(
                "SELECT to_char(occurred_at, 'MM') AS month, evaluation ? 'lines_dropped' AS dropped"
                " FROM transactions WHERE detail_purged_at IS NOT NULL ORDER BY 1"
            )
            assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == entries_before
            assert await conn.fetchval("SELECT count(*) FROM webhook_deliveries") > 0  # February's stay
        assert "transaction_items_p2023_04" not in left and "transaction_items_p2023_05" in left
        assert "events_p2023_01" not in left and "events_p2023_02" in left
        assert "transactions_p2023_01" in left and "ledger_entries_p2023_01" in left
        assert sorted({r["month"] for r in purged}) == ["01", "02", "03", "04"] and all(
            r["dropped"] for r in purged
        )
        for w, before in zip((short, long), figures_before, strict=True):
            after = await _figures(db, w.tenant_id, 2023)
            assert after[:3] == before[:3] and after[3] == [] and after[4] == before[4]

        second = await retention.drop_old_partitions(db, now=now, events_months=6)
        assert [(f.partition, f.action) for f in second] == [("events_p2023_02", "kept")]
        await make_world(db, PROGRAM, now=at(2022, 12))  # a tenant that keeps basket detail forever
        later = await retention.drop_old_partitions(
            db, now=now + timedelta(days=62), events_months=6, dry_run=True
        )
        kept = [f for f in later if f.table == "transaction_items"]
        assert kept and all(f.action == "kept" and "keeps basket detail" in f.reason for f in kept)
    finally:
        await db.dispose()


async def test_sqlite_has_no_partitions(sqlite_url: str) -> None:
    """SQLite is unchanged: the nightly job creates nothing and retention finds no month to drop."""
    db = Database.from_url(sqlite_url)
    try:
        assert (await jobs.ensure_partitions(db, 1, now=NOW)).partitions == 0
        assert await retention.drop_old_partitions(db, now=NOW) == []
    finally:
        await db.dispose()


def _loyalty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, *args: str
) -> Any:
    """Run ``loyalty ARGS`` in this process against ``url``; (exit status, stdout, stderr)."""
    import sys

    from cli.app import main

    monkeypatch.setenv("LOYALTY_DATABASE_URL", url)
    monkeypatch.setattr(sys, "argv", ["loyalty", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def _csv_names(printed: str) -> set[str]:
    """The partition names of `loyalty db partitions --format csv` (after any "created" lines)."""
    rows = [line.split(",") for line in printed.splitlines() if "," in line]
    return {row[1] for row in rows if row[1] != "partition"}


def test_cli_lists_partitions_and_plans_retention(
    postgresql_url: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`loyalty db partitions` lists every table's months and DEFAULT; `loyalty db retention --dry-run`
    changes nothing; on SQLite both say there are no partitions, in one line, with a non-zero exit."""
    code, listed, _ = _loyalty(monkeypatch, capsys, postgresql_url, "db", "partitions", "--format", "csv")
    assert code == 0
    names = _csv_names(listed)
    assert {partitions.default_name(t) for t in TABLES} <= names
    assert all(any(n.startswith(f"{t}_p") for n in names) for t in TABLES)

    code, planned, _ = _loyalty(
        monkeypatch, capsys, postgresql_url, "db", "retention", "--dry-run", "--as-of", "2040-01-01"
    )
    assert code == 0 and planned.strip()
    assert not any(line.startswith(("dropped", "detached")) for line in planned.splitlines())
    code, again, _ = _loyalty(
        monkeypatch, capsys, postgresql_url, "db", "partitions", "--list", "--format", "csv"
    )
    assert code == 0 and _csv_names(again) == names

    for command in ("partitions", "retention"):
        code, _, err = _loyalty(monkeypatch, capsys, sqlite_url, "db", command)
        assert code == 1 and err.strip().startswith("loyalty: error: this database is SQLite")
