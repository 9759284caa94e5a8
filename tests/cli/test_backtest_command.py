"""`loyalty backtest DRAFT --from --to`: a draft replayed on booked purchases."""

from __future__ import annotations

import json
from pathlib import Path

from loyalty.cards.numbers import make_card_number
from tests.cli.conftest import COALITION, Cli, ok, one_line_error

CARD = make_card_number("7301", 9)


def _history(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "h.csv"
    path.write_text(
        "external_id,outlet,card,occurred_at,sku,category,quantity,unit_price\n"
        f"b1,bakery-1,{CARD},2025-03-03T09:00:00+01:00,SOURDOUGH,organic,2,500\n"
        f"b2,cafe-1,{CARD},2025-03-04T09:00:00+01:00,LATTE,coffee,1,390\n"
    )
    ok(cli("import", "transactions", path))


def test_backtest_prints_per_rule_difference_and_members(shop: Path, tmp_path: Path, cli: Cli) -> None:
    """A draft without the organic bonus shows that rule's points gone and the member affected."""
    _history(tmp_path, cli)
    draft = tmp_path / "draft.yaml"
    draft.write_text(COALITION.read_text().replace("earn: {multiplier: 2}", "earn: {multiplier: 1}"))
    done = ok(cli("backtest", draft, "--from", "2025-03-01", "--to", "2025-03-31"))
    assert "2 purchases replayed" in done.out and "bakery-organic" in done.out
    assert "1 of 1 get other points" in done.out
    report = json.loads(
        ok(cli("backtest", draft, "--from", "2025-03-01", "--to", "2025-03-31", "--json")).out
    )
    organic = next(r for r in report["rules"] if r["rule"] == "bakery-organic")
    assert report["difference"] == -10 and organic["actual"] == "10.00"


def test_backtest_rejects_an_invalid_draft_or_period(shop: Path, tmp_path: Path, cli: Cli) -> None:
    """An invalid draft prints its problems; a reversed or malformed period is one error line."""
    draft = tmp_path / "bad.yaml"
    draft.write_text(COALITION.read_text().replace("item.category ==", "item.categry =="))
    done = cli("backtest", draft, "--from", "2025-03-01", "--to", "2025-03-31")
    one_line_error(done, "problem")
    assert "did you mean item.category?" in done.err
    one_line_error(cli("backtest", COALITION, "--from", "2025-03-31", "--to", "2025-03-01"), "after --from")
    one_line_error(cli("backtest", COALITION, "--from", "March", "--to", "2025-03-01"), "--from")
