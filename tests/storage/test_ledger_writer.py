"""Only the ledger writer (loyalty/ledger/) writes entries, lots and draws or moves a member's balance."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "loyalty" / "ledger"
MIGRATIONS = ROOT / "loyalty" / "migrations"

TABLES = r"(ledger_entries|point_lots|lot_draws)"
MODELS = r"(LedgerEntry|PointLot|LotDraw)"
#: What writing a ledger table, or a member's balance columns, looks like in SQL or in SQLAlchemy.
WRITES = [
    re.compile(rf"INSERT\s+INTO\s+{TABLES}\b", re.IGNORECASE),
    re.compile(rf"UPDATE\s+{TABLES}\b", re.IGNORECASE),
    re.compile(rf"DELETE\s+FROM\s+{TABLES}\b", re.IGNORECASE),
    re.compile(r"UPDATE\s+members\b[^;]*?\b(available|pending|debt)\s*=", re.IGNORECASE | re.DOTALL),
    re.compile(rf"\b(insert|update|delete)\(\s*{MODELS}\b"),
    re.compile(
        r"\bupdate\(\s*(Member|MemberRow|_MEMBERS)\b[^;]*?\.values\([^)]*\b(available|pending|debt)\s*="
    ),
    re.compile(rf"""\b(insert|inserts\.setdefault|inserts\[)\(?\s*["']{TABLES}["']"""),
    re.compile(r"(?<!self)\.(available|pending|debt)\s*[-+]?=(?!=)"),
]


def _product_sources() -> list[Path]:
    files = [*(ROOT / "loyalty").rglob("*.py"), *(ROOT / "api").rglob("*.py")]
    return [f for f in files if LEDGER not in f.parents and MIGRATIONS not in f.parents]


def test_only_the_ledger_writer_touches_entries_lots_draws_and_balances() -> None:
    """No module outside loyalty/ledger/ writes ledger entries, lots or draws, or changes a member's
    available, pending or debt: they ask the ledger (a Booking, or its sweeps)."""
    found = []
    for path in _product_sources():
        source = path.read_text()
        for pattern in WRITES:
            for match in pattern.finditer(source):
                line = source.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)[:60]!r}")
    assert not found, "written outside the ledger writer:\n" + "\n".join(found)


def test_the_check_sees_a_write_when_there_is_one() -> None:
    """The patterns above do find each kind of write (the test above could not fail otherwise)."""
    samples = [
        "await s.execute(insert(LedgerEntry), rows)",
        "UPDATE point_lots SET remaining = remaining - 1",
        "update(Member).where(Member.id == m).values(available=Member.available - cost)",
        'text("UPDATE members SET pending = pending + :p WHERE id = :m")',
        'booking.inserts.setdefault("ledger_entries", [])',
        "member.available += points",
        "DELETE FROM lot_draws WHERE id = 1",
    ]
    for sample in samples:
        assert any(p.search(sample) for p in WRITES), sample
    assert not any(p.search("SELECT remaining FROM point_lots WHERE id = 1") for p in WRITES[:4])
