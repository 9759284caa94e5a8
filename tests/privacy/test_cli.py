"""``loyalty member``: consent, export, erase and purge-detail, with one-line errors on bad input."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loyalty.members import membership
from loyalty.points import transactions
from loyalty.storage.db import Database
from tests.cli.conftest import Cli, Run

from .shop import PRIVATE_PROGRAM, item, make_world


@dataclass(frozen=True)
class Setup:
    db_file: Path
    member_id: int
    card: str


async def _populate(url: str) -> tuple[int, str]:
    db = Database.from_url(url)
    try:
        world = await make_world(db, PRIVATE_PROGRAM)
        t = world.tenant_id
        at = datetime(2024, 3, 1, 10, tzinfo=UTC)
        (number,) = await membership.issue_cards(db, t, 1, actor="t", now=at, outlet_id=world.outlet_id)
        member = (await membership.resolve_card(db, t, number, now=at)).id
        for ext, when in (("old", at), ("new", datetime(2025, 3, 1, 10, tzinfo=UTC))):
            await transactions.post_transaction(
                db,
                t,
                outlet_id=world.outlet_id,
                external_id=ext,
                occurred_at=when,
                items=(item("SKU-SECRET", 1000, 1, "deli", ("tagged",)),),
                member_id=member,
                now=when,
            )
        return member, number
    finally:
        await db.dispose()


@pytest.fixture
def setup(tmp_path: Path, migrated_template: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    path = tmp_path / "loyalty.db"
    path.write_bytes(migrated_template.read_bytes())
    url = f"sqlite+aiosqlite:///{path}"
    monkeypatch.setenv("LOYALTY_DATABASE_URL", url)
    monkeypatch.delenv("LOYALTY_TENANT", raising=False)
    member, number = asyncio.run(_populate(url))
    return Setup(path, member, number)


def one_line_error(result: Run, *fragments: str) -> None:
    """Stricter than the CLI suite's: the error is the only line on stderr."""
    assert result.code != 0, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loyalty: error:"), result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _state(db_file: Path, member: int) -> tuple[str, int]:
    with sqlite3.connect(db_file) as conn:
        state = conn.execute("SELECT state FROM members WHERE id = ?", (member,)).fetchone()[0]
        consents = conn.execute("SELECT COUNT(*) FROM consents WHERE member_id = ?", (member,)).fetchone()[0]
    return str(state), int(consents)


def test_erase_needs_yes_and_a_second_erasure_is_refused(setup: Setup, cli: Cli) -> None:
    """Without --yes nothing is erased; with it the member is; a second time is a one-line error."""
    one_line_error(cli("member", "erase", str(setup.member_id)), "--yes")
    assert _state(setup.db_file, setup.member_id) == ("active", 0)
    done = cli("member", "erase", str(setup.member_id), "--yes")
    assert done.code == 0, done.err
    assert f"member {setup.member_id} erased: 1 card(s)" in done.out and "2 purchase(s)" in done.out
    assert _state(setup.db_file, setup.member_id) == ("erased", 1)
    one_line_error(cli("member", "erase", str(setup.member_id), "--yes"), "already erased")


def test_consent_is_recorded_and_shown_and_bad_sources_refused(setup: Setup, cli: Cli) -> None:
    """--marketing records consent with its source; without a flag the history is shown; a bad source
    or an unknown member is one line."""
    one_line_error(
        cli("member", "consent", str(setup.member_id), "--marketing", "--source", "Front Desk"), "source"
    )
    one_line_error(cli("member", "consent", "987654321", "--marketing", "--source", "app"), "not found")
    assert _state(setup.db_file, setup.member_id) == ("active", 0)
    given = cli("member", "consent", str(setup.member_id), "--marketing", "--source", "app")
    assert given.code == 0 and "marketing consent given (app)" in given.out, given.err
    shown = cli("member", "consent", str(setup.member_id))
    assert shown.code == 0 and "marketing consent yes" in shown.out and "given  app  by cli" in shown.out


def test_export_writes_a_private_json_file(setup: Setup, cli: Cli, tmp_path: Path) -> None:
    """--output writes the document with mode 0600; stdout gets the same JSON without it; an unknown
    member is one line."""
    target = tmp_path / "out" / "member.json"
    done = cli("member", "export", str(setup.member_id), "--output", target)
    assert done.code == 0, done.err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    document = json.loads(target.read_text())
    assert document["member_id"] == setup.member_id and document["cards"][0]["number"] == setup.card
    printed = cli("member", "export", str(setup.member_id))
    assert printed.code == 0 and json.loads(printed.out)["transactions"] == document["transactions"]
    one_line_error(cli("member", "export", "987654321"), "not found")
    one_line_error(cli("member", "export", str(setup.member_id), "--output", tmp_path), "directory")


def test_purge_detail_purges_old_purchases_once(setup: Setup, cli: Cli) -> None:
    """purge-detail --as-of purges the purchases older than the policy, once; a bad date is one line."""
    done = cli("member", "purge-detail", "--as-of", "2025-03-10")
    assert done.code == 0 and "1 purchase(s) before 2024-09-10" in done.out, done.err
    again = cli("member", "purge-detail", "--as-of", "2025-03-10")
    assert again.code == 0 and again.out.startswith("0 purchase(s)")
    with sqlite3.connect(setup.db_file) as conn:
        skus = sorted(r[0] for r in conn.execute("SELECT sku FROM transaction_items"))
    assert skus == ["", "SKU-SECRET"]
    one_line_error(cli("member", "purge-detail", "--as-of", "yesterday"), "--as-of")
