"""Returns: the points of returned items taken back, stamps and unused vouchers withdrawn.

The points of a return are taken back in this order, each step as far as it goes:

1. from the purchase's own lot, what it still holds (pending or available);
2. from the purchase's own lot, what expired unspent: those points left the member already, so the
   return only moves them from the expired account back against the issued one;
3. from the member's other available points, nearest expiry first;
4. the rest had been spent: it becomes debt, which later points pay off first.

Rewards redeemed with the purchase stay redeemed. Transaction-level fixed points (a win-back bonus)
go back only when the whole purchase is returned. Stamps the returned items earned are taken off
their cards; where a card has fewer stamps than that because it filled up and became a voucher, the
voucher is withdrawn (``revoked``) if it is still unused, and a used one stays used: never below zero.
A refund with the till's ``external_id`` is booked once per purchase however often it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import rules
from loyalty.admin.access import Answer, answered_meanwhile, apply_answered, check_answer
from loyalty.errors import Conflict, InvalidInput
from loyalty.ledger import DEBT, ISSUED, Booking, Duplicate, Lot, reads, run
from loyalty.ledger.store import Unit
from loyalty.members.membership import MemberView, view_of
from loyalty.programs import versions
from loyalty.storage import outbox
from loyalty.storage.db import Database


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund_id: int
    transaction_id: int
    member_id: int
    #: Points reversed, and the part of them that had been spent and became debt.
    points: int
    debt: int
    amount: int
    lines: dict[int, int] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Refunded:
    """A refund and the member's figures right after it."""

    refund: RefundResult
    member: MemberView


def _line_points(points: int, quantity: int, before: int, now_refunded: int) -> int:
    """Points of a line to reverse so that refunds of a line always add up to exactly its points."""
    return points * now_refunded // quantity - points * before // quantity


_TRANSACTION = (
    "SELECT member_id, points, points_refunded, program_version_id, evaluation, occurred_at FROM transactions"
    " WHERE tenant_id = $1 AND member_id = $2 AND id = $3"
)
# Each read names the purchase's member (its owner, read first): on a database distributed by member
# it goes to that member's shard alone (docs/scaling.md). A merge moves these rows with the purchase.
_ITEMS = (
    "SELECT id, line, sku, category, tags, unit_price, quantity, refunded_quantity, points"
    " FROM transaction_items WHERE tenant_id = $1 AND member_id = $2 AND transaction_id = $3 ORDER BY line"
)
_DONE = (
    "SELECT id, points, debt, amount FROM refunds"
    " WHERE tenant_id = $1 AND member_id = $2 AND transaction_id = $3 AND external_id = $4"
)
_DONE_LINES = (
    "SELECT line, quantity FROM refund_items WHERE tenant_id = $1 AND member_id = $2 AND refund_id = $3"
    " ORDER BY line"
)
_OWN_LOT = (
    "SELECT id, member_id, state, remaining, expired, expires_at FROM point_lots"
    " WHERE tenant_id = $1 AND member_id = $2 AND transaction_id = $3"
)
_STAMPS = "SELECT card, stamps FROM stamp_cards WHERE tenant_id = $1 AND member_id = $2"
_VOUCHERS = (
    "SELECT id, card FROM vouchers WHERE tenant_id = $1 AND member_id = $2 AND status = 'issued'"
    " ORDER BY id DESC"
)


async def _replay(
    unit: Unit, tenant_id: int, transaction_id: int, member_id: int, done: Sequence[Any]
) -> RefundResult:
    got = await unit.fetch(_DONE_LINES, tenant_id, member_id, done[0])
    return RefundResult(
        done[0],
        transaction_id,
        member_id,
        done[1],
        done[2],
        done[3],
        {r[0]: r[1] for r in got},
        replayed=True,
    )


async def _refund_unit(
    tenant_id: int,
    transaction_id: int,
    lines: Mapping[int, int] | None,
    external_id: str | None,
    now: datetime,
    answer: Answer | None,
    unit: Unit,
) -> Refunded:
    # The member first (its lock, or its revision), then what was refunded so far: a refund that
    # commits in between moves the member's revision on, so this one is written on fresh figures.
    # An erased member's purchase is still returnable: the books need the refund.
    member = await reads.owner_member(unit, "transactions", tenant_id, transaction_id, closed=True)
    owner = member.holder.id
    head = await unit.fetchrow(_TRANSACTION, tenant_id, owner, transaction_id)
    assert head is not None
    if answer is not None:
        await check_answer(unit, answer)
    if external_id is not None:
        done = await unit.fetchrow(_DONE, tenant_id, owner, transaction_id, external_id)
        if done is not None:
            result = await _replay(unit, tenant_id, transaction_id, member.holder.id, done)
            if lines is not None and dict(lines) != result.lines:
                raise Conflict(f"refund id {external_id!r} was used for other lines of this purchase")
            return Refunded(result, view_of(member))
    _, tx_points, tx_points_refunded, version_id, evaluation, occurred_at = head
    items = await unit.fetch(_ITEMS, tenant_id, owner, transaction_id)
    by_line = {r[1]: r for r in items}
    wanted = dict(lines) if lines is not None else {r[1]: r[6] - r[7] for r in items if r[6] > r[7]}
    if not wanted or any(q <= 0 for q in wanted.values()):
        raise InvalidInput("nothing to refund: give positive quantities of the purchase's lines")
    points = amount = 0
    per_line: dict[int, int] = {}
    for line, qty in sorted(wanted.items()):
        row = by_line.get(line)
        if row is None:
            raise InvalidInput(f"the purchase has no line {line}")
        _, _, _, _, _, unit_price, quantity, refunded, line_points = row
        if refunded + qty > quantity:
            raise InvalidInput(
                f"line {line}: refunding {qty} more than was bought ({quantity - refunded} left to refund)"
            )
        per_line[line] = _line_points(line_points, quantity, refunded, refunded + qty)
        points += per_line[line]
        amount += unit_price * qty
    if all(r[7] + wanted.get(r[1], 0) == r[6] for r in items):
        points = tx_points - tx_points_refunded  # the remainder: transaction-level fixed points too

    refund_id = (await unit.next_ids("refunds", 1))[0]
    booking = Booking(tenant_id, now)
    holder = member.holder
    debt = await _take_back(unit, booking, tenant_id, holder, transaction_id, points, refund_id)
    booking.insert(
        "refunds",
        {
            "id": refund_id,
            "tenant_id": tenant_id,
            "member_id": holder.id,
            "transaction_id": transaction_id,
            "external_id": external_id,
            "points": points,
            "amount": amount,
            "debt": debt,
            "created_at": now,
        },
    )
    for line, qty in sorted(wanted.items()):
        booking.insert(
            "refund_items",
            {
                "tenant_id": tenant_id,
                "member_id": holder.id,
                "refund_id": refund_id,
                "line": line,
                "quantity": qty,
                "points": per_line[line],
            },
        )
        booking.update("transaction_items", by_line[line][0], add={"refunded_quantity": qty}, member_id=owner)
    refunded_now = {"points_refunded": points, "amount_refunded": amount}
    booking.update("transactions", transaction_id, add=refunded_now, member_id=owner)
    data = {
        "refund_id": refund_id,
        "transaction_id": transaction_id,
        "amount": amount,
        "points": points,
        "debt": debt,
    }
    booking.insert("events", outbox.row(tenant_id, holder.id, "purchase.refunded", data, at=now))
    await _take_stamps(
        unit,
        booking,
        tenant_id,
        holder.id,
        version_id,
        evaluation,
        unit.instant(occurred_at) or now,
        items,
        wanted,
        now,
    )
    booking.touch(holder)
    result = RefundResult(
        refund_id,
        transaction_id,
        holder.id,
        points,
        debt,
        amount,
        {line: q for line, q in sorted(wanted.items())},
    )
    refunded = Refunded(result, view_of(member))
    return await apply_answered(unit, booking, answer, refunded)


async def _take_back(
    unit: Unit,
    booking: Booking,
    tenant_id: int,
    holder: Any,
    transaction_id: int,
    points: int,
    refund_id: int,
) -> int:
    """Take ``points`` back (see the module docstring); returns the part that became debt."""
    left = points
    if left <= 0:
        return 0
    row = await unit.fetchrow(_OWN_LOT, tenant_id, holder.id, transaction_id)
    if row is not None:
        own = Lot(row[0], row[1], row[2], row[3], row[4], unit.instant(row[5]))
        if own.state != "expired":
            take = min(left, own.remaining)
            booking.take(holder, own, take, counter=ISSUED, cause="refund", ref_id=refund_id)
            left -= take
        gone = min(left, own.expired)
        booking.reverse_expired(holder, own, gone, cause="refund", ref_id=refund_id)
        left -= gone
    from_available = min(left, holder.available)
    if from_available > 0:
        lots = await reads.available_lots(unit, tenant_id, holder.id)
        booking.draw(holder, lots, from_available, counter=ISSUED, cause="refund", ref_id=refund_id)
        left -= from_available
    if left:
        booking.move(holder, "refund", refund_id, {DEBT: -left, ISSUED: left})
    return left


async def _take_stamps(
    unit: Unit,
    booking: Booking,
    tenant_id: int,
    member_id: int,
    version_id: int,
    evaluation: Any,
    occurred_at: datetime,
    items: Sequence[Sequence[Any]],
    wanted: Mapping[int, int],
    now: datetime,
) -> None:
    """Take the returned items' stamps off their cards: the purchase's basket before and after this
    return, evaluated by the version that priced it, differ by exactly those stamps."""
    recorded = unit.json(evaluation) or {}
    if not recorded.get("stamps"):
        return
    version = await unit.fetchrow(
        "SELECT digest, document FROM program_versions WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        version_id,
    )
    assert version is not None, "a transaction's version exists (foreign key)"
    program = versions.checked(str(version[0]), str(version[1]))
    from loyalty.points.posting import recorded_inputs

    inputs = recorded_inputs(recorded)
    member, outlet, channel, budgets = inputs or (
        rules.Member(tier=recorded.get("tier")),
        rules.Outlet(),
        "till",
        {},
    )

    def stamps(refunded: Mapping[int, int]) -> Mapping[str, int]:
        basket = tuple(
            rules.Item(
                sku=r[2],
                unit_price=r[5],
                quantity=r[6] - r[7] - refunded.get(r[1], 0),
                category=r[3],
                tags=tuple(unit.json(r[4]) or ()),
            )
            for r in items
            if r[6] - r[7] - refunded.get(r[1], 0) > 0
        )
        return rules.evaluate(
            program,
            rules.Transaction(time=occurred_at, items=basket, channel=channel),
            member,
            outlet,
            budgets=budgets,
        ).stamps

    before, after = stamps({}), stamps(wanted)
    taken = {card: n - after.get(card, 0) for card, n in before.items() if n - after.get(card, 0) > 0}
    if not taken:
        return
    cards = rules.compile_program(program).cards
    held = {card: n for card, n in await unit.fetch(_STAMPS, tenant_id, member_id)}
    unused = await unit.fetch(_VOUCHERS, tenant_id, member_id)
    for card, n in sorted(taken.items()):
        have = held.get(card, 0)
        for voucher_id, voucher_card in unused:
            if have >= n:
                break
            if voucher_card == card:
                booking.update("vouchers", voucher_id, set={"status": "revoked"}, member_id=member_id)
                have += cards[card][0]
        booking.upsert(
            "stamp_cards",
            (member_id, card),
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "card": card,
                "stamps": max(0, have - n),
                "updated_at": now,
            },
        )


async def refund(
    db: Database,
    tenant_id: int,
    transaction_id: int,
    *,
    now: datetime,
    lines: Mapping[int, int] | None = None,
    external_id: str | None = None,
    answer: Answer | None = None,
) -> RefundResult:
    """Return some items (``lines``: line index -> quantity) or everything left (``lines=None``)."""
    return (
        await refund_with_member(
            db, tenant_id, transaction_id, now=now, lines=lines, external_id=external_id, answer=answer
        )
    ).refund


async def refund_with_member(
    db: Database,
    tenant_id: int,
    transaction_id: int,
    *,
    now: datetime,
    lines: Mapping[int, int] | None = None,
    external_id: str | None = None,
    answer: Answer | None = None,
) -> Refunded:
    """:func:`refund`, with the member's figures after it (what a till shows)."""
    op = partial(_refund_unit, tenant_id, transaction_id, lines, external_id, now, answer)
    try:
        return await run(db, op, optimistic=True)
    except Duplicate as dup:
        if dup.table == "idempotency_records" and answer is not None:
            await answered_meanwhile(db, answer)
        if dup.table != "refunds":
            raise
        return await run(db, op)  # booked meanwhile under the same external id: read it back
