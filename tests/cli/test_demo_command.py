"""`loyalty demo`: the coalition demo, scaled down (the full size runs in `make demo`)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, ok


def test_demo_builds_history_narrates_a_till_day_and_can_run_twice(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo posts its history, explains a basket, redeems, refunds, writes a QR PNG and a PDF, prints the
    liability and the serve command with three API keys; a second run rebuilds the same database."""
    monkeypatch.delenv("LOYALTY_DATABASE_URL", raising=False)
    target = tmp_path / "var"
    args = ("demo", "--members", "40", "--transactions", "400", "--dir", target)
    first = ok(cli(*args)).out
    for expected in (
        "400 purchases of 40 members",
        "Post the basket",
        "coffee-stamps",
        "total ",
        "Redeem",
        "Return one cheesecake",
        "The customer's balance",
        "Liability:",
        "loyalty serve --port 8000",
        "/schema/swagger",
    ):
        assert expected in first, expected
    assert (target / "demo-card.png").read_bytes().startswith(b"\x89PNG")
    assert (target / "demo-cards.pdf").read_bytes().startswith(b"%PDF")
    assert {m.group(1) for m in re.finditer(r"^\s+(admin|marketer|cashier)\s+lk_", first, re.M)} == {
        "admin",
        "marketer",
        "cashier",
    }
    secrets = (target / "secrets.json").read_bytes()
    second = ok(cli(*args)).out
    assert "400 purchases of 40 members" in second
    assert (target / "secrets.json").read_bytes() == secrets  # kept between runs
    with sqlite3.connect(target / "demo.db") as conn:
        assert (
            conn.execute("SELECT COUNT(*) FROM transactions WHERE channel = 'till'").fetchone()[0] == 401
        )  # and the till day's basket
        assert conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 3
