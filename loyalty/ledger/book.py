"""A booking: everything one ledger operation writes, built in memory and checked before it is written.

An operation (a posting, a refund, a redemption, ...) loads what it needs, then describes its effect
on a :class:`Booking`: balanced sets of moves with their cause, lots issued, lots drawn nearest expiry
first, draws restored, the rows of its cause (the transaction, the refund, ...). The booking refuses
anything that would break a guarantee of the ledger (see :mod:`loyalty.ledger`) at the moment it is
described, so a bug fails loudly before a row is written. :func:`loyalty.ledger.store.apply` then
writes the whole booking at once: on PostgreSQL as one statement.

Balances only ever change through :meth:`Booking.move`: the change of a member's ``available``,
``pending`` and ``debt`` columns is the sum of the member-side moves, so the projection cannot drift
from the entries. Lots only change through :meth:`issue_lot`, :meth:`draw`, :meth:`take`,
:meth:`restore`, :meth:`reverse_expired` and :meth:`hand_over_lots` (a merge: lots change
owner), each of which books the matching moves itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loyalty.errors import InvalidInput

AVAILABLE = "member_available"
PENDING = "member_pending"
DEBT = "member_debt"
ISSUED = "program_issued"
REDEEMED = "program_redeemed"
EXPIRED = "program_expired"
ADJUSTED = "program_adjusted"

MEMBER_ACCOUNTS = (AVAILABLE, PENDING, DEBT)
PROGRAM_ACCOUNTS = (ISSUED, REDEEMED, EXPIRED, ADJUSTED)
ACCOUNT_OF_STATE = {"pending": PENDING, "available": AVAILABLE}


#: Most points (available and pending) one member may hold. A booking beyond it is refused, so the
#: balance columns (64-bit) can never overflow, nor can a tenant's sum of them (a million members at
#: the bound stay below 2**63): SQLite would otherwise turn an overflowing integer into a REAL.
MAX_BALANCE = 10**12


class BalanceLimit(InvalidInput):
    """A booking would take a member beyond MAX_BALANCE (a client's error: a 422, nothing written)."""


class BookingError(RuntimeError):
    """A booking would break a ledger guarantee: a bug in the operation, never the client's fault."""


@dataclass(slots=True)
class Holder:
    """A member's balance as the operation read it; the booking keeps it current as moves are added.

    ``revision`` is the member row's revision when it was read without a lock: the write then only
    happens if nobody changed the member in between (None: the row is locked, or the check is off).
    """

    id: int
    available: int
    pending: int
    debt: int
    revision: int | None = None


@dataclass(slots=True)
class Lot:
    """A lot as the operation sees it: loaded with its member's lots, or issued by this booking."""

    id: int
    member_id: int
    state: str
    remaining: int
    expired: int
    expires_at: datetime | None
    new: bool = False


@dataclass(slots=True)
class _MemberChange:
    holder: Holder
    available: int = 0
    pending: int = 0
    debt: int = 0
    visits: int = 0
    last_visit_at: datetime | None = None
    tier: str | None = None
    tier_since: datetime | None = None


@dataclass(slots=True)
class _Update:
    """Changes of one existing row: ``set`` replaces columns, ``add`` adds to integer columns."""

    set: dict[str, Any] = field(default_factory=dict)
    add: dict[str, int] = field(default_factory=dict)
    #: The member that owns the row when the booking is written: the write names it, so that on a
    #: database distributed by member it goes to that member's shard (docs/scaling.md).
    member_id: int | None = None


def nearest_expiry_first(lots: Iterable[Lot]) -> list[Lot]:
    """The order points are spent in: earliest expiry first, never-expiring last, older lots first."""
    return sorted(lots, key=lambda lot: (lot.expires_at is None, lot.expires_at or 0, lot.id))


class Booking:
    """The rows and changes of one ledger operation (or one batch of postings), not yet written."""

    def __init__(self, tenant_id: int, at: datetime) -> None:
        self.tenant_id = tenant_id
        #: When the entries and draws are recorded (the posting clock).
        self.at = at
        self.inserts: dict[str, list[dict[str, Any]]] = {}
        self.members: dict[int, _MemberChange] = {}
        self.lot_changes: dict[int, _Update] = {}
        self.updates: dict[str, dict[int, _Update]] = {}
        #: table -> conflict key -> row; ``replace`` columns are overwritten, ``add`` ones summed.
        self.upserts: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
        self._new_lots: dict[int, dict[str, Any]] = {}
        self._new_members: dict[int, dict[str, Any]] = {}
        #: Every lot this booking touched, by id: a lot read twice (say, a refund's own lot, then again
        #: among the member's lots) is one lot, whatever objects the operation holds.
        self._lots: dict[int, Lot] = {}
        #: lot id -> the member owning it in the database (a merge's hand-over changes it afterwards).
        self._lot_owners: dict[int, int] = {}
        #: (table, from member, to member): rows of ``table`` that change owner (a merge), written
        #: after the rest, set-based; only a locked unit writes them (see ``store``).
        self.reassigned: list[tuple[str, int, int]] = []
        #: member id -> (closed at, merged into): members closed by this booking (a merge's source).
        self.closed: dict[int, tuple[datetime, int]] = {}

    # --- balances ------------------------------------------------------------------------------

    def _member(self, holder: Holder) -> _MemberChange:
        change = self.members.get(holder.id)
        if change is None:
            change = self.members[holder.id] = _MemberChange(holder)
        elif change.holder is not holder:
            raise BookingError(f"member {holder.id} is held twice in one booking")
        return change

    def new_member(self, member_id: int, *, enrolled_at: datetime, tags: Sequence[str] = ()) -> Holder:
        """A member created by this booking (an import meeting a new card); starts with nothing."""
        self._new_members[member_id] = row = {
            "id": member_id,
            "tenant_id": self.tenant_id,
            "tier": None,
            "tier_since": None,
            "available": 0,
            "pending": 0,
            "debt": 0,
            "visits": 0,
            "last_visit_at": None,
            "enrolled_at": enrolled_at,
            "tags": list(tags),
            "revision": 0,
        }
        self.inserts.setdefault("members", []).append(row)
        return Holder(member_id, 0, 0, 0)

    def fold_new_members(self) -> None:
        """Write the changes of members created by this booking into their new rows (a row cannot be
        inserted and updated by one statement); called once, when the booking is applied."""
        for member_id, row in self._new_members.items():
            change = self.members.pop(member_id, None)
            if change is None:
                continue
            row["available"] += change.available
            row["pending"] += change.pending
            row["debt"] += change.debt
            row["visits"] += change.visits
            row["last_visit_at"] = change.last_visit_at
            if change.tier is not None:
                row["tier"], row["tier_since"] = change.tier, change.tier_since
        self._new_members.clear()

    def touch(self, holder: Holder) -> None:
        """Mark the member as changed (their revision moves on) without moving points."""
        self._member(holder)

    def move(self, holder: Holder, cause: str, ref_id: int, moves: Mapping[str, int]) -> None:
        """Book one balanced set of moves of ``holder`` for ``cause`` ``ref_id`` (zero moves left out).

        Refused: a set that does not sum to zero, an unknown account, a member balance going below zero.
        """
        if sum(moves.values()) != 0:
            raise BookingError(f"unbalanced moves for {cause} {ref_id}: {dict(moves)}")
        unknown = set(moves) - set(MEMBER_ACCOUNTS) - set(PROGRAM_ACCOUNTS)
        if unknown:
            raise BookingError(f"unknown accounts {sorted(unknown)}")
        change = self._member(holder)
        available, pending, debt = moves.get(AVAILABLE, 0), moves.get(PENDING, 0), -moves.get(DEBT, 0)
        if holder.available + available < 0 or holder.pending + pending < 0 or holder.debt + debt < 0:
            raise BookingError(f"member {holder.id}: a balance would go below zero ({dict(moves)})")
        holder.available += available
        holder.pending += pending
        holder.debt += debt
        change.available += available
        change.pending += pending
        change.debt += debt
        rows = self.inserts.setdefault("ledger_entries", [])
        for account, amount in moves.items():
            if amount:
                rows.append(
                    {
                        "tenant_id": self.tenant_id,
                        "member_id": holder.id,
                        "account": account,
                        "amount": amount,
                        "cause": cause,
                        "ref_id": ref_id,
                        "created_at": self.at,
                    }
                )

    def visit(
        self, holder: Holder, at: datetime, *, tier: str | None = None, tier_since: datetime | None = None
    ) -> None:
        """A purchase: one more visit, the last visit moved forward, and a tier change if any."""
        change = self._member(holder)
        change.visits += 1
        if change.last_visit_at is None or at > change.last_visit_at:
            change.last_visit_at = at
        if tier is not None:
            change.tier, change.tier_since = tier, tier_since

    def absorb(
        self,
        holder: Holder,
        *,
        visits: int,
        last_visit_at: datetime | None,
        tier: str | None = None,
        tier_since: datetime | None = None,
    ) -> None:
        """Another account's visits added to the member's, its last visit if later, and a tier if one
        is given (a merge: one person's visits counted once on the account that stays)."""
        if visits < 0:
            raise BookingError(f"member {holder.id}: cannot absorb {visits} visits")
        change = self._member(holder)
        change.visits += visits
        if last_visit_at is not None and (
            change.last_visit_at is None or last_visit_at > change.last_visit_at
        ):
            change.last_visit_at = last_visit_at
        if tier is not None:
            change.tier, change.tier_since = tier, tier_since

    # --- one account into another (a merge) ------------------------------------------------------

    def hand_over_lots(
        self,
        source: Holder,
        target: Holder,
        lots: Sequence[Lot],
        *,
        cause: str,
        source_ref: int,
        target_ref: int,
    ) -> int:
        """Every lot of ``source`` becomes ``target``'s, as it is: the same lot, purchase, pending and
        expiry dates, and its draws stay its history (lots are not append-only, entries and draws
        are). ``lots`` are the source's open lots (pending or available with points left); they must
        hold all of its points, or the lots would no longer explain the balances. The balances move
        by one balanced set per member under ``cause`` (source ``source_ref``, target ``target_ref``)
        against ``program_adjusted``: the source's entries sum to nothing afterwards, the target's
        explain the points it now holds. Returns the points moved.

        The owner change itself is written set-based for all of the source's lots (spent and expired
        ones too, so that a later refund of the source's purchase finds its own lot on the target).
        """
        if source.id == target.id:
            raise BookingError(f"member {source.id} cannot hand over to itself")
        mine = [self._one(lot) for lot in lots if lot.member_id == source.id]
        available = sum(lot.remaining for lot in mine if lot.state == "available")
        pending = sum(lot.remaining for lot in mine if lot.state == "pending")
        if (available, pending) != (source.available, source.pending):
            raise BookingError(
                f"member {source.id}: lots hold {available} available and {pending} pending,"
                f" the balances {source.available} and {source.pending}"
            )
        if target.available + target.pending + available + pending > MAX_BALANCE:
            raise BalanceLimit(
                f"member {target.id} would hold more than {MAX_BALANCE} points; nothing was booked"
            )
        moved = available + pending
        self.move(source, cause, source_ref, {AVAILABLE: -available, PENDING: -pending, ADJUSTED: moved})
        self.move(target, cause, target_ref, {AVAILABLE: available, PENDING: pending, ADJUSTED: -moved})
        for lot in mine:
            lot.member_id = target.id
        self.reassigned.append(("point_lots", source.id, target.id))
        return moved

    def hand_over_debt(
        self, source: Holder, target: Holder, *, cause: str, source_ref: int, target_ref: int
    ) -> int:
        """What ``source`` owes becomes ``target``'s debt (paid first from the target's points by a
        :meth:`settle_debt` that follows); returns the debt moved."""
        debt = source.debt
        if debt <= 0:
            return 0
        self.move(source, cause, source_ref, {DEBT: debt, ADJUSTED: -debt})
        self.move(target, cause, target_ref, {DEBT: -debt, ADJUSTED: debt})
        return debt

    def close(self, holder: Holder, *, at: datetime, merged_into: int) -> None:
        """The member is merged into ``merged_into`` and closed: it must hold nothing by then."""
        self._member(holder)  # its revision moves on: an operation that read it before is stale
        if holder.available or holder.pending or holder.debt:
            raise BookingError(f"member {holder.id} still holds points or debt: it cannot be closed")
        self.closed[holder.id] = (at, merged_into)

    def reassign(self, table: str, source_id: int, target_id: int) -> None:
        """Every row of ``table`` owned by member ``source_id`` becomes ``target_id``'s (set-based,
        after the rest of the booking). Entries, draws and lots never change owner this way: entries
        and draws are append-only, lots move with :meth:`hand_over_lots`."""
        if table in ("ledger_entries", "point_lots", "lot_draws", "members"):
            raise BookingError(f"{table} rows do not change owner through reassign")
        if source_id == target_id:
            raise BookingError(f"member {source_id} cannot hand over to itself")
        self.reassigned.append((table, source_id, target_id))

    # --- lots ----------------------------------------------------------------------------------

    def issue_lot(
        self,
        holder: Holder,
        lot_id: int,
        points: int,
        *,
        state: str,
        counter: str,
        cause: str,
        ref_id: int,
        pending_until: datetime,
        expires_at: datetime | None,
        transaction_id: int | None = None,
        adjustment_id: int | None = None,
    ) -> Lot:
        """A new lot of ``points`` in ``state``, booked against the program account ``counter``."""
        if points <= 0:
            raise BookingError(f"a lot holds a positive number of points, not {points}")
        if holder.available + holder.pending + points > MAX_BALANCE:
            raise BalanceLimit(
                f"member {holder.id} would hold more than {MAX_BALANCE} points; nothing was booked"
            )
        if (transaction_id is None) == (adjustment_id is None):
            raise BookingError("a lot comes from exactly one transaction or adjustment")
        self.move(holder, cause, ref_id, {ACCOUNT_OF_STATE[state]: points, counter: -points})
        self._new_lots[lot_id] = row = {
            "id": lot_id,
            "tenant_id": self.tenant_id,
            "member_id": holder.id,
            "transaction_id": transaction_id,
            "adjustment_id": adjustment_id,
            "state": state,
            "earned": points,
            "remaining": points,
            "expired": 0,
            "created_at": self.at,
            "pending_until": pending_until,
            "expires_at": expires_at,
        }
        self.inserts.setdefault("point_lots", []).append(row)
        return self._one(Lot(lot_id, holder.id, state, points, 0, expires_at, new=True))

    def _one(self, lot: Lot) -> Lot:
        """The booking's own copy of a lot (the first object it saw with that id)."""
        self._lot_owners.setdefault(lot.id, lot.member_id)
        return self._lots.setdefault(lot.id, lot)

    def _lot_delta(self, lot: Lot, remaining: int = 0, expired: int = 0) -> None:
        lot.remaining += remaining
        lot.expired += expired
        if lot.remaining < 0 or lot.expired < 0:
            raise BookingError(f"lot {lot.id} would go below zero")
        if lot.new:
            row = self._new_lots[lot.id]
            row["remaining"] += remaining
            row["expired"] += expired
            return
        change = self.lot_changes.setdefault(
            lot.id, _Update(add={"remaining": 0, "expired": 0}, member_id=self._lot_owners[lot.id])
        )
        change.add["remaining"] += remaining
        change.add["expired"] += expired

    def _record_draw(self, holder: Holder, lot: Lot, amount: int, cause: str, ref_id: int) -> None:
        self.inserts.setdefault("lot_draws", []).append(
            {
                "tenant_id": self.tenant_id,
                "member_id": holder.id,
                "lot_id": lot.id,
                "amount": amount,
                "cause": cause,
                "ref_id": ref_id,
                "created_at": self.at,
            }
        )

    def draw(
        self,
        holder: Holder,
        lots: Sequence[Lot],
        amount: int,
        *,
        counter: str,
        cause: str,
        ref_id: int,
        draw_cause: str | None = None,
    ) -> list[tuple[int, int]]:
        """Spend ``amount`` available points, nearest expiry first; returns (lot id, points) drawn.

        ``lots`` are the member's lots as loaded (others are ignored); the moves are
        ``available -> counter`` under ``cause``; the draws are recorded under ``draw_cause``
        (default ``cause``: a debt payment's draws say ``debt_payment``).
        """
        if amount <= 0:
            return []
        draws: list[tuple[int, int]] = []
        left = amount
        candidates = {x.id: self._one(x) for x in lots if x.member_id == holder.id}
        for lot in nearest_expiry_first(
            x for x in candidates.values() if x.state == "available" and x.remaining > 0
        ):
            take = min(left, lot.remaining)
            self._lot_delta(lot, remaining=-take)
            self._record_draw(holder, lot, take, draw_cause or cause, ref_id)
            draws.append((lot.id, take))
            left -= take
            if left == 0:
                break
        if left:
            raise BookingError(f"member {holder.id}: available lots hold {amount - left} < {amount}")
        self.move(holder, cause, ref_id, {AVAILABLE: -amount, counter: amount})
        return draws

    def take(self, holder: Holder, lot: Lot, amount: int, *, counter: str, cause: str, ref_id: int) -> None:
        """Take ``amount`` from one given lot (a refund's own purchase lot, pending or available)."""
        if amount <= 0:
            return
        lot = self._one(lot)
        if lot.state not in ACCOUNT_OF_STATE:
            raise BookingError(f"lot {lot.id} is {lot.state}: nothing to take")
        self._lot_delta(lot, remaining=-amount)
        self._record_draw(holder, lot, amount, cause, ref_id)
        self.move(holder, cause, ref_id, {ACCOUNT_OF_STATE[lot.state]: -amount, counter: amount})

    def reverse_expired(self, holder: Holder, lot: Lot, amount: int, *, cause: str, ref_id: int) -> None:
        """Take back points of a lot that expired unspent: they leave the expired account, not the
        member (they were never spent), and the lot records the draw."""
        if amount <= 0:
            return
        lot = self._one(lot)
        self._lot_delta(lot, expired=-amount)
        self._record_draw(holder, lot, amount, cause, ref_id)
        self.move(holder, cause, ref_id, {EXPIRED: -amount, ISSUED: amount})

    def restore(
        self,
        holder: Holder,
        draws: Sequence[tuple[Lot, int]],
        *,
        counter: str,
        cause: str,
        ref_id: int,
    ) -> int:
        """Give drawn points back to the very lots they came from (negative draws); returns the sum."""
        total = 0
        for given, amount in draws:
            lot = self._one(given)
            if lot.state != "available":
                raise BookingError(f"lot {lot.id} is {lot.state}: points cannot go back to it")
            self._lot_delta(lot, remaining=amount)
            self._record_draw(holder, lot, -amount, cause, ref_id)
            total += amount
        if total:
            self.move(holder, cause, ref_id, {AVAILABLE: total, counter: -total})
        return total

    def settle_debt(self, holder: Holder, lots: Sequence[Lot], *, cause: str, ref_id: int) -> int:
        """Pay the member's debt from available points (debt is paid first); returns what was paid."""
        pay = min(holder.debt, holder.available)
        if pay <= 0:
            return 0
        self.draw(holder, lots, pay, counter=DEBT, cause=cause, ref_id=ref_id, draw_cause="debt_payment")
        return pay

    # --- the operation's own rows ---------------------------------------------------------------

    def insert(self, table: str, row: dict[str, Any]) -> None:
        """A row of the operation's cause (a transaction, its items, a refund, a voucher, ...)."""
        if table in ("ledger_entries", "point_lots", "lot_draws", "members"):
            raise BookingError(f"{table} rows are written by the booking's own operations")
        self.inserts.setdefault(table, []).append(row)

    def update(
        self,
        table: str,
        row_id: int,
        *,
        set: Mapping[str, Any] = {},
        add: Mapping[str, int] = {},
        member_id: int | None = None,
    ) -> None:
        """Change an existing row of ``table`` (merged with earlier changes of the same row); a
        member-owned row names its ``member_id``, which the write then carries."""
        if table in ("ledger_entries", "point_lots", "lot_draws", "members"):
            raise BookingError(f"{table} rows change only through the booking's own operations")
        change = self.updates.setdefault(table, {}).setdefault(row_id, _Update(member_id=member_id))
        if change.member_id != member_id:
            raise BookingError(f"{table} {row_id} is changed for two members in one booking")
        change.set.update(set)
        for column, amount in add.items():
            change.add[column] = change.add.get(column, 0) + amount

    def upsert(self, table: str, key: tuple[Any, ...], row: dict[str, Any]) -> None:
        """Insert a row or, if its key exists, change it (see ``store.UPSERTS`` for what changes)."""
        known = self.upserts.setdefault(table, {})
        if key in known:
            raise BookingError(f"{table} {key} is upserted twice in one booking")
        known[key] = row

    # --- checks --------------------------------------------------------------------------------

    def entry_sets(self) -> dict[tuple[str, int, int], int]:
        """Sum per (cause, ref id, member) of the entries booked: zero for every set by construction."""
        sums: dict[tuple[str, int, int], int] = {}
        for e in self.inserts.get("ledger_entries", ()):
            key = (e["cause"], e["ref_id"], e["member_id"])
            sums[key] = sums.get(key, 0) + e["amount"]
        return sums

    def __bool__(self) -> bool:
        return bool(
            self.inserts
            or self.members
            or self.lot_changes
            or self.updates
            or self.upserts
            or self.reassigned
            or self.closed
        )


def merged(bookings: Sequence[Booking]) -> Booking | None:
    """One booking holding several (of one tenant, on distinct members), to be written as one
    statement; None when they do not combine (their rows or changes differ in shape)."""
    first = bookings[0]
    out = Booking(first.tenant_id, first.at)
    for b in bookings:
        if b.tenant_id != first.tenant_id or b._new_members or out.members.keys() & b.members.keys():
            return None
        if b.reassigned or b.closed:  # written after the rest, by a locked unit only
            return None
        for table, rows in b.inserts.items():
            if not rows:
                continue
            into = out.inserts.setdefault(table, [])
            if into and into[0].keys() != rows[0].keys():
                return None
            into.extend(rows)
        out.members.update(b.members)
        if out.lot_changes.keys() & b.lot_changes.keys():
            return None
        out.lot_changes.update(b.lot_changes)
        for table, changes in b.updates.items():
            into_updates = out.updates.setdefault(table, {})
            if into_updates.keys() & changes.keys():
                return None
            into_updates.update(changes)
        for table, by_key in b.upserts.items():
            into_upserts = out.upserts.setdefault(table, {})
            if into_upserts.keys() & by_key.keys():
                return None
            into_upserts.update(by_key)
    return out
