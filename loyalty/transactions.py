"""Posting purchases and refunding them.

Posting evaluates the basket with the version valid at ``occurred_at`` and writes, in one database
transaction: the transaction with its items and the evaluation (with explanation), one lot, a balanced
set of ledger entries, the member's projection, stamps, vouchers, rule usage and an upgrade of the
tier. The same (outlet, external id) posted again returns the first result and writes nothing: the
insert of the transaction row is ``ON CONFLICT DO NOTHING``, and on a conflict the whole transaction
is rolled back and the first posting is read back.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

import rules
from loyalty import ledger, programs, tiers
from loyalty.calendar import expiry_for, local_day
from loyalty.db import Database
from loyalty.errors import InvalidInput, NotFound
from loyalty.members import member_of_card
from loyalty.models import (
    LedgerEntry,
    LotDraw,
    Outlet,
    Partner,
    PointLot,
    Refund,
    RefundItem,
    RuleBudget,
    RuleUse,
    StampCard,
    Transaction,
    TransactionItem,
    UTCDateTime,
    Voucher,
)
from loyalty.models import Member as MemberRow

#: Longest external id a till may send (the column's size).
MAX_EXTERNAL_ID = 100


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


class AlreadyPosted(Exception):
    """The receipt (outlet, external id) was booked before; ``transaction_id`` is the first posting.

    Raised before anything of the new posting is written, so the caller may carry on in the same
    database transaction (an import batch) or roll back and read the first result (a till).
    """

    def __init__(self, transaction_id: int) -> None:
        super().__init__(transaction_id)
        self.transaction_id = transaction_id


async def _stamps(session: AsyncSession, tenant_id: int, member_id: int) -> dict[str, int]:
    rows = await session.execute(
        select(StampCard.card, StampCard.stamps).where(
            StampCard.tenant_id == tenant_id, StampCard.member_id == member_id
        )
    )
    return {card: n for card, n in rows.all()}


async def _rule_uses(
    session: AsyncSession, tenant_id: int, member_id: int, day: Any
) -> dict[str, tuple[int, int]]:
    rows = await session.execute(
        select(RuleUse.rule_id, RuleUse.uses, RuleUse.day, RuleUse.day_uses).where(
            RuleUse.tenant_id == tenant_id, RuleUse.member_id == member_id
        )
    )
    return {rule: (uses, day_uses if d == day else 0) for rule, uses, d, day_uses in rows.all()}


async def _budgets(
    session: AsyncSession, tenant_id: int, program_id: int, rule_ids: list[str]
) -> dict[str, int]:
    # Budgets are shared by all members: lock their rows so two postings cannot both spend the last points.
    rows = await session.execute(
        select(RuleBudget.rule_id, RuleBudget.points_used)
        .where(
            RuleBudget.tenant_id == tenant_id,
            RuleBudget.program_id == program_id,
            RuleBudget.rule_id.in_(rule_ids),
        )
        .order_by(RuleBudget.rule_id)
        .with_for_update()
    )
    return {rule: int(used) for rule, used in rows.all()}


def _validate(external_id: str, items: Sequence[rules.Item], occurred_at: datetime) -> None:
    if not external_id or len(external_id) > MAX_EXTERNAL_ID:
        raise InvalidInput(f"external_id must be 1 to {MAX_EXTERNAL_ID} characters")
    if occurred_at.tzinfo is None or occurred_at.utcoffset() is None:
        raise InvalidInput("occurred_at must carry a time zone")
    if len(items) > rules.engine.MAX_ITEMS:
        raise InvalidInput(f"a basket holds at most {rules.engine.MAX_ITEMS} lines")
    for i, item in enumerate(items):
        if item.quantity <= 0 or item.unit_price < 0:
            raise InvalidInput(f"item {i}: quantity must be positive and unit_price not negative")


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
) -> Posting:
    """Post a purchase for a member (by id, or by card number or card id; a blank card is bound on
    first use). A scanned token names the card id, so the till's post needs no separate card lookup."""
    _validate(external_id, items, occurred_at)
    if sum(x is not None for x in (member_id, card_number, card_id)) != 1:
        raise InvalidInput("give exactly one of member_id, card_number and card_id")
    try:
        async with db.write() as s:
            if member_id is None:
                member_id = await member_of_card(s, tenant_id, card_number, now, card_id=card_id)
            assert member_id is not None
            return await post_in_session(
                s,
                db.dialect,
                tenant_id,
                member_id,
                outlet_id,
                external_id,
                occurred_at,
                tuple(items),
                now,
                channel,
            )
    except AlreadyPosted as replay:
        async with db.read() as s:
            first = await _posting(s, tenant_id, replay.transaction_id)
        return dataclasses.replace(first, replayed=True)


# The hot path runs prebuilt Core statements with bound parameters: SQLAlchemy compiles each once and
# reuses it, and the ORM's per-statement bookkeeping is skipped (it was most of a posting's cost).
_TX, _ITEMS, _LOTS, _ENTRIES, _MEMBERS = (
    cast(Table, Transaction.__table__),
    cast(Table, TransactionItem.__table__),
    cast(Table, PointLot.__table__),
    cast(Table, LedgerEntry.__table__),
    cast(Table, MemberRow.__table__),
)
_INSERT_TX = {
    dialect: (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_TX)
    .on_conflict_do_nothing(index_elements=["tenant_id", "outlet_id", "external_id"])
    .returning(_TX.c.id)
    for dialect in ("postgresql", "sqlite")
}
_INSERT_ITEMS = insert(_ITEMS)
_INSERT_LOT = insert(_LOTS)
_INSERT_ENTRIES = insert(_ENTRIES)
_OUTLET = (
    select(Outlet.code, Partner.code, Outlet.tags)
    .join(Partner, Partner.id == Outlet.partner_id)
    .where(Outlet.tenant_id == bindparam("tenant"), Outlet.id == bindparam("outlet"))
)
_AT = bindparam("at", type_=UTCDateTime())
_TIER = bindparam("tier", type_=String())
_UPDATE_MEMBER = (
    update(_MEMBERS)
    .where(_MEMBERS.c.id == bindparam("member"))
    .values(
        visits=_MEMBERS.c.visits + 1,
        last_visit_at=case(
            (or_(_MEMBERS.c.last_visit_at.is_(None), _MEMBERS.c.last_visit_at < _AT), _AT),
            else_=_MEMBERS.c.last_visit_at,
        ),
        pending=_MEMBERS.c.pending + bindparam("add_pending"),
        available=_MEMBERS.c.available + bindparam("add_available"),
        tier=func.coalesce(_TIER, _MEMBERS.c.tier),
        tier_since=case(
            (_TIER.is_(None), _MEMBERS.c.tier_since), else_=bindparam("now", type_=UTCDateTime())
        ),
    )
)


class _OutletCache:
    """What rules see of an outlet (code, partner, tags), remembered per process: it is read on every
    posting and changes rarely. An edit reaches postings within ``OUTLET_CACHE_SECONDS``."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[int, int], tuple[float, rules.Outlet]] = {}

    def get(self, key: tuple[int, int]) -> rules.Outlet | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def put(self, key: tuple[int, int], outlet: rules.Outlet) -> rules.Outlet:
        if len(self._entries) > 100_000:  # bounded: forget everything rather than grow without end
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, outlet)
        return outlet


OUTLET_CACHE_SECONDS = 60.0
_outlets = _OutletCache(OUTLET_CACHE_SECONDS)


async def post_in_session(
    s: AsyncSession,
    dialect: str,
    tenant_id: int,
    member_id: int,
    outlet_id: int,
    external_id: str,
    occurred_at: datetime,
    items: tuple[rules.Item, ...],
    now: datetime,
    channel: str,
) -> Posting:
    """Book one purchase inside the caller's write transaction (the till's, or an import batch's).

    The member row is locked first; AlreadyPosted means the receipt was booked before and nothing
    of this posting was written.
    """
    _validate(external_id, items, occurred_at)
    conn = await s.connection()
    outlet = _outlets.get((tenant_id, outlet_id))
    if outlet is None:
        row = (await conn.execute(_OUTLET, {"tenant": tenant_id, "outlet": outlet_id})).first()
        if row is None:
            raise NotFound(f"outlet {outlet_id} not found")
        outlet = _outlets.put(
            (tenant_id, outlet_id), rules.Outlet(id=row[0], partner=row[1], tags=tuple(row[2]))
        )
    priced = await programs.version_at(s, tenant_id, occurred_at)
    program = priced.program
    policy = program.document.points
    member = await ledger.lock_member(s, tenant_id, member_id)
    day = local_day(occurred_at, program.zone)
    has_stamps = any(r.kind == "stamp" for r in program.rules)
    limited = [r.id for r in program.rules if r.limited]
    budgeted = [r.id for r in program.rules if r.budget is not None]
    stamps = await _stamps(s, tenant_id, member_id) if has_stamps else {}
    uses = await _rule_uses(s, tenant_id, member_id, day) if limited else {}
    budgets = await _budgets(s, tenant_id, priced.program_id, budgeted) if budgeted else {}
    tier = tiers.known_tier(program, member.tier)
    result = rules.evaluate(
        program,
        rules.Transaction(time=occurred_at, items=items, channel=channel),
        rules.Member(
            id=str(member_id),
            tier=tier,
            points=member.available,
            visits=member.visits,
            last_visit_at=member.last_visit_at,
            enrolled_at=member.enrolled_at,
            tags=tuple(member.tags),
            stamps=stamps,
            rule_uses=uses,
        ),
        outlet,
        now=occurred_at,
        explain=True,
        budgets=budgets,
    )
    evaluation = result.as_dict()
    amount = sum(i.unit_price * i.quantity for i in items)
    points = result.total

    tx_id = (
        await conn.execute(
            _INSERT_TX[dialect],
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "outlet_id": outlet_id,
                "external_id": external_id,
                "channel": channel,
                "occurred_at": occurred_at,
                "posted_at": now,
                "program_version_id": priced.version_id,
                "amount": amount,
                "points": points,
                "amount_refunded": 0,
                "points_refunded": 0,
                "evaluation": evaluation,
            },
        )
    ).scalar()
    if tx_id is None:
        existing = await s.scalar(
            select(Transaction.id).where(
                Transaction.tenant_id == tenant_id,
                Transaction.outlet_id == outlet_id,
                Transaction.external_id == external_id,
            )
        )
        assert existing is not None
        raise AlreadyPosted(existing)

    item_points = result.items
    await conn.execute(
        _INSERT_ITEMS,
        [
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "transaction_id": tx_id,
                "line": i,
                "sku": it.sku,
                "category": it.category,
                "tags": list(it.tags),
                "unit_price": it.unit_price,
                "quantity": it.quantity,
                "points": item_points[i].points,
                "refunded_quantity": 0,
            }
            for i, it in enumerate(items)
        ],
    )

    pending_until = occurred_at + timedelta(days=policy.pending_days)
    expires_at = expiry_for(occurred_at, policy.expire_after_months, program.zone)
    state = "pending" if pending_until > now else "available"
    if points > 0:
        await conn.execute(
            _INSERT_LOT,
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "transaction_id": tx_id,
                "adjustment_id": None,
                "state": state,
                "earned": points,
                "remaining": points,
                "expired": 0,
                "created_at": now,
                "pending_until": pending_until,
                "expires_at": expires_at,
            },
        )
        await conn.execute(
            _INSERT_ENTRIES,
            [
                {
                    "tenant_id": tenant_id,
                    "member_id": member_id,
                    "account": account,
                    "amount": amount_,
                    "cause": "earn",
                    "ref_id": tx_id,
                    "created_at": now,
                }
                for account, amount_ in ((ledger.ACCOUNT_OF_STATE[state], points), (ledger.ISSUED, -points))
            ],
        )

    new_tier = await tiers.upgrade_on_earn(s, tenant_id, member, program, occurred_at, points, amount, now)
    pending = points if state == "pending" else 0
    await conn.execute(
        _UPDATE_MEMBER,
        {
            "member": member_id,
            "at": occurred_at,
            "add_pending": pending,
            "add_available": points - pending,
            "tier": new_tier,
            "now": now,
        },
    )
    if state == "available" and points > 0 and member.debt > 0:
        member.available += points
        await ledger.settle_debt(s, tenant_id, member, cause="earn", ref_id=tx_id, at=now)

    voucher_ids = await _stamp_cards(s, tenant_id, member_id, program, stamps, result, tx_id, now)
    if limited:
        await _count_uses(s, tenant_id, member_id, result, set(limited), uses, day)
    if budgeted:
        await _spend_budgets(s, tenant_id, priced.program_id, result, set(budgeted), budgets)
    return Posting(
        tx_id,
        member_id,
        outlet_id,
        external_id,
        occurred_at,
        priced.version_id,
        amount,
        points,
        pending_until,
        expires_at,
        voucher_ids,
        evaluation,
    )


async def _stamp_cards(
    s: AsyncSession,
    tenant_id: int,
    member_id: int,
    program: rules.CheckedProgram,
    before: Mapping[str, int],
    result: rules.Result,
    tx_id: int,
    now: datetime,
) -> tuple[int, ...]:
    if not result.stamps:
        return ()
    cards = rules.compile_program(program).cards
    after = result.stamp_cards
    vouchers: list[dict[str, Any]] = []
    for card, added in result.stamps.items():
        reward_at, reward = cards[card]
        full = (before.get(card, 0) + added) // reward_at
        vouchers += [
            {
                "tenant_id": tenant_id,
                "member_id": member_id,
                "reward_code": reward,
                "card": card,
                "status": "issued",
                "transaction_id": tx_id,
                "issued_at": now,
            }
        ] * full
        if card in before:
            await s.execute(
                update(StampCard)
                .where(
                    StampCard.tenant_id == tenant_id, StampCard.member_id == member_id, StampCard.card == card
                )
                .values(stamps=after[card], updated_at=now)
            )
        else:
            await s.execute(
                insert(StampCard).values(
                    tenant_id=tenant_id, member_id=member_id, card=card, stamps=after[card], updated_at=now
                )
            )
    if not vouchers:
        return ()
    ids = await s.scalars(insert(Voucher).returning(Voucher.id, sort_by_parameter_order=True), vouchers)
    return tuple(ids.all())


async def _count_uses(
    s: AsyncSession,
    tenant_id: int,
    member_id: int,
    result: rules.Result,
    limited: set[str],
    before: Mapping[str, tuple[int, int]],
    day: Any,
) -> None:
    for rp in result.rules:
        if rp.rule not in limited or rp.applications <= 0:
            continue
        ever, today = before.get(rp.rule, (0, 0))
        values = {"uses": ever + rp.applications, "day": day, "day_uses": today + rp.applications}
        exists = await s.scalar(
            select(RuleUse.id).where(
                RuleUse.tenant_id == tenant_id, RuleUse.member_id == member_id, RuleUse.rule_id == rp.rule
            )
        )
        if exists is None:
            await s.execute(
                insert(RuleUse).values(tenant_id=tenant_id, member_id=member_id, rule_id=rp.rule, **values)
            )
        else:
            await s.execute(update(RuleUse).where(RuleUse.id == exists).values(**values))


async def _spend_budgets(
    s: AsyncSession,
    tenant_id: int,
    program_id: int,
    result: rules.Result,
    budgeted: set[str],
    before: Mapping[str, int],
) -> None:
    for rp in result.rules:
        if rp.rule not in budgeted or rp.points <= 0:
            continue
        used = math.ceil(rp.points)  # budgets are whole points; round against the rule
        if rp.rule in before:
            await s.execute(
                update(RuleBudget)
                .where(
                    RuleBudget.tenant_id == tenant_id,
                    RuleBudget.program_id == program_id,
                    RuleBudget.rule_id == rp.rule,
                )
                .values(points_used=RuleBudget.points_used + used)
            )
        else:
            await s.execute(
                insert(RuleBudget).values(
                    tenant_id=tenant_id, program_id=program_id, rule_id=rp.rule, points_used=used
                )
            )


async def _posting(s: AsyncSession, tenant_id: int, transaction_id: int) -> Posting:
    tx = await s.scalar(
        select(Transaction).where(Transaction.tenant_id == tenant_id, Transaction.id == transaction_id)
    )
    if tx is None:
        raise NotFound(f"transaction {transaction_id} not found")
    lot = (
        await s.execute(
            select(PointLot.pending_until, PointLot.expires_at).where(PointLot.transaction_id == tx.id)
        )
    ).first()
    vouchers = (
        await s.scalars(select(Voucher.id).where(Voucher.transaction_id == tx.id).order_by(Voucher.id))
    ).all()
    pending_until, expires_at = lot if lot is not None else (tx.occurred_at, None)
    return Posting(
        tx.id,
        tx.member_id,
        tx.outlet_id,
        tx.external_id,
        tx.occurred_at,
        tx.program_version_id,
        tx.amount,
        tx.points,
        pending_until,
        expires_at,
        tuple(vouchers),
        tx.evaluation,
    )


async def get_transaction(db: Database, tenant_id: int, transaction_id: int) -> Posting:
    async with db.read() as s:
        return await _posting(s, tenant_id, transaction_id)


async def find_transaction(db: Database, tenant_id: int, outlet_id: int, external_id: str) -> Posting:
    """A transaction by the till's own id (what a till knows when it processes a return)."""
    async with db.read() as s:
        tx_id = await s.scalar(
            select(Transaction.id).where(
                Transaction.tenant_id == tenant_id,
                Transaction.outlet_id == outlet_id,
                Transaction.external_id == external_id,
            )
        )
        if tx_id is None:
            raise NotFound(f"transaction {external_id!r} not found at outlet {outlet_id}")
        return await _posting(s, tenant_id, tx_id)


# ---------------------------------------------------------------------------------------------------
# Refunds


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


def _line_points(points: int, quantity: int, before: int, now_refunded: int) -> int:
    """Points of a line to reverse so that refunds of a line always add up to exactly its points."""
    return points * now_refunded // quantity - points * before // quantity


async def refund(
    db: Database,
    tenant_id: int,
    transaction_id: int,
    *,
    now: datetime,
    lines: Mapping[int, int] | None = None,
    external_id: str | None = None,
) -> RefundResult:
    """Return some items (``lines``: line index -> quantity) or everything left (``lines=None``).

    The points of the returned items are taken back: first from the purchase's own lot, then from the
    member's other available points (nearest expiry first); what had been spent becomes debt, which
    later points pay off first. Rewards redeemed with the purchase stay redeemed. Transaction-level
    fixed points (a win-back bonus) go back only when the whole purchase is returned.
    """
    async with db.write() as s:
        head = (
            await s.execute(
                select(Transaction.member_id).where(
                    Transaction.tenant_id == tenant_id, Transaction.id == transaction_id
                )
            )
        ).first()
        if head is None:
            raise NotFound(f"transaction {transaction_id} not found")
        member = await ledger.lock_member(s, tenant_id, head[0])
        if external_id is not None:
            done = await s.scalar(
                select(Refund).where(
                    Refund.tenant_id == tenant_id,
                    Refund.transaction_id == transaction_id,
                    Refund.external_id == external_id,
                )
            )
            if done is not None:
                got = (
                    await s.execute(
                        select(RefundItem.line, RefundItem.quantity).where(RefundItem.refund_id == done.id)
                    )
                ).all()
                return RefundResult(
                    done.id,
                    transaction_id,
                    member.id,
                    done.points,
                    done.debt,
                    done.amount,
                    {line: q for line, q in got},
                    replayed=True,
                )
        tx = await s.scalar(select(Transaction).where(Transaction.id == transaction_id))
        assert tx is not None
        rows = (
            await s.scalars(
                select(TransactionItem)
                .where(TransactionItem.transaction_id == tx.id)
                .order_by(TransactionItem.line)
            )
        ).all()
        by_line = {r.line: r for r in rows}
        wanted = (
            dict(lines)
            if lines is not None
            else {r.line: r.quantity - r.refunded_quantity for r in rows if r.quantity > r.refunded_quantity}
        )
        if not wanted or any(q <= 0 for q in wanted.values()):
            raise InvalidInput("nothing to refund: give positive quantities of the purchase's lines")
        points = amount = 0
        per_line: dict[int, int] = {}
        for line, qty in sorted(wanted.items()):
            row = by_line.get(line)
            if row is None:
                raise InvalidInput(f"the purchase has no line {line}")
            if row.refunded_quantity + qty > row.quantity:
                raise InvalidInput(
                    f"line {line}: refunding {qty} more than was bought "
                    f"({row.quantity - row.refunded_quantity} left to refund)"
                )
            per_line[line] = _line_points(
                row.points, row.quantity, row.refunded_quantity, row.refunded_quantity + qty
            )
            points += per_line[line]
            amount += row.unit_price * qty
        all_back = all(r.refunded_quantity + wanted.get(r.line, 0) == r.quantity for r in rows)
        if all_back:  # the remainder: transaction-level fixed points and nothing else
            points = tx.points - tx.points_refunded
        refund_id = await s.scalar(
            insert(Refund)
            .values(
                tenant_id=tenant_id,
                member_id=member.id,
                transaction_id=tx.id,
                external_id=external_id,
                points=points,
                amount=amount,
                debt=0,
                created_at=now,
            )
            .returning(Refund.id)
        )
        assert refund_id is not None
        await s.execute(
            insert(RefundItem),
            [
                {
                    "tenant_id": tenant_id,
                    "member_id": member.id,
                    "refund_id": refund_id,
                    "line": line,
                    "quantity": qty,
                    "points": per_line[line],
                }
                for line, qty in sorted(wanted.items())
            ],
        )
        for line, qty in wanted.items():
            await s.execute(
                update(TransactionItem)
                .where(TransactionItem.id == by_line[line].id)
                .values(refunded_quantity=TransactionItem.refunded_quantity + qty)
            )
        await s.execute(
            update(Transaction)
            .where(Transaction.id == tx.id)
            .values(
                points_refunded=Transaction.points_refunded + points,
                amount_refunded=Transaction.amount_refunded + amount,
            )
        )
        debt = await _reverse_points(s, tenant_id, member, tx.id, points, refund_id, now)
        if debt:
            await s.execute(update(Refund).where(Refund.id == refund_id).values(debt=debt))
        return RefundResult(
            refund_id,
            tx.id,
            member.id,
            points,
            debt,
            amount,
            {line: qty for line, qty in sorted(wanted.items())},
        )


async def _reverse_points(
    s: AsyncSession,
    tenant_id: int,
    member: ledger.MemberState,
    tx_id: int,
    points: int,
    refund_id: int,
    now: datetime,
) -> int:
    """Take ``points`` back: own lot, then other available lots, then debt. Returns the debt part."""
    if points <= 0:
        return 0
    moves = {ledger.ISSUED: points, ledger.PENDING: 0, ledger.AVAILABLE: 0, ledger.DEBT: 0}
    left = points
    lot = (
        await s.execute(
            select(PointLot.id, PointLot.state, PointLot.remaining).where(
                PointLot.transaction_id == tx_id, PointLot.state != "expired"
            )
        )
    ).first()
    if lot is not None and lot.remaining > 0:
        take = min(left, lot.remaining)
        await s.execute(
            update(PointLot).where(PointLot.id == lot.id).values(remaining=PointLot.remaining - take)
        )
        await s.execute(
            insert(LotDraw).values(
                tenant_id=tenant_id,
                member_id=member.id,
                lot_id=lot.id,
                amount=take,
                cause="refund",
                ref_id=refund_id,
                created_at=now,
            )
        )
        moves[ledger.ACCOUNT_OF_STATE[lot.state]] -= take
        left -= take
    from_available = min(left, member.available + moves[ledger.AVAILABLE])
    if from_available > 0:
        await ledger.draw_lots(
            s, tenant_id, member.id, from_available, cause="refund", ref_id=refund_id, at=now
        )
        moves[ledger.AVAILABLE] -= from_available
        left -= from_available
    moves[ledger.DEBT] = -left
    await s.execute(
        update(MemberRow)
        .where(MemberRow.id == member.id)
        .values(
            available=MemberRow.available + moves[ledger.AVAILABLE],
            pending=MemberRow.pending + moves[ledger.PENDING],
            debt=MemberRow.debt + left,
        )
    )
    await ledger.add_entries(s, tenant_id, member.id, cause="refund", ref_id=refund_id, at=now, moves=moves)
    return left


async def transaction_count(db: Database, tenant_id: int) -> int:
    async with db.read() as s:
        return int(
            await s.scalar(
                select(func.count()).select_from(Transaction).where(Transaction.tenant_id == tenant_id)
            )
            or 0
        )
