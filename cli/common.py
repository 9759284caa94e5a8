"""What every command of the ``loyalty`` CLI shares: output, one-line errors, the database, the
tenant, dates and row output."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from loyalty.admin import tenants
from loyalty.errors import NotFound
from loyalty.points.baskets import MAX_YEAR, MIN_YEAR
from loyalty.programs import versions
from loyalty.storage.db import Database
from loyalty.storage.models import Tenant

T = TypeVar("T")

# Wide enough for explanations when the output is a file or a pipe (rich would assume 80 columns).
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class CliError(Exception):
    """A one-line message for the operator; exit status 1."""


def read_text(path: Path, what: str, limit: int = 8 * 1024 * 1024) -> str:
    try:
        if path.stat().st_size > limit:
            raise CliError(f"{path}: {what} is larger than {limit // 1024 // 1024} MB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, expected a {what}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None


ACTOR = "cli"
TenantOption = Annotated[
    str | None,
    typer.Option(
        "--tenant",
        envvar="LOYALTY_TENANT",
        show_envvar=True,
        help="Tenant code (default: the only tenant, when there is exactly one).",
    ),
]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[Format, typer.Option("--format", help="Output format.")]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine (on uvloop when installed: posting-heavy commands run ~1.5x faster)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def clock() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@asynccontextmanager
async def open_database() -> AsyncIterator[Database]:
    db = Database.from_url()
    try:
        yield db
    finally:
        await db.dispose()


async def tenant_of(db: Database, code: str | None) -> tenants.TenantView:
    if code:
        return await tenants.tenant_by_code(db, code)
    async with db.read() as s:
        ids = (await s.scalars(select(Tenant.id).order_by(Tenant.id).limit(2))).all()
    if len(ids) != 1:
        raise CliError(
            "no tenant yet: run `loyalty tenant create`"
            if not ids
            else "several tenants: choose one with --tenant CODE or LOYALTY_TENANT"
        )
    return await tenants.get_tenant(db, ids[0])


async def zone_of(db: Database, tenant_id: int) -> ZoneInfo:
    """The program's time zone (for dates given without a time); UTC before anything is published."""
    try:
        return (await versions.current(db, tenant_id, clock())).program.zone
    except NotFound:
        return ZoneInfo("UTC")


async def currency_of(db: Database, tenant_id: int) -> str:
    """The currency of the program in force (EUR before anything is published)."""
    try:
        return (await versions.current(db, tenant_id, clock())).program.document.currency
    except NotFound:
        return "EUR"


def instant_of(text: str, zone: ZoneInfo | tzinfo, what: str, *, end_of_day: bool = False) -> datetime:
    """A date (start of that day in ``zone``, or of the next day with ``end_of_day``) or an aware datetime."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            at = datetime(day.year, day.month, day.day, tzinfo=zone)
        else:
            at = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{what}: {text!r} is not a date (2026-03-01) or a date and time") from None
    if not MIN_YEAR < at.year < MAX_YEAR:
        raise CliError(f"{what}: {text!r} lies outside the years {MIN_YEAR} to {MAX_YEAR}")
    at = at if at.tzinfo is not None else at.replace(tzinfo=zone)
    return at + timedelta(days=1) if end_of_day and len(text) == 10 else at


def emit_rows(rows: list[dict[str, Any]], fmt: Format, title: str) -> None:
    if fmt is Format.json:
        out.print_json(json.dumps(rows, default=str))
    elif fmt is Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if rows:
            writer.writerow(rows[0])
            writer.writerows(r.values() for r in rows)
    else:
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for i, col in enumerate(rows[0] if rows else ()):
            table.add_column(col, justify="right" if isinstance(rows[0][col], int | float) and i else "left")
        for r in rows:
            table.add_row(
                *(f"{v:,}" if isinstance(v, int) else "" if v is None else str(v) for v in r.values())
            )
        out.print(table if rows else f"{title}: nothing yet")
