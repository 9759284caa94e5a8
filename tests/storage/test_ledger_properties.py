"""Random sequences of every operation, checked against an independent model after every step.

Two checks run after each step, on SQLite and on PostgreSQL:

* the database against :class:`model.LedgerModel`, which computes what every balance, lot, stamp
  card, voucher and tier must be from the operations alone (a posting that books nothing, or books
  the wrong lot, fails here even though the data agrees with itself);
* the data against itself (:mod:`invariants`): entry sets balance, projections equal their entries.

Every reply is checked too: the points of a posting, the lots a redemption drew, what a refund took
back and how much of it became debt, and which operations had to be refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import text

from loyalty.errors import Conflict, InsufficientPoints, InvalidInput, NotAllowed
from loyalty.members import membership
from loyalty.ops import jobs
from loyalty.points import adjustments, redemptions, transactions
from loyalty.storage.db import Database

from .conftest import NOW, basket, make_world
from .invariants import violations
from .model import LedgerModel, ModelRefusal

SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("LEDGER_EXAMPLES", "30")),
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

REFUSALS: dict[type[Exception], str] = {
    InvalidInput: "invalid",
    InsufficientPoints: "insufficient",
    NotAllowed: "not_allowed",
    Conflict: "conflict",
}


async def snapshot(db: Database, tenant_id: int) -> dict[str, Any]:
    """What the database holds for the model to compare: balances, lots, stamps, vouchers, tiers."""
    async with db.read() as s:
        q = lambda sql: s.execute(text(sql), {"t": tenant_id})  # noqa: E731
        members_ = {
            r[0]: tuple(r[1:])
            for r in await q("SELECT id, available, pending, debt, tier FROM members WHERE tenant_id = :t")
        }
        lots = {
            ("tx", r[0]) if r[0] is not None else ("adj", r[1]): (r[2], r[3], r[4], r[5])
            for r in await q(
                "SELECT transaction_id, adjustment_id, state, remaining, expired, id FROM point_lots"
                " WHERE tenant_id = :t"
            )
        }
        stamps = {
            r[0]: r[1]
            for r in await q(
                "SELECT member_id, stamps FROM stamp_cards WHERE tenant_id = :t AND card = 'wash'"
            )
        }
        vouchers: dict[int, list[str]] = {}
        for member_id, status in await q(
            "SELECT member_id, status FROM vouchers WHERE tenant_id = :t ORDER BY id"
        ):
            vouchers.setdefault(member_id, []).append(status)
    return {"members": members_, "lots": lots, "stamps": stamps, "vouchers": vouchers}


class Ledger(RuleBasedStateMachine):
    """Members buy, return, redeem, cancel and get adjusted while time passes and jobs run."""

    db: Database
    runner: asyncio.Runner

    purchases = Bundle("purchases")
    spent = Bundle("redemptions")

    def __init__(self) -> None:
        super().__init__()
        self.world = self.run(make_world(self.db))
        self.model = LedgerModel()
        self.members = []
        for _ in range(2):
            member_id = self.run(membership.create_member(self.db, self.world.tenant_id, now=NOW)).id
            self.members.append(member_id)
            self.model.add_member(member_id)
        self.now: datetime = NOW
        self.receipts = 0
        self.lot_ids: dict[int, tuple[str, int]] = {}  # database lot id -> model lot key

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def both(self, real: Any, model: Any) -> tuple[Any, Any]:
        """Run the service and the model; both must refuse alike, or both succeed."""
        try:
            expected = model()
        except ModelRefusal as refusal:
            expected = refusal
        try:
            got = self.run(real)
        except tuple(REFUSALS) as exc:
            kind = next(v for k, v in REFUSALS.items() if isinstance(exc, k))
            assert isinstance(expected, ModelRefusal), f"the service refused ({exc}); the model did not"
            assert expected.kind == kind, f"refused as {kind}, the model says {expected.kind}: {exc}"
            return None, None
        assert not isinstance(expected, ModelRefusal), (
            f"the model refuses ({expected.kind}); the service did not"
        )
        return got, expected

    def draws_by_key(self, draws: Any) -> list[tuple[tuple[str, int], int]]:
        if any(lot_id not in self.lot_ids for lot_id, _ in draws):
            for key, (_, _, _, lot_id) in self.run(snapshot(self.db, self.world.tenant_id))["lots"].items():
                self.lot_ids[lot_id] = key
        return [(self.lot_ids[lot_id], amount) for lot_id, amount in draws]

    @rule(
        target=purchases,
        who=st.integers(0, 1),
        cents=st.integers(0, 60_000),
        qty=st.integers(1, 3),
        washes=st.integers(0, 3),
        tobacco=st.booleans(),
        late=st.booleans(),
    )
    def post(self, who: int, cents: int, qty: int, washes: int, tobacco: bool, late: bool) -> int:
        self.receipts += 1
        at = self.now - timedelta(days=20) if late else self.now  # an offline till posting later
        lines = [("ITEM", cents, qty, "tobacco" if tobacco else "food")]
        if washes:
            lines.append(("WASH", 500, washes, "food"))
        member = self.members[who]
        posting = self.run(
            transactions.post_transaction(
                self.db,
                self.world.tenant_id,
                outlet_id=self.world.outlet_id,
                external_id=f"r{self.receipts}",
                occurred_at=at,
                items=basket(*lines),
                member_id=member,
                now=self.now,
            )
        )
        expected = self.model.post(posting.transaction_id, member, lines, at, self.now)
        assert posting.points == expected, f"posting earned {posting.points}, the model says {expected}"
        return int(posting.transaction_id)

    @rule(tx=purchases, line=st.integers(0, 2), qty=st.integers(1, 3), everything=st.booleans())
    def refund(self, tx: int, line: int, qty: int, everything: bool) -> None:
        lines = None if everything else {line: qty}
        got, expected = self.both(
            transactions.refund(self.db, self.world.tenant_id, tx, lines=lines, now=self.now),
            lambda: self.model.refund(tx, lines),
        )
        if got is not None:
            assert (got.points, got.debt) == expected, f"refund {got.points}/{got.debt}, model {expected}"

    @rule(target=spent, who=st.integers(0, 1), reward=st.sampled_from(["CAKE", "COFFEE", "LOUNGE"]))
    def redeem(self, who: int, reward: str) -> int:
        member = self.members[who]

        def model() -> Any:
            return self.model.redeem(-1, member, reward, self.now)

        got, expected = self.both(
            redemptions.redeem(self.db, self.world.tenant_id, member, reward, now=self.now), model
        )
        if got is None:
            return -1
        redemption = self.model.redemptions.pop(-1)
        redemption.id = got.redemption_id
        self.model.redemptions[got.redemption_id] = redemption
        want = [(lot.key, amount) for lot, amount in expected]
        assert self.draws_by_key(got.draws) == want, f"drew {got.draws}, the model draws {want}"
        return int(got.redemption_id)

    @rule(who=st.integers(0, 1))
    def spend_everything(self, who: int) -> None:
        """Cakes until the points run out: makes later refunds reach into spent points (debt)."""
        for _ in range(50):
            if self.redeem(who, "CAKE") < 0:
                return

    @rule(redemption=spent)
    def cancel(self, redemption: int) -> None:
        if redemption < 0:
            return
        self.both(
            redemptions.cancel(self.db, self.world.tenant_id, redemption, now=self.now),
            lambda: self.model.cancel(redemption, self.now),
        )

    @rule(who=st.integers(0, 1), points=st.integers(-400, 400).filter(bool))
    def adjust(self, who: int, points: int) -> None:
        member = self.members[who]
        try:
            done = self.run(
                adjustments.adjust(
                    self.db,
                    self.world.tenant_id,
                    member,
                    points,
                    reason="property test",
                    actor="hypothesis",
                    now=self.now,
                )
            )
        except InsufficientPoints:
            with contextlib.suppress(ModelRefusal):
                self.model.adjust(-1, member, points, self.now)
                raise AssertionError("the adjustment was refused; the model has the points") from None
            return
        self.model.adjust(done.adjustment_id, member, points, self.now)

    @rule(hours=st.integers(1, 24 * 40))
    def advance_clock(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule(job=st.sampled_from(["release", "expiry", "tiers"]))
    def run_job(self, job: str) -> None:
        fn = {"release": jobs.release_pending, "expiry": jobs.expire_lots, "tiers": jobs.evaluate_tiers}[job]
        self.run(fn(self.db, self.world.tenant_id, now=self.now))
        {"release": self.model.release, "expiry": self.model.expire, "tiers": self.model.evaluate_tiers}[job](
            self.now
        )

    @invariant()
    def matches_the_model(self) -> None:
        got = self.run(snapshot(self.db, self.world.tenant_id))
        for member_id, m in self.model.members.items():
            want = (m.available, m.pending, m.debt, m.tier)
            assert got["members"][member_id] == want, (
                f"member {member_id}: (available, pending, debt, tier) is {got['members'][member_id]}, "
                f"the model says {want}"
            )
            assert got["stamps"].get(member_id, 0) == m.stamps, f"member {member_id}: stamps"
            assert got["vouchers"].get(member_id, []) == m.vouchers, f"member {member_id}: vouchers"
            for lot in m.lots:
                want_lot = (lot.state, lot.remaining, lot.expired)
                assert got["lots"].get(lot.key, ())[:3] == want_lot, (
                    f"lot {lot.key}: {got['lots'].get(lot.key)}, the model says {want_lot}"
                )
        assert len(got["lots"]) == sum(len(m.lots) for m in self.model.members.values()), "unexpected lots"

    @invariant()
    def books_balance(self) -> None:
        problems = self.run(violations(self.db, self.world.tenant_id))
        assert not problems, "\n".join(problems)


def test_random_operations_match_the_model(db: Database, runner: asyncio.Runner) -> None:
    """After every step of any sequence of operations, the books equal an independent model's."""
    machine = type("LedgerOn", (Ledger,), {"db": db, "runner": runner})
    run_state_machine_as_test(machine, settings=SETTINGS)
