"""Merges of random histories, checked against what a merge must do, computed from the lots alone.

Two members live through random purchases (some still pending), adjustments, redemptions and returns
(some leaving debt); then one is merged into the other. The expectation is computed here, from the
lots and balances read before the merge, not from the merge's code: every lot keeps its id, purchase,
state and dates and belongs to the target; the combined debt is paid from the combined available
points nearest expiry first; the balances are what the lots then hold; the source holds nothing; the
books, the audit and the liability agree.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from loyalty.members import membership
from loyalty.members.merge import merge
from loyalty.ops import audit, jobs, reports
from loyalty.points import adjustments, redemptions, refunds, transactions
from loyalty.storage.db import Database
from tests.storage.conftest import NOW, World, basket, make_world
from tests.storage.invariants import violations

MERGED_AT = NOW + timedelta(hours=1)
#: One account's life: purchases (days ago, points; within the last 14 days still pending), an
#: adjustment, then how it spends (nothing, a cake, everything) and how many purchases it returns.
PLAN = st.tuples(
    st.lists(st.tuples(st.integers(0, 60), st.integers(1, 80)), max_size=4),
    st.integers(0, 50),
    st.sampled_from(["nothing", "cake", "everything"]),
    st.integers(0, 2),
)
Plan = tuple[list[tuple[int, int]], int, str, int]


#: (id, transaction id, adjustment id, state, remaining, pending_until, expires_at) by lot id.
Lots = dict[int, tuple[Any, ...]]


async def _snapshot(db: Database, tenant_id: int) -> tuple[dict[int, tuple[int, int, int]], dict[int, Lots]]:
    """Balances (available, pending, debt) and lots, by member."""
    async with db.read() as s:
        members = {
            int(r[0]): (int(r[1]), int(r[2]), int(r[3]))
            for r in await s.execute(
                text("SELECT id, available, pending, debt FROM members WHERE tenant_id = :t"),
                {"t": tenant_id},
            )
        }
        lots: dict[int, Lots] = {m: {} for m in members}
        for r in await s.execute(
            text(
                "SELECT member_id, id, transaction_id, adjustment_id, state, remaining, pending_until,"
                " expires_at FROM point_lots WHERE tenant_id = :t"
            ),
            {"t": tenant_id},
        ):
            lots[int(r[0])][int(r[1])] = tuple(r[1:])
    return members, lots


def _expected(
    source: tuple[int, int, int], target: tuple[int, int, int], lots: Lots
) -> tuple[tuple[int, int, int], Lots]:
    """The target's balances and lots after the merge: the debt paid nearest expiry first."""
    available, pending, debt = (s + t for s, t in zip(source, target, strict=True))
    pay = min(available, debt)
    after = dict(lots)
    left = pay
    for lot_id in sorted(
        (i for i, lot in lots.items() if lot[3] == "available" and lot[4] > 0),
        key=lambda i: (lots[i][6] is None, lots[i][6] or datetime.min, i),
    ):
        take = min(left, lots[lot_id][4])
        lot = list(after[lot_id])
        lot[4] -= take
        after[lot_id] = tuple(lot)
        left -= take
    return (available - pay, pending, debt - pay), after


async def _live(world: World, member: int, plan: Plan, tag: str) -> None:
    """Purchases and an adjustment at their own times; the release job; spending; then returns (a
    return of points already spent leaves debt)."""
    purchases, adjusted, spend, returns = plan
    bought = []
    for n, (days, points) in enumerate(purchases):
        at = NOW - timedelta(days=days)
        posting = await transactions.post_transaction(
            world.db,
            world.tenant_id,
            outlet_id=world.outlet_id,
            external_id=f"{tag}{n}",
            occurred_at=at,
            items=basket(("ITEM", points * 100, 1)),
            member_id=member,
            now=at,
        )
        bought.append(posting.transaction_id)
    if adjusted:
        await adjustments.adjust(
            world.db, world.tenant_id, member, adjusted, reason="goodwill", actor="t", now=NOW
        )
    await jobs.release_pending(world.db, world.tenant_id, now=NOW)
    held = (await membership.get_member(world.db, world.tenant_id, member)).available
    if spend == "cake" and held >= 100:
        await redemptions.redeem(world.db, world.tenant_id, member, "CAKE", now=NOW)
    elif spend == "everything" and held:
        await adjustments.adjust(world.db, world.tenant_id, member, -held, reason="spent", actor="t", now=NOW)
    for transaction_id in bought[:returns]:
        await refunds.refund(world.db, world.tenant_id, transaction_id, now=NOW)


@settings(
    max_examples=int(os.environ.get("MERGE_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(source_plan=PLAN, target_plan=PLAN)
# The source owes and the target pays from its lots; the target owes and the source's lots pay; both owe.
@example(([(30, 50)], 0, "everything", 1), ([(20, 40), (50, 30), (3, 10)], 20, "nothing", 0))
@example(([(50, 30), (20, 40), (2, 10)], 0, "nothing", 0), ([(30, 50)], 0, "everything", 1))
@example(([(30, 50)], 0, "everything", 1), ([(40, 20)], 5, "everything", 1))
def test_a_merge_hands_over_every_lot_and_pays_the_debt_first(
    db: Database, runner: asyncio.Runner, source_plan: Plan, target_plan: Plan
) -> None:
    """Whatever the two accounts lived through, the merge leaves the target holding every lot as it
    was, less the debt paid nearest expiry first, and the books exact."""

    async def go() -> None:
        world = await make_world(db)
        source, target = [
            (await membership.create_member(db, world.tenant_id, now=NOW - timedelta(days=90))).id
            for _ in range(2)
        ]
        await _live(world, source, source_plan, "s")
        await _live(world, target, target_plan, "t")
        balances, lots = await _snapshot(db, world.tenant_id)
        liability = await reports.liability(db, world.tenant_id)
        want_balances, want_lots = _expected(balances[source], balances[target], lots[source] | lots[target])

        event(f"debt: {'source' if balances[source][2] else 'target' if balances[target][2] else 'none'}")
        event(f"pending moved: {balances[source][1] > 0}")
        result = await merge(db, world.tenant_id, source, into=target, actor="t", now=MERGED_AT)

        after_balances, after_lots = await _snapshot(db, world.tenant_id)
        assert after_balances[target] == want_balances
        assert after_balances[source] == (0, 0, 0)
        assert after_lots[source] == {}
        assert after_lots[target] == want_lots
        assert (result.points_moved, result.debt_moved) == (sum(balances[source][:2]), balances[source][2])
        assert (await reports.liability(db, world.tenant_id)).net == liability.net
        assert not await violations(db, world.tenant_id)
        report = await audit.audit(db, world.tenant_id)
        assert report.ok, report.findings

    runner.run(go())
