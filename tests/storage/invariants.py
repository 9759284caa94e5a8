"""The ledger's invariants, checked with plain SQL against whatever the services wrote."""

from __future__ import annotations

from sqlalchemy import text

from loyalty.storage.db import Database


async def violations(db: Database, tenant_id: int) -> list[str]:
    """Every broken invariant of one tenant, described; empty when the books are right."""
    checks = {
        "a member's projection differs from the sum of its entries": """
            SELECT m.id FROM members m WHERE m.tenant_id = :t AND (
              m.available <> COALESCE((SELECT SUM(amount) FROM ledger_entries e WHERE e.tenant_id = :t
                                       AND e.member_id = m.id AND e.account = 'member_available'), 0)
              OR m.pending <> COALESCE((SELECT SUM(amount) FROM ledger_entries e WHERE e.tenant_id = :t
                                        AND e.member_id = m.id AND e.account = 'member_pending'), 0)
              OR m.debt <> -COALESCE((SELECT SUM(amount) FROM ledger_entries e WHERE e.tenant_id = :t
                                      AND e.member_id = m.id AND e.account = 'member_debt'), 0))""",
        "an entry set does not sum to zero": """
            SELECT cause, ref_id, member_id FROM ledger_entries WHERE tenant_id = :t
            GROUP BY cause, ref_id, member_id HAVING SUM(amount) <> 0""",
        "a lot's remaining is not earned minus draws minus expired": """
            SELECT l.id FROM point_lots l WHERE l.tenant_id = :t AND l.remaining <> l.earned - l.expired
              - COALESCE((SELECT SUM(d.amount) FROM lot_draws d WHERE d.lot_id = l.id), 0)""",
        "available or pending differs from the remaining of the member's lots": """
            SELECT m.id FROM members m WHERE m.tenant_id = :t AND (
              m.available <> COALESCE((SELECT SUM(remaining) FROM point_lots l WHERE l.tenant_id = :t
                                       AND l.member_id = m.id AND l.state = 'available'), 0)
              OR m.pending <> COALESCE((SELECT SUM(remaining) FROM point_lots l WHERE l.tenant_id = :t
                                        AND l.member_id = m.id AND l.state = 'pending'), 0))""",
        "a balance is negative": """
            SELECT id FROM members WHERE tenant_id = :t AND (available < 0 OR pending < 0 OR debt < 0)""",
        "a member owes points while holding available ones (debt must be paid first)": """
            SELECT id FROM members WHERE tenant_id = :t AND debt > 0 AND available > 0""",
        "the program's accounts do not mirror the members' accounts": """
            SELECT total FROM (SELECT COALESCE(SUM(amount), 0) AS total FROM ledger_entries
                               WHERE tenant_id = :t) AS s WHERE total <> 0""",
        "a line was refunded beyond what was bought": """
            SELECT id FROM transaction_items WHERE tenant_id = :t
              AND (refunded_quantity > quantity OR refunded_quantity < 0)""",
    }
    found = []
    async with db.read() as s:
        for what, sql in checks.items():
            rows = (await s.execute(text(sql), {"t": tenant_id})).all()
            if rows:
                found.append(f"{what}: {rows[:5]}")
    return found


async def assert_books_balance(db: Database, tenant_id: int) -> None:
    problems = await violations(db, tenant_id)
    assert not problems, "\n".join(problems)
