"""Random sequences of every operation keep the books balanced (hypothesis state machine, both databases)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from loyalty import adjustments, jobs, members, redemptions, transactions
from loyalty.db import Database
from loyalty.errors import Conflict, InsufficientPoints, InvalidInput, NotAllowed

from .conftest import NOW, basket, make_world
from .invariants import violations

SETTINGS = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class Ledger(RuleBasedStateMachine):
    """Members buy, return, redeem, cancel and get adjusted while time passes and jobs run."""

    db: Database
    runner: asyncio.Runner

    purchases = Bundle("purchases")
    spent = Bundle("redemptions")

    def __init__(self) -> None:
        super().__init__()
        self.world = self.run(make_world(self.db))
        self.members = [
            self.run(members.create_member(self.db, self.world.tenant_id, now=NOW)).id for _ in range(2)
        ]
        self.now: datetime = NOW
        self.receipts = 0
        self.left: dict[int, list[int]] = {}  # transaction id -> units left to refund per line

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    @rule(
        target=purchases,
        who=st.integers(0, 1),
        cents=st.integers(0, 60_000),
        qty=st.integers(1, 3),
        wash=st.booleans(),
        late=st.booleans(),
    )
    def post(self, who: int, cents: int, qty: int, wash: bool, late: bool) -> int:
        self.receipts += 1
        at = self.now - timedelta(days=20) if late else self.now  # an offline till posting later
        lines = basket(("ITEM", cents, qty), ("WASH", 500, 1)) if wash else basket(("ITEM", cents, qty))
        posting = self.run(
            transactions.post_transaction(
                self.db,
                self.world.tenant_id,
                outlet_id=self.world.outlet_id,
                external_id=f"r{self.receipts}",
                occurred_at=at,
                items=lines,
                member_id=self.members[who],
                now=self.now,
            )
        )
        self.left[posting.transaction_id] = [line.quantity for line in lines]
        return posting.transaction_id

    @rule(tx=purchases, line=st.integers(0, 1), qty=st.integers(1, 3), everything=st.booleans())
    def refund(self, tx: int, line: int, qty: int, everything: bool) -> None:
        left = self.left[tx]
        lines = None if everything else {line: qty}
        valid = any(left) if everything else line < len(left) and qty <= left[line]
        try:
            self.run(transactions.refund(self.db, self.world.tenant_id, tx, lines=lines, now=self.now))
        except InvalidInput:
            assert not valid, "a valid refund was refused"
            return
        assert valid, "a refund beyond what was bought was accepted"
        if everything:
            left[:] = [0] * len(left)
        else:
            left[line] -= qty

    @rule(target=spent, who=st.integers(0, 1), reward=st.sampled_from(["CAKE", "COFFEE", "LOUNGE"]))
    def redeem(self, who: int, reward: str) -> int:
        try:
            return int(
                self.run(
                    redemptions.redeem(self.db, self.world.tenant_id, self.members[who], reward, now=self.now)
                ).redemption_id
            )
        except (InsufficientPoints, NotAllowed):
            return -1

    @rule(who=st.integers(0, 1))
    def spend_everything(self, who: int) -> None:
        """Cakes until the points run out: makes later refunds reach into spent points (debt)."""
        for _ in range(50):
            try:
                self.run(
                    redemptions.redeem(self.db, self.world.tenant_id, self.members[who], "CAKE", now=self.now)
                )
            except InsufficientPoints:
                return

    @rule(redemption=spent)
    def cancel(self, redemption: int) -> None:
        if redemption < 0:
            return
        with contextlib.suppress(NotAllowed, Conflict):  # another day, or already cancelled
            self.run(redemptions.cancel(self.db, self.world.tenant_id, redemption, now=self.now))

    @rule(who=st.integers(0, 1), points=st.integers(-400, 400).filter(bool))
    def adjust(self, who: int, points: int) -> None:
        try:
            self.run(
                adjustments.adjust(
                    self.db,
                    self.world.tenant_id,
                    self.members[who],
                    points,
                    reason="property test",
                    actor="hypothesis",
                    now=self.now,
                )
            )
        except InsufficientPoints:
            assert points < 0

    @rule(hours=st.integers(1, 24 * 40))
    def advance_clock(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule(job=st.sampled_from(["release", "expiry", "tiers"]))
    def run_job(self, job: str) -> None:
        fn = {"release": jobs.release_pending, "expiry": jobs.expire_lots, "tiers": jobs.evaluate_tiers}[job]
        self.run(fn(self.db, self.world.tenant_id, now=self.now))

    @invariant()
    def books_balance(self) -> None:
        problems = self.run(violations(self.db, self.world.tenant_id))
        assert not problems, "\n".join(problems)


def test_random_operations_keep_the_books(db: Database, runner: asyncio.Runner) -> None:
    """After every step of any sequence of operations, every ledger invariant holds."""
    machine = type("LedgerOn", (Ledger,), {"db": db, "runner": runner})
    run_state_machine_as_test(machine, settings=SETTINGS)
