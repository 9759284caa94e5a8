"""``loyalty db partitions`` and ``loyalty db retention``: the month partitions of the big tables on
PostgreSQL (:mod:`loyalty.storage.partitions`) and the retention that drops old months of detail
(:func:`loyalty.privacy.retention.drop_old_partitions`). On SQLite both say there is nothing to do."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import CliError, Format, FormatOption, clock, emit_rows, instant_of, open_database, out, run
from loyalty.privacy import retention
from loyalty.storage import partitions


def register(db_app: typer.Typer) -> None:
    """Add the commands to ``loyalty db``."""
    db_app.command("partitions")(db_partitions)
    db_app.command("retention")(db_retention)


def db_partitions(
    ahead: Annotated[
        int, typer.Option(min=0, max=120, help="Months to create ahead of the current one.")
    ] = partitions.AHEAD_MONTHS,
    list_only: Annotated[bool, typer.Option("--list", help="Only list the partitions.")] = False,
    fmt: FormatOption = Format.table,
) -> None:
    """Create the month partitions ahead (and split rows of those months out of DEFAULT), then list
    every partition. `loyalty jobs run all` does the same each night."""

    async def go() -> tuple[partitions.Ensured | None, list[partitions.Partition]]:
        async with open_database() as db:
            if not db.is_postgresql:
                raise CliError("this database is SQLite: its tables are not partitioned")
            async with db.driver_connection() as conn:
                if not await partitions.is_partitioned(conn):
                    raise CliError("the tables are not partitioned yet (run `loyalty db upgrade`)")
                done = None if list_only else await partitions.ensure(conn, now=clock(), ahead=ahead)
                return done, await partitions.partitions(conn)

    done, found = run(go())
    if done is not None:
        for name in done.created:
            moved = done.moved.get(name)
            out.print(f"created {name}" + (f" ({moved:,} rows moved from DEFAULT)" if moved else ""))
        if not done.created:
            out.print(f"every month through {ahead} months ahead has its partition")
    rows = [
        {
            "table": p.table,
            "partition": p.name,
            "month": "DEFAULT" if p.month is None else f"{p.month[0]:04d}-{p.month[1]:02d}",
            "rows (estimate)": max(p.estimate, 0),
        }
        for p in found
    ]
    emit_rows(rows, fmt, title="Partitions")


def db_retention(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; change nothing.")] = False,
    events_months: Annotated[
        int,
        typer.Option(
            min=1,
            max=retention.MAX_EVENTS_MONTHS,
            help="Months of events kept (LOYALTY_EVENTS_RETENTION_MONTHS).",
        ),
    ] = retention.EVENTS_MONTHS,
    detach: Annotated[
        bool, typer.Option("--detach", help="Detach old months and keep them as tables instead of dropping.")
    ] = False,
    as_of: Annotated[
        str | None, typer.Option(help="Run as of this day or instant (UTC); default now.")
    ] = None,
) -> None:
    """Drop the month partitions of basket lines and events that retention no longer needs (every
    tenant's privacy.basket_detail_months for lines; the events retention for events, never a month
    with undelivered webhooks). Purchases and ledger entries are never dropped."""
    from zoneinfo import ZoneInfo

    async def go() -> list[retention.MonthFate]:
        async with open_database() as db:
            if not db.is_postgresql:
                raise CliError(
                    "this database is SQLite: it has no partitions (basket detail is purged row by row)"
                )
            now = instant_of(as_of, ZoneInfo("UTC"), "--as-of", end_of_day=True) if as_of else clock()
            return await retention.drop_old_partitions(
                db, now=now, events_months=events_months, dry_run=dry_run, detach_only=detach
            )

    fates = run(go())
    for f in fates:
        rows = f" ({f.rows:,} rows)" if f.action != "kept" else ""
        out.print(f"{f.action} {f.partition} [{f.month}]{rows}: {f.reason}")
    if not fates:
        out.print("nothing to drop: no month of basket lines or events is past its retention")
