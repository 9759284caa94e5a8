"""Set-based sweeps over a tenant's lots and members: release, expiry, tier evaluation.

They run inside a locked unit of work (:func:`loyalty.ledger.run`) and keep the ledger's guarantees
in bulk: a lot is touched by one UPDATE over all due lots, the entries are one INSERT ... SELECT per
sweep (one balanced pair per member and source account), the balances one UPDATE ... FROM, and every
member changed gets a new revision, so an optimistic write that read them before fails and retries.

* PostgreSQL: the sweeps of a tenant take one transaction-level advisory lock (two never overlap),
  then lock the affected members' rows in id order before touching lots. Every operation on a member
  locks or re-checks the member row too, so nobody deadlocks and nobody changes a lot in between.
* SQLite: writers are serialised by the database (``BEGIN IMMEDIATE`` on the writer thread).

Expiry only ever takes what a lot still holds (``remaining``), pending lots included (a lot still
in its return window at its expiry date expires then, not after its release), so spent points stay
spent and a balance never collapses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import rules
from loyalty.calendar import window_start
from loyalty.ledger.book import AVAILABLE, EXPIRED, PENDING, Booking
from loyalty.ledger.reads import available_lots, member
from loyalty.ledger.store import Unit
from loyalty.programs import tiers
from loyalty.storage.outbox import CATALOGUE

#: First key of the advisory lock the sweeps of one tenant share ("LOY" in ASCII).
ADVISORY_LOCK_CLASS = 0x4C4F59


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep changed: members, lots and points."""

    members: int
    lots: int
    points: int


async def lock_tenant(unit: Unit, tenant_id: int) -> None:
    if unit.dialect == "postgresql":
        await unit.fetchval(
            "SELECT pg_advisory_xact_lock($1, CAST($2 AS integer))", ADVISORY_LOCK_CLASS, tenant_id
        )


async def _move(
    unit: Unit,
    tenant_id: int,
    run_id: int,
    now: datetime,
    *,
    due: str,
    set_lot: str,
    moved: str,
    cause: str,
    debit: str,
    credit: str,
    balance: str,
    event: str,
) -> Swept:
    """Move the due lots' points from ``debit`` to ``credit``: lots, entries, balances and one
    ``event`` per member (points and lots) at once."""
    version = CATALOGUE[event].version
    agg = (
        "SELECT member_id, SUM(remaining) AS pts, COUNT(*) AS n FROM point_lots"
        f" WHERE {due} GROUP BY member_id"
    )
    if unit.dialect == "postgresql":
        await unit.fetch(
            "SELECT id FROM members WHERE tenant_id = $1 AND id IN"
            f" (SELECT member_id FROM point_lots WHERE {due}) ORDER BY id FOR UPDATE",
            tenant_id,
            now,
        )
        row = await unit.fetchrow(
            f"""
            WITH moved AS (
                UPDATE point_lots SET {set_lot} WHERE {due} RETURNING member_id, {moved} AS pts
            ), agg AS (
                SELECT member_id, SUM(pts) AS pts, COUNT(*) AS n FROM moved GROUP BY member_id
            ), entries AS (
                INSERT INTO ledger_entries (tenant_id, member_id, account, amount, cause, ref_id, created_at)
                SELECT $1, agg.member_id, acc.account, acc.sign * agg.pts, '{cause}', $3, $2
                FROM agg CROSS JOIN (VALUES ('{debit}', -1), ('{credit}', 1)) AS acc(account, sign)
                WHERE agg.pts > 0
            ), balances AS (
                UPDATE members SET {balance}, revision = members.revision + 1 FROM agg
                WHERE members.tenant_id = $1 AND members.id = agg.member_id
            ), events AS (
                INSERT INTO events (tenant_id, member_id, type, version, occurred_at, data)
                SELECT $1, agg.member_id, '{event}', {version}, $2,
                       jsonb_build_object('points', agg.pts, 'lots', agg.n)
                FROM agg WHERE agg.pts > 0
            )
            SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(SUM(pts), 0) FROM agg""",
            tenant_id,
            now,
            run_id,
        )
    else:
        row = await unit.fetchrow(
            f"SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(SUM(pts), 0) FROM ({agg})", tenant_id, now
        )
        if row is not None and row[0]:
            await unit.execute(
                f"""
                INSERT INTO ledger_entries (tenant_id, member_id, account, amount, cause, ref_id, created_at)
                SELECT $1, agg.member_id, acc.account, acc.sign * agg.pts, '{cause}', $3, $2
                FROM ({agg}) AS agg CROSS JOIN (SELECT '{debit}' AS account, -1 AS sign
                                                UNION ALL SELECT '{credit}', 1) AS acc
                WHERE agg.pts > 0""",
                tenant_id,
                now,
                run_id,
            )
            await unit.execute(
                f"UPDATE members SET {balance}, revision = members.revision + 1 FROM ({agg}) AS agg"
                " WHERE members.tenant_id = $1 AND members.id = agg.member_id",
                tenant_id,
                now,
            )
            await unit.execute(
                "INSERT INTO events (tenant_id, member_id, type, version, occurred_at, data)"
                f" SELECT $1, agg.member_id, '{event}', {version}, $2,"
                f" json_object('points', agg.pts, 'lots', agg.n) FROM ({agg}) AS agg WHERE agg.pts > 0",
                tenant_id,
                now,
            )
            await unit.execute(f"UPDATE point_lots SET {set_lot} WHERE {due}", tenant_id, now)
    assert row is not None
    return Swept(int(row[0]), int(row[1]), int(row[2]))


async def release(unit: Unit, tenant_id: int, run_id: int, now: datetime) -> Swept:
    """Pending lots whose return window has passed become available; debts are paid from them first."""
    swept = await _move(
        unit,
        tenant_id,
        run_id,
        now,
        due="tenant_id = $1 AND state = 'pending' AND pending_until <= $2",
        set_lot="state = 'available'",
        moved="remaining",
        cause="release",
        debit=PENDING,
        credit=AVAILABLE,
        balance="pending = members.pending - agg.pts, available = members.available + agg.pts",
        event="points.released",
    )
    # Members in debt are rare: settle them one by one, through the same booking as everywhere else.
    indebted = await unit.fetch(
        "SELECT id FROM members WHERE tenant_id = $1 AND debt > 0 AND available > 0 ORDER BY id", tenant_id
    )
    if indebted:
        booking = Booking(tenant_id, now)
        for (member_id,) in indebted:
            # An erased member's debt (a refund of their purchase) is settled like anyone's.
            holder = (await member(unit, tenant_id, member_id, closed=True)).holder
            lots = await available_lots(unit, tenant_id, member_id)
            booking.settle_debt(holder, lots, cause="release", ref_id=run_id)
        await unit.apply(booking)
    return swept


async def expire(unit: Unit, tenant_id: int, run_id: int, now: datetime) -> Swept:
    """Lots past their expiry lose what they still hold, available or still pending."""
    total = Swept(0, 0, 0)
    for state, account, column in (("available", AVAILABLE, "available"), ("pending", PENDING, "pending")):
        swept = await _move(
            unit,
            tenant_id,
            run_id,
            now,
            due=f"tenant_id = $1 AND state = '{state}' AND expires_at <= $2",
            set_lot="expired = remaining, remaining = 0, state = 'expired'",
            moved="expired",
            cause="expiry",
            debit=account,
            credit=EXPIRED,
            balance=f"{column} = members.{column} - agg.pts",
            event="points.expired",
        )
        total = Swept(total.members + swept.members, total.lots + swept.lots, total.points + swept.points)
    return total


_MEASURE = {
    "points": "q.points - q.points_refunded",
    "spend": "q.amount - q.amount_refunded",
    "visits": "CASE WHEN q.amount_refunded < q.amount OR q.amount = 0 THEN 1 ELSE 0 END",
}


def _targets(
    program: rules.CheckedProgram, now: datetime, params: list[Any], ids: list[int] | None = None
) -> str:
    """Per member of the tenant: current tier, qualifying figure over the window, the tier it gives."""
    policy = program.document.tiers
    assert policy is not None
    ladder = tiers.levels(program)

    def p(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    levels = " ".join(
        f"WHEN COALESCE(v.value, 0) >= {p(lv.threshold)} THEN {p(lv.name)}" for lv in reversed(ladder)
    )
    return (
        f"SELECT m.id AS member_id, m.tier AS tier, COALESCE(v.value, 0) AS value,"
        f" CASE {levels} ELSE {p(ladder[0].name)} END AS target"
        " FROM members m LEFT JOIN ("
        f"SELECT q.member_id, SUM({_MEASURE[policy.qualify_on]}) AS value FROM transactions q"
        f" WHERE q.tenant_id = $1"
        f" AND q.occurred_at > {p(window_start(now, policy.window_months, program.zone))}"
        f" AND q.occurred_at <= {p(now)} GROUP BY q.member_id) v ON v.member_id = m.id"
        # A closed member (merged, erased) is no longer evaluated: a merged account's purchases moved on.
        f" WHERE m.tenant_id = $1 AND m.state = 'active'"
        f"{'' if ids is None else f' AND m.id = ANY({p(ids)}::bigint[])'}"
    )


async def evaluate_tiers(unit: Unit, tenant_id: int, now: datetime, program: rules.CheckedProgram) -> int:
    """Every member's tier set to what the rolling window qualifies them for (both directions);
    returns the number of changes.

    On PostgreSQL the members whose tier changes are locked first, then their figures are computed
    again under that lock: a purchase that upgrades a member while the sweep runs either committed
    before (and is counted) or waits for the sweep and re-reads the member (never overwritten).
    """
    if program.document.tiers is None or not tiers.levels(program):
        return 0
    ids: list[int] | None = None
    if unit.dialect == "postgresql":
        params: list[Any] = [tenant_id]
        sql = _targets(program, now, params)
        locked = await unit.fetch(
            f"SELECT m.id FROM members m JOIN ({sql}) t ON t.member_id = m.id"
            " WHERE m.tenant_id = $1 AND COALESCE(t.tier, '') <> t.target ORDER BY m.id FOR UPDATE OF m",
            *params,
        )
        if not locked:
            return 0
        ids = [int(r[0]) for r in locked]
    params = [tenant_id]
    sql = _targets(program, now, params, ids)
    at = f"${len(params) + 1}"
    changed = await unit.execute(
        "INSERT INTO tier_history (tenant_id, member_id, from_tier, to_tier, reason, qualifying, at)"
        f" SELECT $1, t.member_id, t.tier, t.target, 'evaluation', t.value, {at} FROM ({sql}) t"
        " WHERE COALESCE(t.tier, '') <> t.target",
        *params,
        now,
    )
    if changed:
        build = "jsonb_build_object" if unit.dialect == "postgresql" else "json_object"
        await unit.execute(
            "INSERT INTO events (tenant_id, member_id, type, version, occurred_at, data)"
            f" SELECT $1, t.member_id, 'tier.changed', {CATALOGUE['tier.changed'].version}, {at},"
            f" {build}('from_tier', t.tier, 'to_tier', t.target, 'reason', 'evaluation',"
            " 'qualifying', t.value)"
            f" FROM ({sql}) t WHERE COALESCE(t.tier, '') <> t.target",
            *params,
            now,
        )
        await unit.execute(
            f"UPDATE members SET tier = t.target, tier_since = {at}, revision = members.revision + 1"
            f" FROM ({sql}) t WHERE members.tenant_id = $1 AND members.id = t.member_id"
            " AND COALESCE(members.tier, '') <> t.target",
            *params,
            now,
        )
    return changed
