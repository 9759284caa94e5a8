"""``loyalty audit``: re-derive the books from their entries and every purchase from its version.

What it checks, per tenant (each check is independent and lists what it found):

* every set of entries (one cause, reference and member) sums to zero;
* every member's ``available``, ``pending`` and ``debt`` equal the sums of their entries, and the
  remaining points of their available and pending lots; no balance is negative; nobody holds
  available points while owing;
* every lot's ``remaining`` equals ``earned`` less ``expired`` less its draws;
* every stored purchase's points (total and per line) are reproduced by evaluating its basket again
  with its recorded program version and recorded inputs (the member and outlet as the engine saw
  them), less nothing: refunds are recorded apart and do not change the booked points;
* a purchase whose basket detail was purged (an erasure, the retention job) cannot be evaluated
  again: its booked points are checked against what its evaluation recorded instead (the total, and
  each line's points), and it counts among the purchases like any other; ``purchases_recorded``
  says how many were checked that way; one whose lines went with a dropped month partition
  (``lines_dropped``, see :mod:`loyalty.privacy.retention`) is checked on its total alone;
* nothing refers to a purchase that is not there (lines, lots, refunds, redemptions, vouchers: on
  PostgreSQL, where ``transactions`` is partitioned by month, the database no longer holds these keys,
  see :mod:`loyalty.storage.partitions`), no webhook delivery refers to an event that is not there
  (the same holds for ``events``), and no purchase id is used twice.

Reading is streamed page by page; nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

import rules
from loyalty.programs import versions
from loyalty.storage.db import Database

#: Mismatches listed per check (the count covers all of them).
MAX_LISTED = 50
#: Purchases re-evaluated per page.
PAGE = 2_000

_CHECKS = {
    "an entry set does not sum to zero": """
        SELECT cause || ' ' || ref_id || ' member ' || member_id || ': sums to ' || SUM(amount)
        FROM ledger_entries WHERE tenant_id = :t GROUP BY cause, ref_id, member_id HAVING SUM(amount) <> 0""",
    "a member's balance differs from the sum of their entries": """
        SELECT 'member ' || m.id || ': available ' || m.available || ' vs ' || COALESCE(e.a, 0)
               || ', pending ' || m.pending || ' vs ' || COALESCE(e.p, 0)
               || ', debt ' || m.debt || ' vs ' || COALESCE(-e.d, 0)
        FROM members m LEFT JOIN (
            SELECT member_id,
                   SUM(CASE WHEN account = 'member_available' THEN amount ELSE 0 END) AS a,
                   SUM(CASE WHEN account = 'member_pending' THEN amount ELSE 0 END) AS p,
                   SUM(CASE WHEN account = 'member_debt' THEN amount ELSE 0 END) AS d
            FROM ledger_entries WHERE tenant_id = :t GROUP BY member_id) e ON e.member_id = m.id
        WHERE m.tenant_id = :t AND (m.available <> COALESCE(e.a, 0) OR m.pending <> COALESCE(e.p, 0)
                                    OR m.debt <> COALESCE(-e.d, 0))""",
    "a member's balance differs from the remaining points of their lots": """
        SELECT 'member ' || m.id || ': available ' || m.available || ' vs lots ' || COALESCE(l.a, 0)
               || ', pending ' || m.pending || ' vs lots ' || COALESCE(l.p, 0)
        FROM members m LEFT JOIN (
            SELECT member_id,
                   SUM(CASE WHEN state = 'available' THEN remaining ELSE 0 END) AS a,
                   SUM(CASE WHEN state = 'pending' THEN remaining ELSE 0 END) AS p
            FROM point_lots WHERE tenant_id = :t GROUP BY member_id) l ON l.member_id = m.id
        WHERE m.tenant_id = :t AND (m.available <> COALESCE(l.a, 0) OR m.pending <> COALESCE(l.p, 0))""",
    "a lot's remaining is not earned less expired less its draws": """
        SELECT 'lot ' || l.id || ': remaining ' || l.remaining || ', earned ' || l.earned
               || ' - expired ' || l.expired || ' - drawn ' || COALESCE(d.n, 0)
        FROM point_lots l LEFT JOIN (
            SELECT lot_id, SUM(amount) AS n FROM lot_draws WHERE tenant_id = :t GROUP BY lot_id) d
            ON d.lot_id = l.id
        WHERE l.tenant_id = :t AND l.remaining <> l.earned - l.expired - COALESCE(d.n, 0)""",
    "a balance is negative, or a member owes points while holding available ones": """
        SELECT 'member ' || id || ': available ' || available || ', pending ' || pending || ', debt ' || debt
        FROM members WHERE tenant_id = :t
          AND (available < 0 OR pending < 0 OR debt < 0 OR (debt > 0 AND available > 0))""",
    "a lot, refund, redemption or voucher refers to a purchase that is not there": """
        SELECT x.what || ' ' || x.id || ': transaction ' || x.transaction_id
        FROM (SELECT 'lot' AS what, id, transaction_id FROM point_lots WHERE tenant_id = :t
              UNION ALL SELECT 'refund', id, transaction_id FROM refunds WHERE tenant_id = :t
              UNION ALL SELECT 'redemption', id, transaction_id FROM redemptions WHERE tenant_id = :t
              UNION ALL SELECT 'voucher', id, transaction_id FROM vouchers WHERE tenant_id = :t) x
        WHERE x.transaction_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM transactions t WHERE t.tenant_id = :t AND t.id = x.transaction_id)""",
    "a basket line refers to a purchase that is not there": """
        SELECT 'line ' || i.line || ' of transaction ' || i.transaction_id FROM transaction_items i
        WHERE i.tenant_id = :t AND NOT EXISTS (
            SELECT 1 FROM transactions t WHERE t.tenant_id = :t AND t.id = i.transaction_id)""",
    "a webhook delivery refers to an event that is not there": """
        SELECT 'delivery ' || d.id || ': event ' || d.event_id FROM webhook_deliveries d
        WHERE d.tenant_id = :t AND NOT EXISTS (
            SELECT 1 FROM events e WHERE e.tenant_id = :t AND e.id = d.event_id)""",
    "a purchase id is used twice": """
        SELECT 'transaction ' || id || ': ' || COUNT(*) || ' rows' FROM transactions WHERE tenant_id = :t
        GROUP BY id HAVING COUNT(*) > 1""",
}
#: On PostgreSQL a line carries its purchase's month (its partition key): it must be the purchase's.
_PG_CHECKS = {
    "a basket line refers to a purchase that is not there": """
        SELECT 'line ' || i.line || ' of transaction ' || i.transaction_id FROM transaction_items i
        WHERE i.tenant_id = :t AND NOT EXISTS (
            SELECT 1 FROM transactions t
            WHERE t.tenant_id = :t AND t.id = i.transaction_id AND t.occurred_at = i.occurred_at)""",
}
_PURCHASES = """
    SELECT t.id, t.occurred_at, t.channel, t.points, t.evaluation, v.id, v.digest, t.detail_purged_at
    FROM transactions t JOIN program_versions v ON v.id = t.program_version_id
    WHERE t.tenant_id = :t AND t.id > :after ORDER BY t.id LIMIT :n"""
_ITEMS = """
    SELECT transaction_id, line, sku, category, tags, unit_price, quantity, points FROM transaction_items
    WHERE tenant_id = :t AND transaction_id BETWEEN :first AND :last ORDER BY transaction_id, line"""


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    count: int
    #: The first mismatches, described.
    examples: tuple[str, ...]


@dataclass(slots=True)
class AuditReport:
    tenant_id: int
    members: int = 0
    entries: int = 0
    lots: int = 0
    purchases: int = 0
    #: Of ``purchases``: those whose detail was purged, checked against their recorded points.
    purchases_recorded: int = 0
    findings: list[Finding] = field(default_factory=list)
    #: True when no check found anything.
    ok: bool = True


async def audit(
    db: Database, tenant_id: int, *, progress: Callable[[int], None] | None = None
) -> AuditReport:
    """Every check of the module docstring for one tenant; an empty ``findings`` means the books are right."""
    report = AuditReport(tenant_id)
    async with db.read() as s:
        for what, sql in (
            ("members", "SELECT COUNT(*) FROM members WHERE tenant_id = :t"),
            ("entries", "SELECT COUNT(*) FROM ledger_entries WHERE tenant_id = :t"),
            ("lots", "SELECT COUNT(*) FROM point_lots WHERE tenant_id = :t"),
        ):
            setattr(report, what, int((await s.execute(text(sql), {"t": tenant_id})).scalar() or 0))
        pg_checks = _PG_CHECKS if db.is_postgresql and await _partitioned(s) else {}
        for check, sql in (_CHECKS | pg_checks).items():
            rows = (await s.execute(text(sql), {"t": tenant_id})).all()
            if rows:
                report.findings.append(Finding(check, len(rows), tuple(str(r[0]) for r in rows[:MAX_LISTED])))
    wrong: list[str] = []
    after = 0
    while True:
        async with db.read() as s:
            page = (await s.execute(text(_PURCHASES), {"t": tenant_id, "after": after, "n": PAGE})).all()
            if not page:
                break
            items = (
                await s.execute(text(_ITEMS), {"t": tenant_id, "first": page[0][0], "last": page[-1][0]})
            ).all()
            documents = {
                digest: doc
                for digest, doc in (
                    await s.execute(
                        text("SELECT digest, document FROM program_versions WHERE tenant_id = :t"),
                        {"t": tenant_id},
                    )
                ).all()
                if versions.cached(digest) is None
            }
        lines: dict[int, list[Any]] = {}
        for row in items:
            lines.setdefault(row[0], []).append(row)
        for tx_id, occurred_at, channel, points, evaluation, _, digest, purged_at in page:
            if purged_at is not None:
                report.purchases_recorded += 1
                problem = _check_recorded(tx_id, points, evaluation, lines.get(tx_id, []))
                if problem is not None:
                    wrong.append(problem)
                continue
            program = versions.cached(digest) or versions.checked(digest, documents[digest])
            problem = _recompute(
                program, tx_id, _aware(occurred_at), channel, points, evaluation, lines.get(tx_id, [])
            )
            if problem is not None:
                wrong.append(problem)
        report.purchases += len(page)
        after = page[-1][0]
        if progress is not None:
            progress(report.purchases)
    if wrong:
        report.findings.append(
            Finding(
                "a purchase's points are not reproduced by its recorded version and inputs",
                len(wrong),
                tuple(wrong[:MAX_LISTED]),
            )
        )
    report.ok = not report.findings
    return report


async def _partitioned(s: Any) -> bool:
    """Whether the basket lines carry their purchase's month (PostgreSQL after migration 0007)."""
    found = await s.execute(
        text(
            "SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'transaction_items' AND column_name = 'occurred_at'"
        )
    )
    return found.first() is not None


def _aware(value: datetime | str) -> datetime:
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _check_recorded(tx_id: int, points: int, evaluation: Any, lines: list[Any]) -> str | None:
    """None when a purged purchase's booked points agree with what its evaluation recorded (its
    total, and each line's points in order), else what differs."""
    import json

    recorded = json.loads(evaluation) if isinstance(evaluation, str) else evaluation or {}
    if recorded.get("total") != points:
        total = recorded.get("total")
        return f"transaction {tx_id} (detail purged): booked {points} points, recorded {total}"
    booked_lines = [r[7] for r in lines]
    kept = [i.get("points") for i in recorded.get("items", ())]
    if not lines and recorded.get("lines_dropped"):
        return None  # the lines went with their month (retention); the recorded figures stand
    if booked_lines != kept:
        return f"transaction {tx_id} (detail purged): line points {booked_lines}, recorded {kept}"
    return None


def _recompute(
    program: rules.CheckedProgram,
    tx_id: int,
    occurred_at: datetime,
    channel: str,
    points: int,
    evaluation: Any,
    lines: list[Any],
) -> str | None:
    """None when the purchase's points are reproduced, else what differs."""
    import json

    from loyalty.points.posting import recorded_inputs

    recorded = json.loads(evaluation) if isinstance(evaluation, str) else evaluation
    inputs = recorded_inputs(recorded)
    budgets: dict[str, int] = {}
    if inputs is None:
        member, outlet = rules.Member(tier=recorded.get("tier")), rules.Outlet()
    else:
        member, outlet, channel, budgets = inputs
    basket = tuple(
        rules.Item(
            sku=r[2],
            unit_price=r[5],
            quantity=r[6],
            category=r[3],
            tags=tuple(json.loads(r[4]) if isinstance(r[4], str) else r[4] or ()),
        )
        for r in lines
    )
    try:
        result = rules.evaluate(
            program,
            rules.Transaction(time=occurred_at, items=basket, channel=channel),
            member,
            outlet,
            now=occurred_at,
            budgets=budgets,
        )
    except rules.RulesError as exc:
        return f"transaction {tx_id}: cannot be evaluated again ({exc})"
    if result.total != points:
        return f"transaction {tx_id}: booked {points} points, its version gives {result.total}"
    booked_lines = [r[7] for r in lines]
    again = [i.points for i in result.items]
    if booked_lines != again:
        return f"transaction {tx_id}: line points {booked_lines}, its version gives {again}"
    return None
