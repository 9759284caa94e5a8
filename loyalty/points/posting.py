"""Posting purchases: one from a till, or a batch from an import, each as four named steps.

    load the member's context  ->  evaluate (pure: the rules engine)  ->  write (one booking)  ->  answer

A till post (:func:`post`) runs as one optimistic unit of work (:mod:`loyalty.ledger.store`): on
PostgreSQL one statement reads everything the evaluation needs (card, member, program version,
stamps, rule uses, the tier window's figure, an earlier booking of the receipt, the idempotency
record, fresh ids), and one statement writes the whole booking together with the stored answer, only
if the member is still as it was read. On SQLite both run on the writer thread in one transaction.

A batch (:func:`post_batch`) loads the context of all its members at once, replays its purchases in
order in memory, one member state after the other, and writes one booking for the whole batch:
all or nothing.

What is recorded with every purchase: its items with the points of each line, the program version,
and the evaluation with its explanation and its inputs (the member as the engine saw them), so that
``loyalty audit`` can recompute every purchase exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from cachetools import TTLCache

import rules
from loyalty.admin.access import Answer, answered_meanwhile, apply_answered, clear_dead
from loyalty.calendar import expiry_for, local_day, window_start
from loyalty.cards.numbers import parse_card_number
from loyalty.errors import Conflict, InvalidInput, NotAllowed, NotFound
from loyalty.ledger import ISSUED, Booking, Holder, Lot, reads
from loyalty.ledger.reads import MemberRow
from loyalty.ledger.store import Duplicate, Stale, Unit, run
from loyalty.members import membership
from loyalty.members.membership import CardRef, MemberView
from loyalty.programs import tiers, versions
from loyalty.storage import outbox
from loyalty.storage.db import Database

#: How far ahead of the server's clock a till's occurred_at may be (clocks drift; a receipt from
#: the future would count as a visit that has not happened, and win-back rules would fire on it).
MAX_CLOCK_SKEW = timedelta(seconds=int(os.environ.get("LOYALTY_MAX_CLOCK_SKEW_SECONDS", "300")))
#: Longest external id a till may send (the column's size).
MAX_EXTERNAL_ID = 100


# --- values ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """A purchase to book, as a till sends it or an import row reads: the member is named by exactly
    one of ``member_id``, ``card_id`` (from a verified token) and ``card_number``."""

    outlet_id: int
    external_id: str
    occurred_at: datetime
    items: tuple[rules.Item, ...]
    member_id: int | None = None
    card_id: int | None = None
    card_number: str | None = None
    channel: str = "till"

    def validate(self) -> None:
        """Bounds a receipt must keep before anything is read (InvalidInput otherwise)."""
        if not self.external_id or len(self.external_id) > MAX_EXTERNAL_ID:
            raise InvalidInput(f"external_id must be 1 to {MAX_EXTERNAL_ID} characters")
        if self.occurred_at.tzinfo is None or self.occurred_at.utcoffset() is None:
            raise InvalidInput("occurred_at must carry a time zone")
        for i, item in enumerate(self.items):
            if item.quantity <= 0:
                raise InvalidInput(f"item {i}: quantity must be 1 to {rules.engine.MAX_QUANTITY}")
        try:
            rules.engine.check_basket(self.items)
        except rules.EvaluationError as exc:
            raise InvalidInput(str(exc)) from None
        if sum(x is not None for x in (self.member_id, self.card_id, self.card_number)) != 1:
            raise InvalidInput("give exactly one of member_id, card_number and card_id")


@dataclass(frozen=True, slots=True)
class Posting:
    """What a till gets back after posting (or re-posting) a purchase."""

    transaction_id: int
    member_id: int
    outlet_id: int
    external_id: str
    occurred_at: datetime
    program_version_id: int
    amount: int
    points: int
    #: Until when the points stay pending (the return window); equal to occurred_at when none.
    pending_until: datetime
    expires_at: datetime | None
    voucher_ids: tuple[int, ...]
    evaluation: dict[str, Any]
    #: True when this answer is the first posting of the same (outlet, external id), read back.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Posted:
    """A posting and the member's figures right after it."""

    posting: Posting
    member: MemberView


class AlreadyPosted(Conflict):
    """The receipt (outlet, external id) was booked before; ``transaction_id`` is the first posting."""

    def __init__(self, transaction_id: int) -> None:
        super().__init__(f"this receipt was booked before, as transaction {transaction_id}")
        self.transaction_id = transaction_id


class _BlankCard(Exception):
    def __init__(self, card_id: int) -> None:
        self.card_id = card_id


@dataclass(slots=True)
class MemberContext(MemberRow):
    """A member as a posting needs them: the ledger's row (balances through the holder) and the
    counters and history the rules read."""

    stamps: dict[str, int]
    uses: dict[str, int]
    #: (local day, rule) -> applications that day
    day_uses: dict[tuple[date, str], int]
    #: Batches only (a single posting reads the window's figure directly): (occurred_at, points, spend,
    #: visit) of the member's purchases that count for some postings of the batch but not all (at the
    #: window's moving edges, and the batch's own), and ``window_base``, the (points, spend, visits)
    #: of those that count for every posting of the batch.
    window: list[tuple[datetime, int, int, int]] | None = None
    window_base: tuple[int, int, int] = (0, 0, 0)
    qualifying: int = 0
    #: The member's available lots, loaded when they owe points (debt is paid from them first).
    lots: list[Lot] = field(default_factory=list)
    #: The segment the last segment run put them in (rules may read member.segment).
    segment: str = ""


# --- program versions and outlets (cached per process: both change rarely) --------------------------------


#: What rules see of an outlet (code, partner, tags) is read on every posting and changes rarely: it
#: is remembered per process, and an edit reaches postings within ``OUTLET_CACHE_SECONDS``.
OUTLET_CACHE_SECONDS = 60.0
_outlets: TTLCache[tuple[str, int, int], rules.Outlet] = TTLCache(maxsize=100_000, ttl=OUTLET_CACHE_SECONDS)
_outlets_lock = threading.Lock()

_OUTLET = (
    "SELECT o.code, p.code, o.tags FROM outlets o JOIN partners p ON p.id = o.partner_id"
    " WHERE o.tenant_id = $1 AND o.id = $2"
)


async def _outlet(unit: Unit, tenant_id: int, outlet_id: int) -> rules.Outlet:
    key = (unit.scope, tenant_id, outlet_id)
    with _outlets_lock:
        outlet = _outlets.get(key)
    if outlet is None:
        row = await unit.fetchrow(_OUTLET, tenant_id, outlet_id)
        if row is None:
            raise NotFound(f"outlet {outlet_id} not found")
        outlet = rules.Outlet(id=row[0], partner=row[1], tags=tuple(unit.json(row[2])))
        with _outlets_lock:
            _outlets[key] = outlet
    return outlet


# --- step 2: evaluate (pure) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Priced:
    """One purchase evaluated for a member as they were: the engine's result and what it saw."""

    receipt: Receipt
    version: versions.Published
    program: rules.CheckedProgram
    result: rules.Result
    evaluation: dict[str, Any]
    day: date
    limited: tuple[str, ...]

    @property
    def vouchers(self) -> int:
        return len(self.result.rewards_unlocked)


def evaluate(
    ctx: MemberContext,
    receipt: Receipt,
    *,
    version: versions.Published,
    program: rules.CheckedProgram,
    outlet: rules.Outlet,
    budgets: Mapping[str, int],
    explain: bool = True,
) -> Priced:
    """The rules engine on the receipt and the member as ``ctx`` holds them. What is stored is the
    result with its inputs (the member and outlet as the engine saw them): with the version, they
    recompute the result and its explanation exactly, so the explanation itself is not stored."""
    day = local_day(receipt.occurred_at, program.zone)
    limited = tuple(r.id for r in program.rules if r.limited)
    member = rules.Member(
        id=str(ctx.holder.id),
        tier=tiers.known_tier(program, ctx.tier),
        points=ctx.holder.available,
        visits=ctx.visits,
        last_visit_at=ctx.last_visit_at,
        enrolled_at=ctx.enrolled_at,
        tags=ctx.tags,
        stamps=dict(ctx.stamps),
        rule_uses={r: (ctx.uses.get(r, 0), ctx.day_uses.get((day, r), 0)) for r in limited},
        segment=ctx.segment,
        holdout=rules.holdout_of(program, str(ctx.holder.id)),
    )
    tx = rules.Transaction(time=receipt.occurred_at, items=receipt.items, channel=receipt.channel)
    result = rules.evaluate(
        program, tx, member, outlet, now=receipt.occurred_at, explain=explain, budgets=budgets
    )
    evaluation = result.as_dict(explanation=False)
    evaluation["inputs"] = _inputs(member, outlet, receipt.channel, budgets)
    if member.holdout:
        # A control member: what the held-out rules would have given is recorded (not booked), so a
        # campaign's lift compares members who got its effect with members who would have.
        treated = rules.evaluate(
            program, tx, dataclasses.replace(member, holdout=frozenset()), outlet,
            now=receipt.occurred_at, budgets=budgets,
        )  # fmt: skip
        withheld = {
            r.rule: str(r.points) for r in treated.rules if r.rule in member.holdout and r.applications
        }
        if withheld:
            evaluation["withheld"] = withheld
    return Priced(receipt, version, program, result, evaluation, day, limited)


def _inputs(
    member: rules.Member, outlet: rules.Outlet, channel: str, budgets: Mapping[str, int]
) -> dict[str, Any]:
    return {
        "member": {
            "tier": member.tier,
            "points": member.points,
            "visits": member.visits,
            "last_visit_at": member.last_visit_at.isoformat() if member.last_visit_at else None,
            "enrolled_at": member.enrolled_at.isoformat() if member.enrolled_at else None,
            "tags": list(member.tags),
            "stamps": dict(member.stamps),
            "rule_uses": {r: list(v) for r, v in member.rule_uses.items()},
            "segment": member.segment,
            "holdout": sorted(member.holdout),
        },
        "outlet": {"id": outlet.id, "partner": outlet.partner, "tags": list(outlet.tags)},
        "channel": channel,
        "budgets": dict(budgets),
    }


def explain_stored(
    program: rules.CheckedProgram,
    evaluation: Mapping[str, Any],
    occurred_at: datetime,
    items: Sequence[rules.Item],
) -> list[dict[str, Any]]:
    """The explanation of a stored purchase, evaluated again with its version and recorded inputs."""
    inputs = recorded_inputs(evaluation)
    if inputs is None:
        return list(evaluation.get("explanation", []))
    member, outlet, channel, budgets = inputs
    tx = rules.Transaction(time=occurred_at, items=tuple(items), channel=channel)
    result = rules.evaluate(program, tx, member, outlet, now=occurred_at, explain=True, budgets=budgets)
    return result.explanation_dicts()


def recorded_inputs(
    evaluation: Mapping[str, Any],
) -> tuple[rules.Member, rules.Outlet, str, dict[str, int]] | None:
    """The engine inputs recorded with a purchase, to recompute it (None for purchases booked before
    inputs were recorded)."""
    inputs = evaluation.get("inputs")
    if inputs is None:
        return None
    m = inputs["member"]
    member = rules.Member(
        id="",
        tier=m["tier"],
        points=m["points"],
        visits=m["visits"],
        last_visit_at=datetime.fromisoformat(m["last_visit_at"]) if m["last_visit_at"] else None,
        enrolled_at=datetime.fromisoformat(m["enrolled_at"]) if m["enrolled_at"] else None,
        tags=tuple(m["tags"]),
        stamps=m["stamps"],
        rule_uses={r: (v[0], v[1]) for r, v in m["rule_uses"].items()},
        segment=m.get("segment", ""),
        holdout=frozenset(m.get("holdout", ())),
    )
    o = inputs["outlet"]
    outlet = rules.Outlet(id=o["id"], partner=o["partner"], tags=tuple(o["tags"]))
    return member, outlet, inputs["channel"], dict(inputs["budgets"])


# --- step 3: book (pure) -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Counters:
    """Counter rows changed by the purchases of one booking, written once at its end."""

    stamps: dict[tuple[int, str], MemberContext] = field(default_factory=dict)
    uses: dict[tuple[int, str], int] = field(default_factory=dict)
    day_uses: dict[tuple[int, str, date], int] = field(default_factory=dict)
    budgets: dict[tuple[int, str], int] = field(default_factory=dict)

    def flush(self, booking: Booking, tenant_id: int, now: datetime) -> None:
        for (member_id, card), ctx in self.stamps.items():
            booking.upsert(
                "stamp_cards",
                (member_id, card),
                {"tenant_id": tenant_id, "member_id": member_id, "card": card, "stamps": ctx.stamps[card]}
                | {"updated_at": now},
            )
        for (member_id, rule), n in self.uses.items():
            booking.upsert(
                "rule_uses",
                (member_id, rule),
                {"tenant_id": tenant_id, "member_id": member_id, "rule_id": rule, "uses": n},
            )
        for (member_id, rule, day), n in self.day_uses.items():
            booking.upsert(
                "rule_day_uses",
                (member_id, rule, day),
                {"tenant_id": tenant_id, "member_id": member_id, "rule_id": rule, "day": day, "uses": n},
            )
        for (program_id, rule), n in self.budgets.items():
            booking.upsert(
                "rule_budgets",
                (program_id, rule),
                {"tenant_id": tenant_id, "program_id": program_id, "rule_id": rule, "points_used": n},
            )


def book(
    booking: Booking,
    counters: _Counters,
    ctx: MemberContext,
    priced: Priced,
    *,
    now: datetime,
    transaction_id: int,
    lot_id: int,
    voucher_ids: Sequence[int],
    budgets: dict[str, int],
    shown: dict[str, Any] | None = None,
    events: bool = True,
) -> Posting:
    """Book one evaluated purchase and bring ``ctx`` up to date (a batch prices the member's next
    purchase against it): the transaction and its lines, the lot, the visit and tier, stamps and
    vouchers, rule uses and budgets, and (with ``events``) its events in the same statement."""
    tenant_id = booking.tenant_id
    booking.at = now  # the purchase's own posting clock on its entries and lot (a batch spans days)
    receipt, program, result = priced.receipt, priced.program, priced.result
    policy = program.document.points
    amount = sum(i.unit_price * i.quantity for i in receipt.items)
    points = result.total
    # The return window runs from when the points were booked: a receipt sent late (an offline
    # till) is as returnable as any other, so its points do not skip the pending time.
    pending_until = max(receipt.occurred_at, now) + timedelta(days=policy.pending_days)
    expires_at = expiry_for(receipt.occurred_at, policy.expire_after_months, program.zone)
    state = "pending" if pending_until > now else "available"
    member_id = ctx.holder.id

    booking.insert(
        "transactions",
        {
            "id": transaction_id,
            "tenant_id": tenant_id,
            "member_id": member_id,
            "outlet_id": receipt.outlet_id,
            "external_id": receipt.external_id,
            "channel": receipt.channel,
            "occurred_at": receipt.occurred_at,
            "posted_at": now,
            "program_version_id": priced.version.id,
            "amount": amount,
            "points": points,
            "amount_refunded": 0,
            "points_refunded": 0,
            "evaluation": priced.evaluation,
        },
    )
    line_points = result.items
    for i, it in enumerate(receipt.items):
        booking.insert(
            "transaction_items",
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "transaction_id": transaction_id,
                "line": i,
                "sku": it.sku,
                "category": it.category,
                "tags": list(it.tags),
                "unit_price": it.unit_price,
                "quantity": it.quantity,
                "points": line_points[i].points,
                "refunded_quantity": 0,
            },
        )
    if points > 0:
        lot = booking.issue_lot(
            ctx.holder,
            lot_id,
            points,
            state=state,
            counter=ISSUED,
            cause="earn",
            ref_id=transaction_id,
            pending_until=pending_until,
            expires_at=expires_at,
            transaction_id=transaction_id,
        )
        if state == "available":
            ctx.lots.append(lot)
            booking.settle_debt(ctx.holder, ctx.lots, cause="earn", ref_id=transaction_id)

    new_tier = _upgrade(booking, ctx, program, receipt.occurred_at, points, amount, now)
    booking.visit(ctx.holder, receipt.occurred_at, tier=new_tier, tier_since=now)
    ctx.visits += 1
    if ctx.last_visit_at is None or receipt.occurred_at > ctx.last_visit_at:
        ctx.last_visit_at = receipt.occurred_at
    if new_tier is not None:
        ctx.tier = new_tier

    issued = _stamp_cards(booking, counters, ctx, priced, transaction_id, now, voucher_ids)
    if events and outbox.POSTING_EVENTS:
        _events(
            booking, ctx, priced, transaction_id, amount, points, state, pending_until, issued, new_tier, now
        )
    budgeted = {r.id for r in program.rules if r.budget is not None}
    for rp in result.rules:
        if rp.applications > 0 and rp.rule in priced.limited:
            ctx.uses[rp.rule] = ctx.uses.get(rp.rule, 0) + rp.applications
            ctx.day_uses[(priced.day, rp.rule)] = ctx.day_uses.get((priced.day, rp.rule), 0) + rp.applications
            counters.uses[(member_id, rp.rule)] = counters.uses.get((member_id, rp.rule), 0) + rp.applications
            key = (member_id, rp.rule, priced.day)
            counters.day_uses[key] = counters.day_uses.get(key, 0) + rp.applications
        if rp.rule in budgeted and rp.points > 0:
            used = math.ceil(rp.points)  # budgets are whole points; round against the rule
            budgets[rp.rule] = budgets.get(rp.rule, 0) + used
            key2 = (priced.version.program_id, rp.rule)
            counters.budgets[key2] = counters.budgets.get(key2, 0) + used
    return Posting(
        transaction_id,
        member_id,
        receipt.outlet_id,
        receipt.external_id,
        receipt.occurred_at,
        priced.version.id,
        amount,
        points,
        pending_until,
        expires_at,
        issued,
        shown or priced.evaluation,
    )


def _events(
    booking: Booking,
    ctx: MemberContext,
    priced: Priced,
    transaction_id: int,
    amount: int,
    points: int,
    state: str,
    pending_until: datetime,
    vouchers: Sequence[int],
    new_tier: str | None,
    now: datetime,
) -> None:
    """The purchase's events, rows of the same booking: no purchase without its event, and a posting
    that rolls back leaves none. The tier row was written by :func:`_upgrade` with the same figure."""
    tenant_id, member_id, receipt = booking.tenant_id, ctx.holder.id, priced.receipt
    emit = booking.insert
    emit(
        "events",
        outbox.row(
            tenant_id,
            member_id,
            "purchase.posted",
            {
                "transaction_id": transaction_id,
                "outlet_id": receipt.outlet_id,
                "external_id": receipt.external_id,
                "occurred_at": receipt.occurred_at,
                "amount": amount,
                "currency": priced.program.document.currency,
                "points": points,
                "pending_until": pending_until if state == "pending" else None,
                "program_version_id": priced.version.id,
            },
            at=now,
        ),
    )
    if new_tier is not None:
        history = booking.inserts["tier_history"][-1]
        emit(
            "events",
            outbox.row(
                tenant_id,
                member_id,
                "tier.changed",
                {
                    "from_tier": history["from_tier"],
                    "to_tier": new_tier,
                    "reason": "earn",
                    "qualifying": history["qualifying"],
                },
                at=now,
            ),
        )
    for voucher in booking.inserts.get("vouchers", ())[-len(vouchers) :] if vouchers else ():
        common = {
            "voucher_id": voucher["id"],
            "reward": voucher["reward_code"],
            "transaction_id": transaction_id,
        }
        emit(
            "events",
            outbox.row(
                tenant_id, member_id, "stamp_card.completed", common | {"stamp_card": voucher["card"]}, at=now
            ),
        )
        emit(
            "events",
            outbox.row(
                tenant_id, member_id, "voucher.issued", common | {"stamp_card": voucher["card"]}, at=now
            ),
        )


def _qualifying_add(qualify_on: str, points: int, amount: int, visit: int = 1) -> int:
    return points if qualify_on == "points" else amount if qualify_on == "spend" else visit


def _upgrade(
    booking: Booking,
    ctx: MemberContext,
    program: rules.CheckedProgram,
    occurred_at: datetime,
    points: int,
    amount: int,
    now: datetime,
) -> str | None:
    """The tier after this purchase when it is an upgrade (only upgrades happen on earning; a member
    without a tier gets the level they qualify for), with its history row; None to stay."""
    ladder = tiers.levels(program)
    policy = program.document.tiers
    if not ladder or policy is None:
        return None
    current = tiers.known_tier(program, ctx.tier)
    names = [lv.name for lv in ladder]
    if ctx.window is not None:
        ctx.window.append((occurred_at, points, amount, 1))
    if current == names[-1]:
        return None
    if ctx.window is not None:
        measure = {"points": 0, "spend": 1}.get(policy.qualify_on, 2)
        since = window_start(now, policy.window_months, program.zone)
        value = ctx.window_base[measure] + sum(
            _qualifying_add(policy.qualify_on, p, a, v) for at, p, a, v in ctx.window if since < at <= now
        )
    else:
        since = window_start(now, policy.window_months, program.zone)
        value = ctx.qualifying + (
            _qualifying_add(policy.qualify_on, points, amount) if since < occurred_at <= now else 0
        )
    target = tiers.level_for(program, value)
    if current is not None and names.index(target.name) <= names.index(current):
        return None
    booking.insert(
        "tier_history",
        {
            "tenant_id": booking.tenant_id,
            "member_id": ctx.holder.id,
            "from_tier": ctx.tier,
            "to_tier": target.name,
            "reason": "earn",
            "qualifying": value,
            "at": now,
        },
    )
    return target.name


def _stamp_cards(
    booking: Booking,
    counters: _Counters,
    ctx: MemberContext,
    priced: Priced,
    transaction_id: int,
    now: datetime,
    voucher_ids: Sequence[int],
) -> tuple[int, ...]:
    """Stamps on each card after the purchase, and a voucher per card filled."""
    result = priced.result
    if not result.stamps:
        return ()
    cards = rules.compile_program(priced.program).cards
    issued: list[int] = []
    for card, added in result.stamps.items():
        reward_at, reward = cards[card]
        total = ctx.stamps.get(card, 0) + added
        for _ in range(total // reward_at):
            voucher_id = voucher_ids[len(issued)]
            booking.insert(
                "vouchers",
                {
                    "id": voucher_id,
                    "tenant_id": booking.tenant_id,
                    "member_id": ctx.holder.id,
                    "reward_code": reward,
                    "card": card,
                    "status": "issued",
                    "transaction_id": transaction_id,
                    "issued_at": now,
                    "used_at": None,
                },
            )
            issued.append(voucher_id)
        ctx.stamps[card] = total % reward_at
        counters.stamps[(ctx.holder.id, card)] = ctx
    return tuple(issued)


# --- step 1: load the member's context (one statement on PostgreSQL) ------------------------------------


def _agg(dialect: str, columns: str) -> str:
    if dialect == "postgresql":
        return f"json_agg(json_build_array({columns}))"
    return f"json_group_array(json_array({columns}))"


_MEASURE = {
    "points": "q.points - q.points_refunded",
    "spend": "q.amount - q.amount_refunded",
    "visits": "CASE WHEN q.amount_refunded < q.amount OR q.amount = 0 THEN 1 ELSE 0 END",
}


@dataclass(frozen=True, slots=True)
class _Loaded:
    ctx: MemberContext
    card_state: str | None
    card_id: int | None
    version_id: int | None
    existing: int | None
    answer_row: tuple[Any, ...] | None
    ids: tuple[int | None, int | None]


#: Where PostgreSQL finds an earlier booking of a receipt: the unpartitioned receipts table
#: (migration 0007; tests that write through a 0006 schema set this to False).
RECEIPTS_TABLE = True


@functools.cache
def _context_sql(
    dialect: str, by: str, qualify_on: str | None, stamped: bool, limited: bool, answered: bool
) -> tuple[str, tuple[str, ...]]:
    """The statement a posting reads its context with, for one shape of program and receipt, and the
    names of its parameters in order (built once per shape: its text is the statement cache's key)."""
    names: list[str] = []

    def p(name: str) -> str:
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    tenant = p("tenant")
    columns = [
        "c.id", "c.state", "m.id", "m.tier", "m.available", "m.pending", "m.debt", "m.visits",
        "m.last_visit_at", "m.enrolled_at", "m.tags", "m.revision", "m.segment", "m.state", "m.merged_into",
        f"(SELECT v.id FROM program_versions v WHERE v.tenant_id = {tenant} AND v.status = 'published'"
        f" AND v.valid_from <= {p('occurred_at')} ORDER BY v.valid_from DESC LIMIT 1)",
        # An earlier booking of this receipt. PostgreSQL keeps receipts unique in transaction_receipts
        # (transactions is partitioned by month and a resent receipt may carry another time): one key
        # probe there instead of one per month partition of transactions.
        "r.transaction_id" if dialect == "postgresql" and RECEIPTS_TABLE else "t.id",
    ]  # fmt: skip
    columns.append(
        f"(SELECT COALESCE(SUM({_MEASURE[qualify_on]}), 0) FROM transactions q"
        f" WHERE q.tenant_id = {tenant} AND q.member_id = m.id"
        f" AND q.occurred_at > {p('since')} AND q.occurred_at <= {p('now')})"
        if qualify_on is not None
        else "0"
    )
    columns.append(
        f"(SELECT {_agg(dialect, 's.card, s.stamps')} FROM stamp_cards s"
        f" WHERE s.tenant_id = {tenant} AND s.member_id = m.id)"
        if stamped
        else "NULL"
    )
    if limited:
        columns.append(
            f"(SELECT {_agg(dialect, 'u.rule_id, u.uses')} FROM rule_uses u"
            f" WHERE u.tenant_id = {tenant} AND u.member_id = m.id)"
        )
        columns.append(
            f"(SELECT {_agg(dialect, 'd.rule_id, d.uses')} FROM rule_day_uses d"
            f" WHERE d.tenant_id = {tenant} AND d.member_id = m.id AND d.day = {p('day')})"
        )
    else:
        columns += ["NULL", "NULL"]
    columns += ["i.request_hash", "i.status_code", "i.response", "i.created_at", "i.expires_at"]
    # Fresh ids for the transaction and its lot (SQLite: the writer lock is held, nobody else inserts).
    columns += (
        ["nextval('transactions_id_seq')", "nextval('point_lots_id_seq')"]
        if dialect == "postgresql"
        else [
            "(SELECT COALESCE(MAX(id), 0) + 1 FROM transactions)",
            "(SELECT COALESCE(MAX(id), 0) + 1 FROM point_lots)",
        ]
    )
    if by == "member":
        columns[:2] = ["NULL", "'active'"]
        source = "members m"
        where = f"m.tenant_id = {tenant} AND m.id = {p('member')}"
    else:
        source = "cards c LEFT JOIN members m ON m.tenant_id = c.tenant_id AND m.id = c.member_id"
        where = f"c.tenant_id = {tenant} AND c.{'id' if by == 'card_id' else 'number'} = {p('card')}"
    key = (
        f"i.tenant_id = {tenant} AND i.api_key_id = {p('api_key')} AND i.key = {p('key')}"
        if answered
        else "false"
    )
    receipts = "transaction_receipts r" if dialect == "postgresql" and RECEIPTS_TABLE else "transactions t"
    alias = receipts[-1]
    sql = (
        f"SELECT {', '.join(columns)} FROM {source}"
        f" LEFT JOIN {receipts} ON {alias}.tenant_id = {tenant} AND {alias}.outlet_id = {p('outlet')}"
        f" AND {alias}.external_id = {p('external_id')}"
        f" LEFT JOIN idempotency_records i ON {key}"
        f" WHERE {where}"
    )
    return sql, tuple(names)


async def _load(
    unit: Unit,
    tenant_id: int,
    receipt: Receipt,
    now: datetime,
    program: rules.CheckedProgram,
    answer: Answer | None,
    *,
    member_id: int | None = None,
) -> _Loaded | None:
    """Everything a posting reads, in one statement: the card and its member, the version valid at
    ``occurred_at``, an earlier booking of the receipt, the stamps, rule uses and the tier window's
    figure, the idempotency record, and (PostgreSQL) fresh ids. None: no such card or member."""
    policy = program.document.tiers
    member_id = member_id or receipt.member_id
    by = "member" if member_id is not None else "card_id" if receipt.card_id is not None else "card_number"
    compiled = rules.compile_program(program)
    sql, names = _context_sql(
        unit.dialect,
        by,
        policy.qualify_on if policy is not None else None,
        bool(compiled.cards),
        any(r.limited for r in program.rules),
        answer is not None,
    )
    values = {
        "tenant": tenant_id,
        "occurred_at": receipt.occurred_at,
        "since": window_start(now, policy.window_months, program.zone) if policy is not None else None,
        "now": now,
        "day": local_day(receipt.occurred_at, program.zone),
        "member": member_id,
        "card": receipt.card_id if receipt.card_id is not None else receipt.card_number,
        "outlet": receipt.outlet_id,
        "external_id": receipt.external_id,
        "api_key": answer.api_key_id if answer is not None else None,
        "key": answer.key if answer is not None else None,
    }
    row = await unit.fetchrow(sql, *(values[n] for n in names))
    if row is None:
        return None
    (card_id, card_state, m_id, tier, available, pending, debt, visits, last_visit, enrolled, tags, revision,
     segment, m_state, merged_into, version_id, existing, qualifying, stamps, uses, day_uses,
     i_hash, i_status, i_body, i_created, i_expires, tx_id, lot_id) = row  # fmt: skip
    if m_id is None:
        return _Loaded(None, card_state, card_id, version_id, existing, None, (None, None))  # type: ignore[arg-type]
    if m_state not in (None, "active"):
        raise reads.Closed(m_id, m_state, merged_into)
    day = local_day(receipt.occurred_at, program.zone)
    ctx = MemberContext(
        Holder(m_id, available, pending, debt, None if unit.locked else revision),
        tier,
        visits,
        unit.instant(last_visit),
        unit.instant(enrolled) or now,
        tuple(unit.json(tags) or ()),
        {card: n for card, n in unit.json(stamps) or ()},
        {rule: n for rule, n in unit.json(uses) or ()},
        {(day, rule): n for rule, n in unit.json(day_uses) or ()},
        qualifying=int(qualifying or 0),
        segment=segment or "",
    )
    answer_row = (
        None
        if i_hash is None
        else (i_hash, i_status, i_body, unit.instant(i_created), unit.instant(i_expires))
    )
    return _Loaded(ctx, card_state, card_id, version_id, existing, answer_row, (tx_id, lot_id))


_BUDGETS = (
    "SELECT rule_id, points_used FROM rule_budgets WHERE tenant_id = $1 AND program_id = $2"
    " ORDER BY rule_id FOR UPDATE"
)


async def _budgets(unit: Unit, tenant_id: int, program_id: int) -> dict[str, int]:
    """Budgets are shared by all members: read under a lock (a posting with budgets never runs
    optimistically), so two postings cannot both spend the last points."""
    return {rule: int(n) for rule, n in await unit.fetch(_BUDGETS, tenant_id, program_id)}


# --- a till post ----------------------------------------------------------------------------------------


async def _check_age(
    unit: Unit, known: Sequence[versions.Published], occurred_at: datetime, now: datetime
) -> None:
    """A till's receipt may be late (an offline till catching up), but not later than the program
    in force now allows: InvalidInput beyond that. Checked after the replays, so that a retry of a
    receipt booked before still gets its first answer."""
    if occurred_at >= now - timedelta(days=rules.document.MIN_RECEIPT_AGE_DAYS):
        return  # no program refuses it: a till's usual receipt costs no lookup
    try:
        current = versions.published_at(known, now)
    except NotFound:
        return
    oldest = (await versions.program_of(unit, current)).document.points.max_receipt_age_days
    if occurred_at < now - timedelta(days=oldest):
        raise InvalidInput(
            f"occurred_at is more than {oldest} days ago: older than this program accepts from a till"
        )


async def _post_unit(
    tenant_id: int, receipt: Receipt, now: datetime, answer: Answer | None, explain: bool, unit: Unit
) -> Posted:
    cached = versions.published_cache(unit, tenant_id)
    known, fresh = (
        (cached, False) if cached is not None else (await versions.published(unit, tenant_id), True)
    )
    for _ in range(3):
        try:
            version = versions.published_at(known, receipt.occurred_at)
        except NotFound:
            if fresh:
                # Nothing was ever booked for this instant: if it is simply too old, say that.
                await _check_age(unit, known, receipt.occurred_at, now)
                raise
            known, fresh = await versions.published(unit, tenant_id), True
            continue
        program = await versions.program_of(unit, version)
        budgeted = any(r.budget is not None for r in program.rules)
        if budgeted and not unit.locked:
            raise Stale("a rule with a budget: post holding the budget's lock")
        member_id = (
            await _lock_member(unit, tenant_id, receipt) if unit.locked and unit.dialect != "sqlite" else None
        )
        loaded = await _load(unit, tenant_id, receipt, now, program, answer, member_id=member_id)
        if loaded is None:
            raise NotFound(
                "card not found" if receipt.member_id is None else f"member {receipt.member_id} not found"
            )
        if loaded.version_id == version.id:
            break
        # A version was published since the list was read: price by the one the database names.
        known, fresh = await versions.published(unit, tenant_id), True
    else:
        raise NotFound(f"no program version was valid at {receipt.occurred_at.isoformat()}")
    if answer is not None:
        await clear_dead(unit, answer, loaded.answer_row)
    if loaded.card_state == "blocked":
        raise NotAllowed("this card is blocked")
    if loaded.ctx is None:
        raise _BlankCard(loaded.card_id or 0)
    if loaded.existing is not None:
        raise AlreadyPosted(loaded.existing)
    # After the replays: a retry of a receipt booked before gets its first answer.
    await _check_age(unit, known, receipt.occurred_at, now)
    ctx = loaded.ctx
    outlet = await _outlet(unit, tenant_id, receipt.outlet_id)
    if ctx.holder.debt > 0:
        ctx.lots = await reads.available_lots(unit, tenant_id, ctx.holder.id)
    budgets = await _budgets(unit, tenant_id, version.program_id) if budgeted else {}

    priced = evaluate(
        ctx, receipt, version=version, program=program, outlet=outlet, budgets=budgets, explain=explain
    )

    tx_id, lot_id = loaded.ids
    if tx_id is None or lot_id is None:
        tx_id, lot_id = (await unit.next_ids("transactions", 1))[0], (await unit.next_ids("point_lots", 1))[0]
    voucher_ids = await unit.next_ids("vouchers", priced.vouchers) if priced.vouchers else []
    booking = Booking(tenant_id, now)
    counters = _Counters()
    posting = book(
        booking,
        counters,
        ctx,
        priced,
        now=now,
        transaction_id=tx_id,
        lot_id=lot_id,
        voucher_ids=voucher_ids,
        budgets=dict(budgets),
        # The till shows the explanation; it is not stored (the version and the inputs recompute it).
        shown=priced.evaluation | {"explanation": priced.result.explanation_dicts()} if explain else None,
    )
    counters.flush(booking, tenant_id, now)
    posted = Posted(posting, membership.view_of(ctx))
    return await apply_answered(unit, booking, answer, posted)


async def _lock_member(unit: Unit, tenant_id: int, receipt: Receipt) -> int | None:
    """Locked mode: the member's row locked first (None when the card has no member yet)."""
    by = "id = $2" if receipt.card_id is not None else "number = $2"
    if receipt.member_id is not None:
        member_id: int | None = receipt.member_id
    else:
        member_id = await unit.fetchval(
            f"SELECT member_id FROM cards WHERE tenant_id = $1 AND {by}",
            tenant_id,
            receipt.card_id if receipt.card_id is not None else receipt.card_number,
        )
    while member_id is not None:
        await unit.fetchval(
            "SELECT id FROM members WHERE tenant_id = $1 AND id = $2 FOR UPDATE", tenant_id, member_id
        )
        if receipt.member_id is not None:
            break
        # The card may have moved while this waited for the lock (a merge of its member commits
        # first): lock the member it names now.
        holder = await unit.fetchval(
            f"SELECT member_id FROM cards WHERE tenant_id = $1 AND {by}",
            tenant_id,
            receipt.card_id if receipt.card_id is not None else receipt.card_number,
        )
        if holder == member_id:
            break
        member_id = holder
    return member_id


async def post(
    db: Database,
    tenant_id: int,
    receipt: Receipt,
    *,
    now: datetime,
    answer: Answer | None = None,
    explain: bool = True,
) -> Posted:
    """Book a purchase from a till (see the module docstring). A receipt booked before returns its
    first posting, marked ``replayed``; a blank card is bound to a new member on first use. The
    posting's evaluation carries the rule-by-rule explanation unless ``explain`` is false."""
    receipt.validate()
    if receipt.occurred_at > now + MAX_CLOCK_SKEW:
        raise InvalidInput(
            f"occurred_at lies in the future (more than {MAX_CLOCK_SKEW.total_seconds():.0f} s after"
            " the server's clock): check the till's clock"
        )
    for _ in range(3):
        try:
            return await run(
                db, partial(_post_unit, tenant_id, receipt, now, answer, explain), optimistic=True
            )
        except _BlankCard as blank:
            async with db.write() as s:
                await membership.card_holder(s, tenant_id, CardRef(card_id=blank.card_id), bind_at=now)
        except AlreadyPosted as first:
            return await _replay(db, tenant_id, first.transaction_id)
        except Duplicate as dup:
            if dup.table == "idempotency_records" and answer is not None:
                await answered_meanwhile(db, answer)
            if dup.table != "transactions":
                raise
            # The same receipt was booked at the same moment by another request: that one stands.
    return await _replay(db, tenant_id, await _receipt_id(db, tenant_id, receipt))


async def _receipt_id(db: Database, tenant_id: int, receipt: Receipt) -> int:
    from loyalty.points.transactions import find_transaction

    return (await find_transaction(db, tenant_id, receipt.outlet_id, receipt.external_id)).transaction_id


async def _replay(db: Database, tenant_id: int, transaction_id: int) -> Posted:
    from loyalty.points.transactions import get_transaction

    first = await get_transaction(db, tenant_id, transaction_id)
    member = await membership.get_member(db, tenant_id, first.member_id)
    return Posted(dataclasses.replace(first, replayed=True), member)


async def post_transaction(
    db: Database,
    tenant_id: int,
    *,
    outlet_id: int,
    external_id: str,
    occurred_at: datetime,
    items: Sequence[rules.Item],
    now: datetime,
    member_id: int | None = None,
    card_number: str | None = None,
    card_id: int | None = None,
    channel: str = "till",
    explain: bool = True,
) -> Posting:
    """Post a purchase for a member named by id, card number or card id: :func:`post` for callers
    that want only the posting."""
    if card_number is not None:
        card_number = parse_card_number(card_number)
    receipt = Receipt(
        outlet_id, external_id, occurred_at, tuple(items), member_id, card_id, card_number, channel
    )
    return (await post(db, tenant_id, receipt, now=now, explain=explain)).posting


# --- a batch ---------------------------------------------------------------------------------------------

_MEMBERS = (
    "SELECT id, tier, available, pending, debt, visits, last_visit_at, enrolled_at, tags, segment"
    " FROM members WHERE tenant_id = $1 AND id {ids} ORDER BY id FOR UPDATE"
)
_BATCH_STAMPS = "SELECT member_id, card, stamps FROM stamp_cards WHERE tenant_id = $1 AND member_id {ids}"
_BATCH_USES = "SELECT member_id, rule_id, uses FROM rule_uses WHERE tenant_id = $1 AND member_id {ids}"
_BATCH_DAY_USES = (
    "SELECT member_id, rule_id, day, uses FROM rule_day_uses"
    " WHERE tenant_id = $1 AND member_id {ids} AND day >= $3"
)
_VISIT = "CASE WHEN amount_refunded < amount OR amount = 0 THEN 1 ELSE 0 END"
#: The part of the tier window every posting of a batch shares, summed per member ...
_BATCH_WINDOW_BASE = (
    f"SELECT member_id, SUM(points - points_refunded), SUM(amount - amount_refunded), SUM({_VISIT})"
    " FROM transactions WHERE tenant_id = $1 AND member_id {ids} AND occurred_at > $3 AND occurred_at <= $4"
    " GROUP BY member_id"
)
#: ... and, row by row, the purchases at its edges: leaving the window during the batch, or later
#: than the batch's first posting. A batch reads a few rows per member, not their whole history.
_BATCH_WINDOW_EDGES = (
    f"SELECT member_id, occurred_at, points - points_refunded, amount - amount_refunded, {_VISIT}"
    " FROM transactions WHERE tenant_id = $1 AND member_id {ids} AND occurred_at > $3"
    " AND (occurred_at <= $4 OR occurred_at > $5)"
)
_UTC = ZoneInfo("UTC")
#: Voucher ids taken at a time while a batch is replayed.
VOUCHER_ID_BLOCK = 64


async def _contexts(
    unit: Unit,
    tenant_id: int,
    member_ids: Sequence[int],
    edges: tuple[datetime, datetime, datetime],
    first_day: date,
    top: str | None = None,
) -> dict[int, MemberContext]:
    """The contexts of a batch's members, read (and locked) at once, with their tier-window history:
    ``edges`` are the earliest and latest window starts of the batch's postings and its first posting.
    Members already in the ``top`` tier cannot be upgraded: their window is not read."""
    earliest_start, latest_start, first = edges
    ids = unit.any_of("$2")
    listed = unit.listed(sorted(member_ids))
    out: dict[int, MemberContext] = {}
    for r in await unit.fetch(_MEMBERS.format(ids=ids), tenant_id, listed):
        out[r[0]] = MemberContext(
            Holder(r[0], r[2], r[3], r[4]),
            r[1],
            r[5],
            unit.instant(r[6]),
            unit.instant(r[7]) or first,
            tuple(unit.json(r[8]) or ()),
            {},
            {},
            {},
            window=[],
            segment=r[9] or "",
        )
    for member_id, card, n in await unit.fetch(_BATCH_STAMPS.format(ids=ids), tenant_id, listed):
        out[member_id].stamps[card] = n
    for member_id, rule, n in await unit.fetch(_BATCH_USES.format(ids=ids), tenant_id, listed):
        out[member_id].uses[rule] = n
    for member_id, rule, day, n in await unit.fetch(
        _BATCH_DAY_USES.format(ids=ids), tenant_id, listed, first_day
    ):
        out[member_id].day_uses[(day if isinstance(day, date) else date.fromisoformat(day), rule)] = n
    climbing = sorted(m for m, ctx in out.items() if ctx.tier is None or ctx.tier != top)
    listed = unit.listed(climbing)
    for member_id, points, spend, visits in await unit.fetch(
        _BATCH_WINDOW_BASE.format(ids=ids), tenant_id, listed, latest_start, first
    ):
        out[member_id].window_base = (int(points or 0), int(spend or 0), int(visits or 0))
    for member_id, at, points, spend, visit in await unit.fetch(
        _BATCH_WINDOW_EDGES.format(ids=ids), tenant_id, listed, earliest_start, latest_start, first
    ):
        window = out[member_id].window
        assert window is not None
        window.append((unit.instant(at) or first, points, spend, visit))
    for ctx in out.values():
        if ctx.holder.debt > 0:
            ctx.lots = await reads.available_lots(unit, tenant_id, ctx.holder.id)
    return out


@dataclass(frozen=True, slots=True)
class BatchPurchase:
    """One purchase of a batch: the receipt (its member resolved), its posting clock and its line."""

    line: int
    receipt: Receipt
    now: datetime


class Rejected(Exception):
    """A purchase of a batch cannot be booked: the whole batch is rolled back."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


async def book_batch(
    unit: Unit,
    booking: Booking,
    purchases: Sequence[BatchPurchase],
    *,
    new_members: Mapping[int, MemberContext] | None = None,
    events: bool = True,
) -> list[Posting]:
    """Replay ``purchases`` in order in memory, one member state after the other, into ``booking``.

    The members are read once (and locked); ``new_members`` are members the same booking creates.
    A purchase that cannot be booked raises :class:`Rejected` with its line. ``events=False``: write
    no events (history brought in by an import is not news to other systems).
    """
    if not purchases:
        return []
    tenant_id = booking.tenant_id
    published_versions = await versions.published(unit, tenant_id)
    earliest, latest = min(p.now for p in purchases), max(p.now for p in purchases)
    months, tops = [0], set()
    for v in published_versions:
        program = await versions.program_of(unit, v)
        if program.document.tiers is not None:
            months.append(program.document.tiers.window_months)
            tops.add(tiers.levels(program)[-1].name)
    # The window starts of the batch's postings lie between these (two days of margin for time zones).
    edges = (
        window_start(earliest, max(months), _UTC) - timedelta(days=2),
        window_start(latest, min(months[1:] or months), _UTC) + timedelta(days=2),
        earliest,
    )
    first_day = min(p.receipt.occurred_at for p in purchases).date() - timedelta(days=1)
    known = [
        m for m in {p.receipt.member_id for p in purchases} if m is not None and m not in (new_members or {})
    ]
    top = tops.pop() if len(tops) == 1 else None
    contexts = await _contexts(unit, tenant_id, known, edges, first_day, top)
    contexts.update(new_members or {})
    tx_ids = await unit.next_ids("transactions", len(purchases))
    lot_ids = await unit.next_ids("point_lots", len(purchases))
    spare_vouchers: list[int] = []
    budgets: dict[int, dict[str, int]] = {}
    counters = _Counters()
    postings: list[Posting] = []
    for i, p in enumerate(purchases):
        receipt = p.receipt
        try:
            version = versions.published_at(published_versions, receipt.occurred_at)
            program = await versions.program_of(unit, version)
            outlet = await _outlet(unit, tenant_id, receipt.outlet_id)
        except NotFound as exc:
            raise Rejected(p.line, str(exc)) from None
        ctx = contexts.get(receipt.member_id or 0)
        if ctx is None:
            raise Rejected(p.line, f"member {receipt.member_id} not found")
        if program.document.tiers is None:
            ctx.window = None
        if any(r.budget is not None for r in program.rules) and version.program_id not in budgets:
            budgets[version.program_id] = await _budgets(unit, tenant_id, version.program_id)
        spent = budgets.get(version.program_id, {})
        try:
            priced = evaluate(
                ctx, receipt, version=version, program=program, outlet=outlet, budgets=spent, explain=False
            )
        except rules.EvaluationError as exc:
            raise Rejected(p.line, str(exc)) from None
        if len(spare_vouchers) < priced.vouchers:
            spare_vouchers += await unit.next_ids("vouchers", max(VOUCHER_ID_BLOCK, priced.vouchers))
        voucher_ids, spare_vouchers = spare_vouchers[: priced.vouchers], spare_vouchers[priced.vouchers :]
        postings.append(
            book(
                booking,
                counters,
                ctx,
                priced,
                now=p.now,
                transaction_id=tx_ids[i],
                lot_id=lot_ids[i],
                voucher_ids=voucher_ids,
                budgets=spent,
                events=events,
            )
        )
    counters.flush(booking, tenant_id, max(p.now for p in purchases))
    return postings
