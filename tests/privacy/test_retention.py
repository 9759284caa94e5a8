"""Retention: basket detail of old purchases is purged in batches; totals, points and figures stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from loyalty.errors import InvalidInput
from loyalty.ops.audit import audit
from loyalty.privacy import retention
from loyalty.storage.db import Database
from loyalty.storage.models import Transaction, TransactionItem

from .shop import NOW, PROGRAM, build_shop, figures


async def _detail(db: Database, tenant_id: int) -> dict[int, tuple[bool, list[tuple[str, str, list[str]]]]]:
    """Per purchase: whether it was purged, and its lines' SKU, category and tags."""
    async with db.read() as s:
        purged = dict(
            (
                await s.execute(
                    select(Transaction.id, Transaction.detail_purged_at).where(
                        Transaction.tenant_id == tenant_id
                    )
                )
            ).all()
        )
        items = (
            await s.execute(
                select(
                    TransactionItem.transaction_id,
                    TransactionItem.sku,
                    TransactionItem.category,
                    TransactionItem.tags,
                )
                .where(TransactionItem.tenant_id == tenant_id)
                .order_by(TransactionItem.transaction_id, TransactionItem.line)
            )
        ).all()
    lines: dict[int, list[tuple[str, str, list[str]]]] = {}
    for tx_id, sku, category, tags in items:
        lines.setdefault(tx_id, []).append((sku, category, list(tags)))
    return {tx_id: (at is not None, lines.get(tx_id, [])) for tx_id, at in purged.items()}


async def test_only_purchases_older_than_the_policy_lose_their_detail(db: Database) -> None:
    """With six months kept, the purchases of June 2024 are purged at 2025-03-10 (in batches of
    one), the recent ones keep every line; the reports and the audit give the same figures, and a
    second run purges nothing."""
    shop = await build_shop(db)
    t = shop.tenant_id
    before = await figures(db, t)
    detail = await _detail(db, t)
    old = {shop.alice_purchases[0], shop.alice_purchases[1], shop.other_purchases[0]}

    result = await retention.purge_old_detail(db, t, now=NOW, batch=1)
    assert (result.months, result.purged, result.batches) == (6, 3, 3)
    assert result.cutoff == datetime(2024, 9, 10, 8, 0, tzinfo=UTC)
    after = await _detail(db, t)
    for tx_id, (purged, lines) in after.items():
        if tx_id in old:
            assert purged and lines and all(line == ("", "", []) for line in lines), tx_id
        else:
            assert (purged, lines) == detail[tx_id], tx_id
    assert await figures(db, t) == before
    report = await audit(db, t)
    assert report.ok and report.purchases_recorded == 3

    again = await retention.purge_old_detail(db, t, now=NOW + timedelta(hours=1))
    assert (again.purged, again.batches) == (0, 0)
    async with db.read() as s:
        stamps = set(
            (await s.scalars(select(Transaction.detail_purged_at).where(Transaction.tenant_id == t))).all()
        )
    assert stamps == {None, NOW}  # the second run left the first one's mark


async def test_the_audit_still_catches_a_wrong_purged_purchase(db: Database) -> None:
    """A purged purchase whose booked line points no longer match its recorded ones is a finding."""
    shop = await build_shop(db)
    t = shop.tenant_id
    await retention.purge_old_detail(db, t, now=NOW)
    async with db.write() as s:
        await s.execute(
            update(TransactionItem)
            .where(TransactionItem.transaction_id == shop.alice_purchases[0], TransactionItem.line == 1)
            .values(points=TransactionItem.points + 7)
        )
    report = await audit(db, t)
    assert not report.ok
    (finding,) = report.findings
    assert finding.count == 1 and "(detail purged)" in finding.examples[0]


async def test_a_program_without_a_policy_keeps_everything(db: Database) -> None:
    """No ``privacy.basket_detail_months``: nothing is purged, and the result says so."""
    shop = await build_shop(db, PROGRAM)
    result = await retention.purge_old_detail(db, shop.tenant_id, now=NOW)
    assert (result.months, result.cutoff, result.purged) == (None, None, 0)
    assert not any(purged for purged, _ in (await _detail(db, shop.tenant_id)).values())
    with pytest.raises(InvalidInput):
        await retention.purge_old_detail(db, shop.tenant_id, now=NOW, batch=0)


def test_the_reduced_evaluation_keeps_totals_and_drops_detail() -> None:
    """The reduction keeps the totals and per-line points, and drops SKUs and the recorded inputs."""
    evaluation = {
        "version": "abc",
        "total": 12,
        "exact": "12.5",
        "tier": "bronze",
        "items": [{"index": 0, "sku": "SECRET", "exact": "12.5", "points": 12}],
        "rules": [{"rule": "base", "kind": "base", "applications": 1, "points": "12.5"}],
        "stamps": {},
        "inputs": {"member": {"tags": ["vip"], "segment": "champions"}},
        "explanation": [{"rule": "base"}],
    }
    out = retention.reduced(evaluation)
    assert "inputs" not in out and "explanation" not in out and "SECRET" not in str(out)
    assert "stamps" not in out and out["detail_purged"] is True
    assert (out["total"], out["items"], out["rules"]) == (
        12,
        [{"index": 0, "exact": "12.5", "points": 12}],
        evaluation["rules"],
    )
