"""What ledger operations read before they book: the member (locked, or with its revision) and lots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from loyalty.errors import Conflict, NotFound
from loyalty.ledger.book import Holder, Lot
from loyalty.ledger.store import Unit

_MEMBER = (
    "SELECT id, tier, available, pending, debt, visits, last_visit_at, enrolled_at, tags, revision,"
    " state, merged_into FROM members WHERE tenant_id = $1 AND id = $2 FOR UPDATE"
)
_LOTS = (
    "SELECT id, member_id, state, remaining, expired, expires_at FROM point_lots"
    " WHERE tenant_id = $1 AND member_id = $2 AND state = 'available' AND remaining > 0"
)


@dataclass(slots=True)
class MemberRow:
    """A member read by a ledger operation: the holder of their balances and the rest of the row."""

    holder: Holder
    tier: str | None
    visits: int
    last_visit_at: datetime | None
    enrolled_at: datetime
    tags: tuple[str, ...]


#: The rows whose owner an operation looks up first: table -> how an error names a row of it.
_OWNED = {"transactions": "transaction", "redemptions": "redemption"}


async def owner(unit: Unit, table: str, tenant_id: int, row_id: int) -> int:
    """The member a purchase or a redemption of this tenant belongs to (NotFound for another's): an
    operation on it reads that member first, so its lock or revision guards what follows."""
    member_id = await unit.fetchval(
        f"SELECT member_id FROM {table} WHERE tenant_id = $1 AND id = $2", tenant_id, row_id
    )
    if member_id is None:
        raise NotFound(f"{_OWNED[table]} {row_id} not found")
    return int(member_id)


class Closed(Conflict):
    """The member was erased or merged into another: nothing new is booked for them (a refund of an
    erased member's purchase still is: it reads the member with ``closed=True``)."""

    def __init__(self, member_id: int, state: str, merged_into: int | None) -> None:
        super().__init__(
            f"member {member_id} was merged into member {merged_into}"
            if state == "merged"
            else f"member {member_id} was {state}"
        )
        self.merged_into = merged_into


async def member(unit: Unit, tenant_id: int, member_id: int, *, closed: bool = False) -> MemberRow:
    """The member's row, locked when the unit locks (otherwise its revision guards the write); an
    erased or merged member raises :class:`Closed` unless ``closed``."""
    row = await unit.fetchrow(_MEMBER, tenant_id, member_id)
    if row is None:
        raise NotFound(f"member {member_id} not found")
    if row[10] != "active" and not closed:
        raise Closed(member_id, row[10], row[11])
    holder = Holder(row[0], row[2], row[3], row[4], None if unit.locked else row[9])
    return MemberRow(
        holder,
        row[1],
        row[5],
        unit.instant(row[6]),
        unit.instant(row[7]) or datetime.min,
        tuple(unit.json(row[8]) or ()),
    )


async def owner_member(
    unit: Unit, table: str, tenant_id: int, row_id: int, *, closed: bool = False
) -> MemberRow:
    """The member a purchase or a redemption belongs to, read (and locked) as :func:`member` does. A
    merge may move the row to another member while this waits for the first member's lock: then the
    member that holds it now is read instead."""
    holder = await owner(unit, table, tenant_id, row_id)
    row = await member(unit, tenant_id, holder, closed=True)
    moved = await owner(unit, table, tenant_id, row_id)
    if moved != holder:
        row = await member(unit, tenant_id, moved, closed=True)
    if not closed:
        await member(unit, tenant_id, row.holder.id)  # raises Closed for an erased or merged member
    return row


async def available_lots(unit: Unit, tenant_id: int, member_id: int) -> list[Lot]:
    """The member's lots with points to spend (draws take them nearest expiry first)."""
    rows = await unit.fetch(_LOTS, tenant_id, member_id)
    return [Lot(r[0], r[1], r[2], r[3], r[4], unit.instant(r[5])) for r in rows]
