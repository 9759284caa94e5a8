"""Importing historic purchases: a stream of rows in, batches of postings out.

The file is read row by row and never held in memory: CSV with one row per basket line (consecutive
rows with the same outlet and external id are one purchase) or JSON lines with one purchase per line.
Each batch goes through the batch posting of :mod:`loyalty.points.posting` (evaluation with the version
valid at ``occurred_at``, lot, ledger entries, tiers, stamps, replayed in memory in file order and
written as one booking), with the posting clock set to ``occurred_at``, so the ledger, monthly
reports and tiers read as if the purchases had been posted live.
Run the jobs afterwards (``loyalty jobs run ...``) to release and expire what is due by now.

* **Batches are all-or-nothing**: a batch is one database transaction. A row that cannot be read or
  posted rejects its whole batch, which is rolled back; the import goes on with the next batch and
  the report names every rejected batch, its lines and the reason of each bad row.
* **Re-running the same file adds nothing**: a purchase whose (outlet, external id) is already booked
  is skipped (one query per batch finds them), and the database refuses a duplicate anyway.
* **Memory stays flat**: the file is streamed, one batch is held at a time, and the caches of cards
  and member references are bounded.
* **Members and cards**: ``card`` is a card number of the tenant (its prefix and check digit). A card
  not yet known is created, as if printed, and bound on first use to a new member, or to the member of
  an earlier row with the same ``member`` reference (a member with several cards); within one run,
  member references are remembered.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO, Any

from cachetools import LRUCache
from sqlalchemy import select
from sqlalchemy import text as sql

import rules
from loyalty.cards.numbers import InvalidCardNumber, parse_card_number
from loyalty.errors import InvalidInput, LoyaltyError
from loyalty.ledger import Booking, Duplicate, run
from loyalty.ledger.store import Unit
from loyalty.points import posting
from loyalty.storage.db import Database
from loyalty.storage.models import Outlet, Tenant

#: Purchases per batch (one database transaction each): large enough to amortise the commit, small
#: enough that a rejected batch is cheap to fix and re-run.
BATCH_SIZE = 500
#: Longest line accepted in a file (a JSON purchase of a full basket is well under this).
MAX_LINE = 1024 * 1024
#: Most lines one CSV purchase or one JSON purchase may have (the engine's basket limit).
MAX_ITEMS = rules.engine.MAX_ITEMS
#: Rejected batches whose rows the report lists in full (the count covers all of them).
MAX_REPORTED_BATCHES = 50

#: Cards whose member is remembered during one run (a few MB at most).
CARD_CACHE = 200_000

CSV_COLUMNS = ("external_id", "outlet", "card", "occurred_at", "sku", "unit_price")
CSV_OPTIONAL = ("member", "category", "quantity", "tags")
CHANNEL = "import"


class ImportFileError(InvalidInput):
    """The file as a whole cannot be imported (unknown format, missing columns); nothing was written."""


@dataclass(frozen=True, slots=True)
class Purchase:
    """One purchase read from the file; ``line`` is where it starts (1-based, header included)."""

    line: int
    outlet: str
    external_id: str
    card: str
    occurred_at: datetime
    items: tuple[rules.Item, ...]
    member: str | None = None


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str


Parsed = Purchase | RowError


@dataclass(frozen=True, slots=True)
class RejectedBatch:
    first_line: int
    last_line: int
    purchases: int
    errors: tuple[RowError, ...]


@dataclass(slots=True)
class ImportReport:
    purchases: int = 0
    imported: int = 0
    #: Already booked before this run (same outlet and external id): skipped.
    skipped: int = 0
    rejected: int = 0
    points: int = 0
    rejected_batches: list[RejectedBatch] = field(default_factory=list)
    rejected_batch_count: int = 0
    elapsed_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.purchases / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------------
# Reading


def _when(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"occurred_at {text!r} is not an ISO 8601 date and time") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"occurred_at {text!r} has no time zone (add +01:00 or Z)")
    return at


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be a whole number")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a whole number") from None
    if number < minimum:
        raise ValueError(f"{what} must be at least {minimum}")
    return number


def _text(value: Any, what: str, limit: int = 64, *, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise ValueError(f"{what} is missing")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    text = str(value).strip()
    if len(text) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    if "\x00" in text:
        raise ValueError(f"{what} holds a NUL character")
    return text


def _item(sku: Any, category: Any, quantity: Any, unit_price: Any, tags: Any) -> rules.Item:
    if isinstance(tags, str):
        tags = [t for t in (t.strip() for t in tags.split(";")) if t]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("tags must be a list of strings")
    return rules.Item(
        sku=_text(sku, "sku"),
        category=_text(category, "category", required=False),
        quantity=_int(1 if quantity in (None, "") else quantity, "quantity", 1),
        unit_price=_int(unit_price, "unit_price (minor units, e.g. cents)", 0),
        tags=tuple(_text(t, "tag") for t in tags),
    )


def _head(line: int, outlet: Any, external_id: Any, card: Any, occurred_at: Any, member: Any) -> Purchase:
    if not isinstance(occurred_at, str):
        raise ValueError("occurred_at must be an ISO 8601 string")
    try:
        number = parse_card_number(_text(card, "card", 32))
    except InvalidCardNumber as exc:
        raise ValueError(f"card: {exc}") from None
    return Purchase(
        line=line,
        outlet=_text(outlet, "outlet"),
        external_id=_text(external_id, "external_id", posting.MAX_EXTERNAL_ID),
        card=number,
        occurred_at=_when(occurred_at),
        items=(),
        member=_text(member, "member", 100, required=False) or None,
    )


def read_csv(stream: IO[str]) -> Iterator[Parsed]:
    """Purchases from CSV: a header row, then one row per basket line; see :data:`CSV_COLUMNS`."""
    reader = csv.reader(stream)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ImportFileError(
            f"line 1: the header lacks the column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (expected {', '.join(CSV_COLUMNS + CSV_OPTIONAL)})"
        )
    col = {name: header.index(name) for name in CSV_COLUMNS + CSV_OPTIONAL if name in header}
    width = len(header)
    current: Purchase | None = None
    items: list[rules.Item] = []
    failed: RowError | None = None  # a bad line spoils its whole purchase: skip its other lines
    key: tuple[str, str] | None = None

    def value(row: list[str], name: str) -> str | None:
        return row[col[name]] if name in col else None

    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield RowError(line, str(exc))
            continue
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        row_key = (row[col["outlet"]].strip(), row[col["external_id"]].strip()) if len(row) == width else None
        if row_key is None or row_key != key:
            if current is not None:
                yield dataclasses.replace(current, items=tuple(items))
            current, items, failed, key = None, [], None, row_key
        if failed is not None:
            continue
        try:
            if len(row) != width:
                raise ValueError(f"{len(row)} fields, the header has {width}")
            if current is None:
                current = _head(
                    line,
                    value(row, "outlet"),
                    value(row, "external_id"),
                    value(row, "card"),
                    value(row, "occurred_at"),
                    value(row, "member"),
                )
            if len(items) >= MAX_ITEMS:
                raise ValueError(f"a purchase holds at most {MAX_ITEMS} lines")
            items.append(
                _item(
                    value(row, "sku"),
                    value(row, "category"),
                    value(row, "quantity"),
                    value(row, "unit_price"),
                    value(row, "tags") or "",
                )
            )
        except ValueError as exc:
            failed = RowError(line, str(exc))
            current, items = None, []
            yield failed
    if current is not None:
        yield dataclasses.replace(current, items=tuple(items))


def read_jsonl(stream: IO[str]) -> Iterator[Parsed]:
    """Purchases from JSON lines: one object per line with ``items`` (a list of basket lines)."""
    for line, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            if len(text) > MAX_LINE:
                raise ValueError(f"the line is longer than {MAX_LINE} characters")
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            unknown = set(data) - {"external_id", "outlet", "card", "member", "occurred_at", "items"}
            if unknown:
                raise ValueError(
                    f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(sorted(unknown))}"
                )
            head = _head(
                line,
                data.get("outlet"),
                data.get("external_id"),
                data.get("card"),
                data.get("occurred_at"),
                data.get("member"),
            )
            lines = data.get("items")
            if not isinstance(lines, list) or not lines:
                raise ValueError("items must be a non-empty list")
            if len(lines) > MAX_ITEMS:
                raise ValueError(f"a purchase holds at most {MAX_ITEMS} lines")
            items = []
            for i, it in enumerate(lines):
                if not isinstance(it, dict):
                    raise ValueError(f"items[{i}] must be an object")
                try:
                    items.append(
                        _item(
                            it.get("sku"),
                            it.get("category"),
                            it.get("quantity"),
                            it.get("unit_price"),
                            it.get("tags", []),
                        )
                    )
                except ValueError as exc:
                    raise ValueError(f"items[{i}]: {exc}") from None
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            yield RowError(line, str(exc))
            continue
        yield Purchase(
            head.line, head.outlet, head.external_id, head.card, head.occurred_at, tuple(items), head.member
        )


def format_of(path: Path, given: str | None = None) -> str:
    """``csv`` or ``jsonl``, from ``given`` or the file's suffix."""
    fmt = (given or path.suffix.lstrip(".")).lower()
    fmt = {"ndjson": "jsonl", "json": "jsonl"}.get(fmt, fmt)
    if fmt not in ("csv", "jsonl"):
        raise ImportFileError(f"{path}: cannot tell the format from the suffix; use --format csv or jsonl")
    return fmt


def read_file(stream: IO[str], fmt: str) -> Iterator[Parsed]:
    return read_csv(stream) if fmt == "csv" else read_jsonl(stream)


def open_text(path: Path) -> IO[str]:
    """The file as UTF-8 text (a BOM is skipped), read in 64 kB chunks. The command line opens it
    through rich's progress wrapper instead, which counts the bytes read for its bar."""
    return path.open("r", encoding="utf-8-sig", newline="", buffering=1 << 16)


# ---------------------------------------------------------------------------------------------------
# Posting


@dataclass(slots=True)
class _Context:
    tenant_id: int
    prefix: str
    outlets: dict[str, int]
    #: The file's member references -> member ids (bounded: a reference matters when a member's second
    #: card first appears, usually close to their first one).
    members: LRUCache[str, int]
    #: Card number -> member of cards seen active in this run (saves a lookup per purchase).
    cards: LRUCache[str, int] = field(default_factory=lambda: LRUCache(maxsize=CARD_CACHE))


async def _context(db: Database, tenant_id: int) -> _Context:
    async with db.read() as s:
        prefix = await s.scalar(select(Tenant.card_prefix).where(Tenant.id == tenant_id))
        outlets = dict(
            (await s.execute(select(Outlet.code, Outlet.id).where(Outlet.tenant_id == tenant_id))).all()
        )
    if prefix is None:
        raise ImportFileError(f"tenant {tenant_id} not found")
    return _Context(tenant_id, prefix, outlets, LRUCache(maxsize=CARD_CACHE))


#: Receipts of a batch already booked: looked up by the whole unique key (tenant, outlet, external id),
#: so the index answers it (by external id alone it scanned the tenant's transactions every batch).
_BOOKED = {
    "postgresql": "SELECT t.outlet_id, t.external_id FROM transactions t"
    " JOIN unnest($2::bigint[], $3::text[]) AS k(outlet_id, external_id)"
    " ON t.tenant_id = $1 AND t.outlet_id = k.outlet_id AND t.external_id = k.external_id",
    # CROSS JOIN: SQLite's way of saying "the keys first, then the index", else it scans transactions.
    "sqlite": "SELECT t.outlet_id, t.external_id FROM json_each($2) AS k"
    " CROSS JOIN transactions t ON t.tenant_id = $1 AND t.outlet_id = json_extract(k.value, '$[0]')"
    " AND t.external_id = json_extract(k.value, '$[1]')",
}
#: Locked until the batch commits: a till activating one of these cards meanwhile waits for the batch.
_CARDS = "SELECT number, id, state, member_id FROM cards WHERE tenant_id = $1 AND number {ids} FOR UPDATE"


@dataclass(slots=True)
class _Batch:
    """What one batch's unit of work produced, applied to the run's report and caches on success."""

    imported: int = 0
    skipped: int = 0
    points: int = 0
    members: dict[str, int] = field(default_factory=dict)
    cards: dict[str, int] = field(default_factory=dict)


async def _batch_unit(ctx: _Context, batch: list[Purchase], channel: str, unit: Unit) -> _Batch:
    """One batch, all or nothing: cards and members resolved (new ones created), receipts already
    booked skipped, then every purchase replayed in order and written as one booking."""
    tenant_id = ctx.tenant_id
    out = _Batch()
    keys = sorted({(ctx.outlets[p.outlet], p.external_id) for p in batch if p.outlet in ctx.outlets})
    if unit.dialect == "postgresql":
        found = await unit.fetch(_BOOKED[unit.dialect], tenant_id, [k[0] for k in keys], [k[1] for k in keys])
    else:
        found = await unit.fetch(_BOOKED[unit.dialect], tenant_id, json.dumps(keys))
    booked = {(o, e) for o, e in found}
    unknown = sorted({p.card for p in batch if p.card not in ctx.cards})
    cards = {
        r[0]: (r[1], r[2], r[3])
        for r in (
            await unit.fetch(_CARDS.format(ids=unit.any_of("$2", "text")), tenant_id, unit.listed(unknown))
            if unknown
            else []
        )
    }
    booking = Booking(tenant_id, max(p.occurred_at for p in batch))
    new_members: dict[int, posting.MemberContext] = {}
    spare_members: list[int] = []
    spare_cards: list[int] = []
    purchases: list[posting.BatchPurchase] = []
    seen: set[tuple[int, str]] = set()

    async def new_member(at: datetime) -> int:
        nonlocal spare_members
        if not spare_members:
            spare_members = await unit.next_ids("members", 256)
        member_id, spare_members = spare_members[0], spare_members[1:]
        holder = booking.new_member(member_id, enrolled_at=at)
        new_members[member_id] = posting.MemberContext(holder, None, 0, None, at, (), {}, {}, {}, window=[])
        return member_id

    for p in batch:
        outlet_id = ctx.outlets.get(p.outlet)
        if outlet_id is None:
            raise posting.Rejected(p.line, f"outlet {p.outlet!r} not found")
        key = (outlet_id, p.external_id)
        if key in booked or key in seen:
            out.skipped += 1
            continue
        seen.add(key)
        named = (out.members.get(p.member) or ctx.members.get(p.member)) if p.member else None
        member_id = ctx.cards.get(p.card) or out.cards.get(p.card)
        if member_id is None:
            card = cards.get(p.card)
            if card is not None and card[1] == "blocked":
                raise posting.Rejected(p.line, "this card is blocked")
            if card is not None and card[1] == "active":
                member_id = card[2]
            else:
                if card is None and not p.card.startswith(ctx.prefix):
                    raise posting.Rejected(
                        p.line,
                        f"card {p.card} is not a card of this tenant (numbers start with {ctx.prefix})",
                    )
                member_id = named or await new_member(p.occurred_at)
                bound = {"state": "active", "member_id": member_id, "activated_at": p.occurred_at}
                if card is None:
                    if not spare_cards:
                        spare_cards = await unit.next_ids("cards", 256)
                    card_id, spare_cards = spare_cards[0], spare_cards[1:]
                    serial = int(p.card[len(ctx.prefix) : -1])
                    booking.insert(
                        "cards",
                        {"id": card_id, "tenant_id": tenant_id, "number": p.card, "serial": serial}
                        | {"outlet_id": None, "created_at": p.occurred_at}
                        | bound,
                    )
                else:
                    booking.update("cards", card[0], set=bound)
                cards[p.card] = (card[0] if card else 0, "active", member_id)
            out.cards[p.card] = member_id
        if p.member and named is None:
            out.members[p.member] = member_id
        receipt = posting.Receipt(
            outlet_id, p.external_id, p.occurred_at, p.items, member_id=member_id, channel=channel
        )
        purchases.append(posting.BatchPurchase(p.line, receipt, p.occurred_at))
    # History is not news to other systems: an import writes no events (a CRM would get years of
    # purchases as webhooks); tills' postings do.
    postings = await posting.book_batch(unit, booking, purchases, new_members=new_members, events=False)
    await unit.apply(booking)
    out.imported = len(postings)
    out.points = sum(x.points for x in postings)
    return out


async def _post_batch(
    db: Database, ctx: _Context, batch: list[Purchase], report: ImportReport, channel: str
) -> None:
    try:
        done = await run(db, partial(_batch_unit, ctx, batch, channel))
    except posting.Rejected as rejected:
        raise _Rejected(RowError(rejected.line, rejected.reason)) from None
    except Duplicate as duplicate:  # a till booked one of these receipts (or cards) at the same moment
        raise _Rejected(
            RowError(batch[0].line, f"booked concurrently ({duplicate.table}); run the same file again")
        ) from None
    except (LoyaltyError, InvalidCardNumber) as exc:
        raise _Rejected(RowError(batch[0].line, str(exc))) from None
    ctx.members.update(done.members)
    ctx.cards.update(done.cards)
    report.imported += done.imported
    report.skipped += done.skipped
    report.points += done.points


class _Rejected(Exception):
    def __init__(self, error: RowError) -> None:
        self.error = error


async def import_purchases(
    db: Database,
    tenant_id: int,
    rows: Iterable[Parsed],
    *,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[ImportReport], None] | None = None,
    channel: str = CHANNEL,
) -> ImportReport:
    """Post ``rows`` in batches of ``batch_size`` purchases; see the module docstring for the rules."""
    ctx = await _context(db, tenant_id)
    report = ImportReport()
    started = time.perf_counter()
    batch: list[Purchase] = []
    errors: list[RowError] = []
    first_line = 0
    analyzed = 0

    async def flush(last_line: int) -> None:
        nonlocal batch, errors, first_line, analyzed
        count = len(batch) + len(errors)
        report.purchases += count
        if errors:
            _reject(report, RejectedBatch(first_line, last_line, count, tuple(errors)))
        elif batch:
            try:
                await _post_batch(db, ctx, batch, report, channel)
            except _Rejected as rejected:
                _reject(report, RejectedBatch(first_line, last_line, count, (rejected.error,)))
            if db.is_postgresql and report.imported > 2 * analyzed:
                # The tables grow fast under an import: PostgreSQL plans each statement once per
                # connection, and a plan made when they were small reads a whole tenant's window for
                # every member (345 purchases/s at 100,000 rows instead of ~3,000/s).
                await analyze(db)
                analyzed = report.imported
        batch, errors, first_line = [], [], 0
        report.elapsed_seconds = time.perf_counter() - started
        if progress is not None:
            progress(report)

    last_line = 0
    for row in rows:
        if not first_line:
            first_line = row.line
        last_line = row.line
        if isinstance(row, RowError):
            errors.append(row)
        else:
            batch.append(row)
        if len(batch) + len(errors) >= batch_size:
            await flush(last_line)
    if batch or errors:
        await flush(last_line)
    report.elapsed_seconds = time.perf_counter() - started
    return report


#: The tables an import fills and reads back.
ANALYZED_TABLES = ("transactions", "transaction_items", "point_lots", "ledger_entries", "members", "cards")


async def analyze(db: Database) -> None:
    """Fresh planner statistics of the tables an import fills (PostgreSQL; a new plan follows)."""
    async with db.write() as s:
        await s.execute(sql(f"ANALYZE {', '.join(ANALYZED_TABLES)}"))


def _reject(report: ImportReport, batch: RejectedBatch) -> None:
    report.rejected += batch.purchases
    report.rejected_batch_count += 1
    if len(report.rejected_batches) < MAX_REPORTED_BATCHES:
        report.rejected_batches.append(batch)
