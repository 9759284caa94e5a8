"""The ledger writer: the only code that writes ledger entries, lots and lot draws, or changes a
member's balance columns. Everything else asks it, through a :class:`Booking` applied in a unit of
work (:func:`run`), or through the jobs' set-based sweeps (:mod:`loyalty.ledger.sweeps`).

Owns: the bookings (:mod:`.book`), the unit of work that writes them (:mod:`.store`), the reads of
balances and lots (:mod:`.reads`), the jobs' sweeps (:mod:`.sweeps`) and the crash points of the
chaos tests (:mod:`.faults`). Imports :mod:`loyalty.storage`, :mod:`loyalty.programs` (a sweep reads
the program in force) and :mod:`rules` only; the points services and the jobs sit on top of it, and
``loyalty audit`` (:mod:`loyalty.ops.audit`) checks its guarantees from outside.

Guarantees (checked by ``loyalty audit``, by the model-checked state machine in the tests, and where
the database can hold them, by constraints):

1. **Double entry.** Every change of a balance is a ledger entry naming its cause (``earn``,
   ``release``, ``refund``, ``redemption``, ``redemption_cancel``, ``expiry``, ``adjustment``) and
   the row it refers to. The entries of one cause, reference and member sum to zero: a member-side
   account (``member_available``, ``member_pending``, ``member_debt``) always moves against a
   program-side one (``program_issued``, ``program_redeemed``, ``program_expired``,
   ``program_adjusted``). A set that does not balance is refused before anything is written.
2. **Projections equal their entries.** A member's ``available``, ``pending`` and ``debt`` columns are
   changed only together with the entries that explain them, in the same write: each equals the sum
   of its account's entries (``debt`` is the negated ``member_debt`` balance).
3. **Lots explain the balances.** ``available`` equals the remaining points of the member's
   available lots, ``pending`` those of their pending lots. A lot's ``remaining`` is its ``earned``
   points less its ``expired`` points less its draws; an expired lot holds nothing.
4. **Nearest expiry first.** Spending draws from the available lots that expire first (never-expiring
   ones last, older lots first among equals) and records each draw; cancelling a redemption gives
   the points back to those very lots. Expiry takes only what a lot still holds, so spent points are
   never expired again and a balance never collapses.
5. **Nothing below zero, debt first.** No balance, lot or counter goes below zero. A refund of points
   already spent becomes debt, and any points the member receives later pay that debt first: after
   every operation a member either owes nothing or holds no available points.
6. **Append-only.** Entries and draws are only ever inserted; a correction is a new entry. The
   database refuses an UPDATE or DELETE of either (triggers, migration 0004).
7. **One operation, one write.** An operation's rows are written together: one statement on
   PostgreSQL, one transaction on SQLite. Its idempotency record, when a till sent a key, is part of
   that write, so an answer exists exactly when the write happened.
8. **No lost updates.** A write happens only if every member it changes is still as it was read (the
   member row's ``revision``, or its row lock): two operations on one member never interleave.
9. **Bounded.** No member holds more than ``MAX_BALANCE`` points (a booking beyond it is refused),
   so no balance or sum of balances can overflow its 64-bit column.
"""

from loyalty.ledger.book import (
    ACCOUNT_OF_STATE,
    ADJUSTED,
    AVAILABLE,
    DEBT,
    EXPIRED,
    ISSUED,
    MAX_BALANCE,
    MEMBER_ACCOUNTS,
    PENDING,
    PROGRAM_ACCOUNTS,
    REDEEMED,
    BalanceLimit,
    Booking,
    BookingError,
    Holder,
    Lot,
    nearest_expiry_first,
)
from loyalty.ledger.store import Duplicate, Stale, Unit, run

__all__ = [
    "ACCOUNT_OF_STATE",
    "ADJUSTED",
    "AVAILABLE",
    "DEBT",
    "EXPIRED",
    "ISSUED",
    "MAX_BALANCE",
    "MEMBER_ACCOUNTS",
    "PENDING",
    "PROGRAM_ACCOUNTS",
    "REDEEMED",
    "BalanceLimit",
    "Booking",
    "BookingError",
    "Duplicate",
    "Holder",
    "Lot",
    "Stale",
    "Unit",
    "nearest_expiry_first",
    "run",
]
