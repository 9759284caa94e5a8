"""``loyalty account``: merge and replace-card from the command line; bad input is one error line."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from loyalty.admin import tenants
from loyalty.members import membership
from loyalty.points import adjustments
from loyalty.storage.db import Database
from tests.cli.conftest import Cli, count, ok, one_line_error


def _members(db_file: Path, points: tuple[int, ...]) -> tuple[list[int], list[str]]:
    """Members of tenant ``demo``, each with a card bound at a till and ``points`` available; plus
    one blank card (the last number)."""

    async def go() -> tuple[list[int], list[str]]:
        db = Database.from_url(f"sqlite+aiosqlite:///{db_file}")
        try:
            now = datetime.now(UTC)
            tenant = await tenants.tenant_by_code(db, "demo")
            numbers = await membership.issue_cards(db, tenant.id, len(points) + 1, actor="t", now=now)
            ids = []
            for number, grant in zip(numbers, points, strict=False):
                member = await membership.resolve_card(db, tenant.id, number, now=now)
                await adjustments.adjust(db, tenant.id, member.id, grant, reason="setup", actor="t", now=now)
                ids.append(member.id)
            return ids, numbers
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_merge_prints_the_target_and_closes_the_source(shop: Path, cli: Cli) -> None:
    """`account merge` moves the points and cards and prints the target's figures."""
    (source, target), numbers = _members(shop, (70, 30))
    done = ok(cli("account", "merge", str(source), "--into", str(target), "--format", "json"))
    (row,) = json.loads(done.out)
    assert (row["merged"], row["into"], row["points_moved"], row["available"]) == (source, target, 70, 100)
    assert row["cards_moved"] == numbers[0]
    assert count(shop, "members", f"id = {source} AND state = 'merged' AND merged_into = {target}") == 1
    assert count(shop, "cards", f"number = '{numbers[0]}' AND member_id = {target}") == 1


def test_merge_errors_are_one_line(shop: Path, cli: Cli) -> None:
    """Merging into itself, an unknown member or a merged one is one error line, and nothing changes."""
    (source, target), _ = _members(shop, (10, 20))
    one_line_error(cli("account", "merge", str(source), "--into", str(source)), "itself")
    one_line_error(cli("account", "merge", str(source), "--into", "999999"), "not found")
    one_line_error(cli("account", "merge", "x", "--into", str(target)))
    ok(cli("account", "merge", str(source), "--into", str(target)))
    one_line_error(cli("account", "merge", str(source), "--into", str(target)), "merged")
    assert count(shop, "members", "state = 'merged'") == 1


def test_replace_card_issues_or_takes_a_blank_card(shop: Path, cli: Cli) -> None:
    """`account replace-card` blocks the lost card and gives the member a new number, or the blank card
    named with --new."""
    (member, _), numbers = _members(shop, (10, 20))
    first = json.loads(ok(cli("account", "replace-card", numbers[0], "--format", "json")).out)[0]
    assert (first["member"], first["blocked"], first["issued"]) == (member, numbers[0], True)
    assert count(
        shop, "cards", f"number = '{first['new_card']}' AND member_id = {member} AND state = 'active'"
    )
    second = json.loads(
        ok(cli("account", "replace-card", first["new_card"], "--new", numbers[2], "--format", "json")).out
    )[0]
    assert (second["new_card"], second["issued"]) == (numbers[2], False)
    assert count(shop, "cards", f"member_id = {member} AND state = 'blocked'") == 2


def test_replace_card_errors_are_one_line(shop: Path, cli: Cli) -> None:
    """A mistyped, unknown, blank or blocked card, or a new card that is not blank, is one error line."""
    _, numbers = _members(shop, (10, 20))
    typo = numbers[0][:-1] + str((int(numbers[0][-1]) + 1) % 10)
    one_line_error(cli("account", "replace-card", typo))
    one_line_error(cli("account", "replace-card", numbers[2]), "blank")
    one_line_error(cli("account", "replace-card", numbers[0], "--new", numbers[1]), "active")
    assert count(shop, "cards", "state = 'blocked'") == 0
