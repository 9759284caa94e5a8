"""One person, one account: a second account of the same member merged into the first.

A merge is one ledger operation, run locked (both member rows, lowest id first, so two merges never
deadlock), and written in one transaction. What the source held becomes the target's:

* **Points, as lots.** Every lot of the source changes owner as it is: the same lot, purchase, state,
  pending and expiry dates. So the merged points are spent nearest expiry first among the target's
  own, released and expired on their own dates, and a later return of a source purchase finds its
  own lot. The balances move by a balanced set of ``adjustment`` entries per member (an
  :class:`~loyalty.storage.models.Adjustment` row each, whose reason names the other member, with
  the actor), so each member's balances still equal the sum of their entries: the source's sum to
  nothing, and ``loyalty audit`` stays clean. Entries and lot draws are append-only and never change
  owner: they are the source's history of how it came to hold what it handed over.
* **Debt.** What the source owed, the target owes (its own ``adjustment`` set), paid at once from the
  target's available points, as any debt is paid first.
* **Purchase history.** Cards, transactions with their items, refunds, redemptions and vouchers move
  to the target (their ``member_id`` changes): a return or a cancellation of a source purchase then
  books on the account that holds its lot, the tier window counts the person's whole spend, and
  posting with a source card books on the target. Stamps add up per stamp card, rule uses add up,
  visits add up (the later last visit stays), and the target keeps the higher tier of the two (a
  ``merge`` row in its tier history).
* **What stays on the source**: its ledger entries and draws, adjustments, tier history, consents,
  segment history and events, as its own record. The source ends ``merged`` (``merged_into`` names the
  target, ``closed_at`` the moment), holding nothing.

Events: ``member.merged`` on both members (the same data: the target's id and the points moved), so a
system that follows either account learns of it; ``tier.changed`` on the target if its tier rose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

from loyalty.errors import Conflict, InvalidInput, NotFound
from loyalty.ledger import Booking, Lot, reads, run
from loyalty.ledger.reads import MemberRow
from loyalty.ledger.store import Unit
from loyalty.members.membership import MemberView
from loyalty.programs import tiers, versions
from loyalty.storage import audit_log, outbox
from loyalty.storage.db import Database

#: Rows that follow the person to the account that stays (the source's purchase history and cards).
MOVED = ("cards", "transactions", "transaction_items", "refunds", "refund_items", "redemptions", "vouchers")

_STATE = "SELECT state FROM members WHERE tenant_id = $1 AND id = $2"
_OPEN_LOTS = (
    "SELECT id, member_id, state, remaining, expired, expires_at FROM point_lots"
    " WHERE tenant_id = $1 AND member_id = $2 AND state IN ('available', 'pending') AND remaining > 0"
)
_CARDS = "SELECT number FROM cards WHERE tenant_id = $1 AND member_id = $2 ORDER BY id"
_STAMPS = "SELECT id, member_id, card, stamps FROM stamp_cards WHERE tenant_id = $1 AND member_id IN ($2, $3)"
_USES = "SELECT rule_id, uses FROM rule_uses WHERE tenant_id = $1 AND member_id = $2 AND uses > 0"
_DAY_USES = (
    "SELECT rule_id, day, uses FROM rule_day_uses WHERE tenant_id = $1 AND member_id = $2 AND uses > 0"
)


@dataclass(frozen=True, slots=True)
class MergeResult:
    source_id: int
    target_id: int
    #: Points that changed hands (available and pending), and the debt the target took over.
    points_moved: int
    debt_moved: int
    #: Printed numbers of the cards that now belong to the target.
    cards_moved: tuple[str, ...]
    #: The target as the merge left it.
    member: MemberView


async def _active(unit: Unit, tenant_id: int, member_id: int, role: str) -> None:
    state = await unit.fetchval(_STATE, tenant_id, member_id)
    if state != "active":
        raise Conflict(f"member {member_id} is {state}: only an active member can be {role}")


def _higher_tier(levels: list[str], target: str | None, source: str | None) -> str | None:
    """The source's tier when it ranks above the target's (no tier, or one the program no longer
    has, ranks lowest), else None: the target keeps its own."""

    def rank(tier: str | None) -> int:
        return levels.index(tier) if tier in levels else -1

    return source if rank(source) > rank(target) else None


async def _tier_levels(unit: Unit, tenant_id: int, now: datetime) -> list[str]:
    try:
        _, program = await versions.in_force(unit, tenant_id, now)
    except NotFound:
        return []
    return [level.name for level in tiers.levels(program)]


async def _load(unit: Unit, tenant_id: int, source_id: int, target_id: int) -> tuple[MemberRow, MemberRow]:
    """Both members, locked lowest id first (two merges never deadlock), then their states, which
    nobody can change meanwhile."""
    rows: dict[int, MemberRow] = {}
    for member_id in sorted((source_id, target_id)):
        rows[member_id] = await reads.member(unit, tenant_id, member_id)
    await _active(unit, tenant_id, source_id, "merged")
    await _active(unit, tenant_id, target_id, "merged into")
    return rows[source_id], rows[target_id]


async def _adjustments(
    unit: Unit, booking: Booking, source: int, target: int, amounts: dict[str, int], actor: str
) -> dict[str, tuple[int, int]]:
    """An adjustment row per member for each kind of value that moves (``points``, ``debt``), the
    cause its entries name: kind -> (the source's adjustment id, the target's)."""
    moving = {kind: amount for kind, amount in amounts.items() if amount}
    ids = iter(await unit.next_ids("adjustments", 2 * len(moving)) if moving else [])
    refs: dict[str, tuple[int, int]] = {}
    for kind, amount in moving.items():
        refs[kind] = (next(ids), next(ids))
        for adjustment_id, member_id, points, reason in (
            (refs[kind][0], source, -amount, f"merged into member {target} ({kind})"),
            (refs[kind][1], target, amount, f"merged from member {source} ({kind})"),
        ):
            booking.insert(
                "adjustments",
                {
                    "id": adjustment_id,
                    "tenant_id": booking.tenant_id,
                    "member_id": member_id,
                    "points": points,
                    "reason": reason,
                    "actor": actor,
                    "created_at": booking.at,
                },
            )
    return refs


async def _book_balances(
    unit: Unit, booking: Booking, source: MemberRow, target: MemberRow, actor: str
) -> dict[str, tuple[int, int]]:
    """The points (as lots) and the debt change hands; the debt is then paid first."""
    src, tgt = source.holder, target.holder
    refs = await _adjustments(
        unit, booking, src.id, tgt.id, {"points": src.available + src.pending, "debt": -src.debt}, actor
    )
    lots = [
        Lot(r[0], r[1], r[2], r[3], r[4], unit.instant(r[5]))
        for r in await unit.fetch(_OPEN_LOTS, booking.tenant_id, src.id)
    ]
    out_ref, in_ref = refs.get("points", (0, 0))  # no points: the moves are empty, no entry names it
    booking.hand_over_lots(src, tgt, lots, cause="adjustment", source_ref=out_ref, target_ref=in_ref)
    if "debt" in refs:
        out_ref, in_ref = refs["debt"]
        booking.hand_over_debt(src, tgt, cause="adjustment", source_ref=out_ref, target_ref=in_ref)
    if tgt.debt and tgt.available:
        # From every lot the target now holds, its own and the source's, nearest expiry first.
        lots += await reads.available_lots(unit, booking.tenant_id, tgt.id)
        paid_from = refs.get("debt", refs.get("points"))
        assert paid_from is not None, "debt and points meet only when one of them moved"
        booking.settle_debt(tgt, lots, cause="adjustment", ref_id=paid_from[1])
    return refs


async def _book_tier(unit: Unit, booking: Booking, source: MemberRow, target: MemberRow) -> str | None:
    """Visits add up, the later last visit stays, and the target takes the source's tier if higher
    (a ``merge`` row in its tier history, a ``tier.changed`` event); returns that new tier."""
    levels = await _tier_levels(unit, booking.tenant_id, booking.at)
    tier = _higher_tier(levels, target.tier, source.tier)
    booking.absorb(
        target.holder,
        visits=source.visits,
        last_visit_at=source.last_visit_at,
        tier=tier,
        tier_since=booking.at if tier else None,
    )
    if tier is None:
        return None
    # No window figure decided it: the tier came with the merged account.
    change = {"from_tier": target.tier, "to_tier": tier, "reason": "merge", "qualifying": 0}
    booking.insert(
        "tier_history",
        {"tenant_id": booking.tenant_id, "member_id": target.holder.id, **change, "at": booking.at},
    )
    booking.insert(
        "events", outbox.row(booking.tenant_id, target.holder.id, "tier.changed", change, at=booking.at)
    )
    return tier


async def _merge_unit(
    tenant_id: int, source_id: int, target_id: int, actor: str, now: datetime, unit: Unit
) -> MergeResult:
    source, target = await _load(unit, tenant_id, source_id, target_id)
    points, debt = source.holder.available + source.holder.pending, source.holder.debt
    booking = Booking(tenant_id, now)
    refs = await _book_balances(unit, booking, source, target, actor)
    cards = tuple(str(r[0]) for r in await unit.fetch(_CARDS, tenant_id, source_id))
    for table in MOVED:
        booking.reassign(table, source_id, target_id)
    await _merge_counters(unit, booking, tenant_id, source_id, target_id, now)
    tier = await _book_tier(unit, booking, source, target)
    booking.close(source.holder, at=now, merged_into=target_id)

    merged = {"into_member_id": target_id, "points_moved": points}
    for member_id in (source_id, target_id):
        booking.insert("events", outbox.row(tenant_id, member_id, "member.merged", merged, at=now))
    details = {
        "into": target_id,
        "points": points,
        "debt": debt,
        "cards": list(cards),
        "adjustments": sorted(i for pair in refs.values() for i in pair),
    }
    booking.insert(
        "audit_log",
        audit_log.row(
            tenant_id,
            actor=actor,
            action="merge_members",
            entity="member",
            entity_id=source_id,
            at=now,
            details=details,
        ),
    )
    await unit.apply(booking)
    return MergeResult(source_id, target_id, points, debt, cards, _answer(source, target, tier))


def _answer(source: MemberRow, target: MemberRow, tier: str | None) -> MemberView:
    """The target as the merge left it (its holder's balances moved with the booking)."""
    h = target.holder
    last = max((t for t in (target.last_visit_at, source.last_visit_at) if t is not None), default=None)
    return MemberView(
        h.id, tier or target.tier, h.available, h.pending, h.debt, target.visits + source.visits, last,
        target.enrolled_at, target.tags,
    )  # fmt: skip


async def _merge_counters(
    unit: Unit, booking: Booking, tenant_id: int, source_id: int, target_id: int, now: datetime
) -> None:
    """Stamps add up per stamp card (the source's cards left empty); rule uses, ever and per day,
    add up, so a once-per-member rule the person already had does not apply again."""
    stamps: dict[str, int] = {}
    for row_id, member_id, card, count in await unit.fetch(_STAMPS, tenant_id, source_id, target_id):
        stamps[card] = stamps.get(card, 0) + int(count)
        if member_id == source_id and count:
            booking.update(
                "stamp_cards", int(row_id), set={"stamps": 0, "updated_at": now}, member_id=source_id
            )
    for card, count in sorted(stamps.items()):
        booking.upsert(
            "stamp_cards",
            (tenant_id, target_id, card),
            {
                "tenant_id": tenant_id,
                "member_id": target_id,
                "card": card,
                "stamps": count,
                "updated_at": now,
            },
        )
    for rule_id, uses in await unit.fetch(_USES, tenant_id, source_id):
        booking.upsert(
            "rule_uses",
            (tenant_id, target_id, rule_id),
            {"tenant_id": tenant_id, "member_id": target_id, "rule_id": rule_id, "uses": int(uses)},
        )
    for rule_id, day, uses in await unit.fetch(_DAY_USES, tenant_id, source_id):
        booking.upsert(
            "rule_day_uses",
            (tenant_id, target_id, rule_id, day),
            {
                "tenant_id": tenant_id,
                "member_id": target_id,
                "rule_id": rule_id,
                "day": day,
                "uses": int(uses),
            },
        )


async def merge(
    db: Database, tenant_id: int, source_id: int, *, into: int, actor: str, now: datetime
) -> MergeResult:
    """Merge member ``source_id`` into member ``into`` (see the module docstring). NotFound for a
    member of another tenant, InvalidInput for a member merged into itself, Conflict when either is
    not active (already merged, or erased)."""
    if source_id == into:
        raise InvalidInput("a member cannot be merged into itself")
    if not actor.strip():
        raise InvalidInput("a merge needs an actor")
    result: MergeResult = await run(db, partial(_merge_unit, tenant_id, source_id, into, actor, now))
    return result
