"""Shard readiness: the statements of the till's flows, jobs, reports and members' data all carry the
tenant, and on the hot paths the member (tests/shardcheck.py; the plan is docs/scaling.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import shardcheck

from loyalty.events.dispatcher import Dispatcher
from loyalty.members import lookup, membership, merge, replacement
from loyalty.members.membership import CardRef
from loyalty.ops import audit, jobs, reports
from loyalty.points import balances, redemptions, refunds, transactions
from loyalty.privacy import erasure, export
from loyalty.value import segments

from .conftest import NOW, World, basket

LATER = NOW + timedelta(days=15)  # past the program's 14 pending days


async def _till(world: World, numbers: list[str]) -> int:
    """The till's flows: post by card (a blank card bound on first use), a retried receipt, scans,
    balance and history, a redemption with its retry and cancellation, a voucher, a refund and its
    retry. Returns the member."""
    db, t, outlet = world.db, world.tenant_id, world.outlet_id
    first = await transactions.post_transaction(
        db, t, outlet_id=outlet, external_id="r1", occurred_at=NOW, now=NOW,
        items=basket(("ITEM", 20_000, 2), ("WASH", 100, 5)), card_number=numbers[0],
    )  # fmt: skip
    again = await transactions.post_transaction(
        db, t, outlet_id=outlet, external_id="r1", occurred_at=NOW, now=NOW,
        items=basket(("ITEM", 20_000, 2), ("WASH", 100, 5)), card_number=numbers[0],
    )  # fmt: skip
    assert again.transaction_id == first.transaction_id
    member = first.member_id
    await transactions.post_transaction(
        db, t, outlet_id=outlet, external_id="r2", occurred_at=NOW, now=NOW,
        items=basket(("ITEM", 1_000, 1)), member_id=member,
    )  # fmt: skip
    await membership.resolve_card(db, t, numbers[1], now=NOW)
    card_id = (await lookup.card_ids(db, t, [numbers[0]]))[numbers[0]]
    assert await lookup.number_of(db, t, CardRef(card_id=card_id)) == numbers[0]
    assert await membership.holder_id(db, t, CardRef(card_id=card_id)) == member
    await balances.scan(db, t, CardRef(number=numbers[0]), now=NOW)
    await balances.balance(db, t, member, now=NOW)
    await balances.history(db, t, member)

    await jobs.release_pending(db, t, now=LATER)
    card = CardRef(number=numbers[0])
    taken = await redemptions.redeem_with_member(
        db, t, reward_code="CAKE", now=LATER, card=card, outlet_id=outlet, external_id="x1"
    )
    retried = await redemptions.redeem_with_member(
        db, t, reward_code="CAKE", now=LATER, card=card, outlet_id=outlet, external_id="x1"
    )
    assert retried.redemption.replayed
    await redemptions.cancel(db, t, taken.redemption.redemption_id, now=LATER)
    await redemptions.use_voucher(db, t, member, first.voucher_ids[0], now=LATER)
    await refunds.refund(db, t, first.transaction_id, lines={0: 1}, external_id="rf1", now=LATER)
    assert (
        await refunds.refund(db, t, first.transaction_id, lines={0: 1}, external_id="rf1", now=LATER)
    ).replayed
    return member


async def _operator(world: World, numbers: list[str], member: int) -> None:
    """Jobs, reports, the audit, segments, and members' data: merge, card replacement, export, erasure."""
    db, t = world.db, world.tenant_id
    await jobs.expire_lots(db, t, now=LATER)
    await jobs.evaluate_tiers(db, t, now=LATER)
    await jobs.remind_expiring(db, t, now=LATER)
    await reports.liability(db, t)
    await reports.movements(db, t, since=NOW - timedelta(days=40), months=2, now=LATER)
    await reports.settlement(db, t, since=NOW - timedelta(days=1), until=LATER)
    await segments.run(db, t, now=LATER)
    other = (await membership.create_member(db, t, now=LATER)).id
    await transactions.post_transaction(
        db, t, outlet_id=world.outlet_id, external_id="r3", occurred_at=LATER, now=LATER,
        items=basket(("ITEM", 3_000, 1)), member_id=other,
    )  # fmt: skip
    await merge.merge(db, t, other, into=member, actor="admin", now=LATER)
    await replacement.replace_card(db, t, numbers[0], new_card=numbers[2], actor="admin", now=LATER)
    await export.export(db, t, member, now=LATER)
    async with Dispatcher(db) as dispatcher:
        await dispatcher.fan_out()
    assert (await audit.audit(db, t)).findings == []
    await erasure.erase(db, t, member, actor="admin", now=LATER)


async def test_the_workload_carries_tenant_and_member(world: World) -> None:
    """Every statement a till, a job, a report or an operator runs names its tenant, and each of the
    till's flows names the member, on SQLite and PostgreSQL alike."""
    numbers = await membership.issue_cards(world.db, world.tenant_id, 3, actor="admin", now=NOW)
    with shardcheck.recording() as recorder:
        member = await _till(world, numbers)
        await _operator(world, numbers, member)
    hot = {origin for seen in recorder.seen.values() if seen.hot for origin in seen.origins}
    # The hooks saw the ledger's own statements (raw sqlite3 / asyncpg) as well as the ORM's.
    assert {
        "loyalty.points.posting:_load",
        "loyalty.points.refunds:_refund_unit",
        "loyalty.points.redemptions:_redeem_unit",
        "loyalty.members.membership:card_holder",
        "loyalty.points.balances:history",
    } <= hot
    assert any(o.startswith("loyalty.ledger.sweeps:") for s in recorder.seen.values() for o in s.origins)
    offenders = recorder.offenders()
    assert not offenders, shardcheck.report(offenders)


# --- the checker itself --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "hot", "missing"),
    [
        ("SELECT * FROM ledger_entries WHERE id = 1", False, ["tenant_id"]),
        ("SELECT * FROM ledger_entries WHERE id = 1", True, ["tenant_id", "member_id"]),
        ("SELECT * FROM ledger_entries WHERE tenant_id = $1 AND member_id = $2", True, []),
        # Under OR, a predicate does not pin the row to a tenant.
        ("SELECT * FROM point_lots WHERE tenant_id = ?1 OR member_id = ?2", False, ["tenant_id"]),
        # An equality chain from a filtered table carries tenant and member through a join...
        (
            "SELECT e.id FROM members m JOIN ledger_entries e ON e.tenant_id = m.tenant_id"
            " AND e.member_id = m.id WHERE m.tenant_id = $1 AND m.id = $2",
            True,
            [],
        ),
        # ...a join on the row id alone does not.
        (
            "SELECT e.id FROM members m JOIN ledger_entries e ON e.id = m.id WHERE m.tenant_id = $1",
            False,
            ["tenant_id"],
        ),
        # A correlated subquery inherits the outer row's member; SQLite's json_each list binds it.
        (
            "SELECT m.id, (SELECT SUM(q.points) FROM transactions q WHERE q.tenant_id = ?1"
            " AND q.member_id = m.id) FROM members m WHERE m.tenant_id = ?1"
            " AND m.id IN (SELECT value FROM json_each(?2))",
            True,
            [],
        ),
        # The card lookup gives the member to what joins the card.
        (
            "SELECT m.available FROM cards c JOIN members m ON m.tenant_id = c.tenant_id"
            " AND m.id = c.member_id WHERE c.tenant_id = $1 AND c.number = $2",
            True,
            [],
        ),
        # The booking's bulk write: rows from parameter arrays.
        (
            "UPDATE point_lots t SET remaining = t.remaining + u.remaining FROM unnest($2::bigint[],"
            " $3::bigint[], $4::bigint[]) AS u(id, member_id, remaining) WHERE t.tenant_id = $1"
            " AND t.member_id = u.member_id AND t.id = u.id",
            True,
            [],
        ),
        ("INSERT INTO lot_draws (tenant_id, lot_id, amount) VALUES (?, ?, ?)", True, ["member_id"]),
        ("INSERT INTO members (tenant_id, tags) VALUES ($1, $2) RETURNING id", True, []),
        ("UPDATE events SET data = $1 WHERE id = $2", False, ["tenant_id"]),
        ("CREATE TABLE ledger_entries (id integer)", True, []),
    ],
)
def test_the_checker_flags_what_lacks_the_tenant_or_member(sql: str, hot: bool, missing: list[str]) -> None:
    """A statement is flagged for exactly the distribution columns it does not pin down."""
    assert sorted(o.missing for o in shardcheck.offences(sql, hot=hot)) == sorted(missing)


def test_an_offender_fails_the_check_unless_allowed() -> None:
    """A recorded offender is reported with its origin; the allowlist covers only what it names."""
    recorder = shardcheck.Recorder()
    bad = "SELECT * FROM ledger_entries WHERE id = 1"
    recorder.seen[bad] = shardcheck.Seen(bad, hot=True, origins={"loyalty.points.posting:_load"})
    good = "SELECT * FROM ledger_entries WHERE tenant_id = $1 AND member_id = $2"
    recorder.seen[good] = shardcheck.Seen(good, hot=True, origins={"loyalty.points.posting:_load"})
    owner = "SELECT member_id FROM transactions WHERE tenant_id = $1 AND id = $2"
    recorder.seen[owner] = shardcheck.Seen(owner, hot=True, origins={"loyalty.ledger.reads:owner"})
    offenders = recorder.offenders()
    assert [seen.sql for seen, _ in offenders] == [bad]
    text = shardcheck.report(offenders)
    assert "loyalty.points.posting:_load [hot path]" in text
    assert "ledger_entries: no tenant_id predicate" in text
