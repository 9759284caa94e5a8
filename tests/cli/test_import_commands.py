"""`loyalty import transactions`: streamed history import in all-or-nothing batches."""

from __future__ import annotations

import json
from pathlib import Path

from loyalty.cards.numbers import make_card_number
from tests.cli.conftest import Cli, count, ok, one_line_error

HEADER = "external_id,outlet,card,member,occurred_at,sku,category,quantity,unit_price,tags\n"
CARD_A, CARD_B, CARD_C = (make_card_number("7301", n) for n in (101, 102, 103))


def _csv(tmp_path: Path, body: str, name: str = "history.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body, encoding="utf-8")
    return path


GOOD = (
    f"r1,cafe-1,{CARD_A},m1,2025-03-04T09:10:00+01:00,LATTE,coffee,2,390,\n"
    f"r1,cafe-1,{CARD_A},m1,2025-03-04T09:10:00+01:00,CAKE,cake,1,420,sweet;daily\n"
    f"r2,bakery-1,{CARD_B},m2,2025-03-05T07:00:00+01:00,SOURDOUGH,organic,1,480,\n"
    f"r3,wash-1,{CARD_C},m1,2025-03-06T12:00:00+01:00,WASH,carwash,1,990,\n"
)


def test_csv_import_posts_purchases_and_a_second_run_adds_nothing(
    shop: Path, tmp_path: Path, cli: Cli
) -> None:
    """Rows with the same external id form one purchase; re-running the file skips every purchase."""
    path = _csv(tmp_path, GOOD)
    done = ok(cli("import", "transactions", path))
    assert "3 imported" in done.out and "0 rejected" in done.out
    assert count(shop, "transactions") == 3 and count(shop, "transaction_items") == 4
    assert count(shop, "transactions", "channel = 'import'") == 3
    # Member m1 has two cards (A and C): one member; m2 another.
    assert count(shop, "members") == 2 and count(shop, "cards", "state = 'active'") == 3
    again = ok(cli("import", "transactions", path))
    assert "0 imported" in again.out and "3 already booked" in again.out
    assert count(shop, "transactions") == 3 and count(shop, "ledger_entries") == 6


def test_jsonl_import(shop: Path, tmp_path: Path, cli: Cli) -> None:
    """JSON lines hold one purchase per line, with its items."""
    path = tmp_path / "history.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(p)
            for p in [
                {
                    "external_id": "j1",
                    "outlet": "cafe-1",
                    "card": CARD_A,
                    "occurred_at": "2025-03-04T09:10:00Z",
                    "items": [{"sku": "LATTE", "category": "coffee", "quantity": 10, "unit_price": 390}],
                },
                {
                    "external_id": "j2",
                    "outlet": "cafe-1",
                    "card": CARD_A,
                    "occurred_at": "2025-03-05T09:10:00Z",
                    "items": [{"sku": "LATTE", "category": "coffee", "unit_price": 390}],
                },
            ]
        )
        + "\n"
    )
    assert "2 imported" in ok(cli("import", "transactions", path)).out
    assert count(shop, "vouchers") == 1  # the tenth coffee stamp filled the card


def test_a_bad_row_rejects_its_batch_with_line_number_and_reason(
    shop: Path, tmp_path: Path, cli: Cli
) -> None:
    """A bad row rejects its whole batch (nothing of it written), names its line, and other batches import."""
    body = GOOD + (
        f"r4,cafe-1,{CARD_A},,2025-03-07T09:00:00,LATTE,coffee,1,390,\n"  # line 6: no time zone
        f"r5,cafe-1,{CARD_A},,2025-03-08T09:00:00Z,LATTE,coffee,1,390,\n"
        f"r6,nowhere,{CARD_A},,2025-03-08T09:00:00Z,LATTE,coffee,1,390,\n"  # line 8: unknown outlet
    )
    done = cli("import", "transactions", _csv(tmp_path, body), "--batch-size", "3")
    one_line_error(done, "1 batch rejected")
    assert "lines 6-8 rejected" in done.err and "line 6: occurred_at" in done.err and "time zone" in done.err
    assert count(shop, "transactions") == 3  # the first batch (r1-r3); r5 went down with its batch
    # The unknown outlet is only found when posting: it too rejects its batch, with its line.
    fixed = body.replace("2025-03-07T09:00:00,", "2025-03-07T09:00:00Z,")
    done = cli("import", "transactions", _csv(tmp_path, fixed, "fixed.csv"), "--batch-size", "3")
    one_line_error(done, "1 batch rejected")
    assert "line 8: outlet 'nowhere' not found" in done.err
    assert count(shop, "transactions") == 3


def test_a_card_of_another_tenant_or_with_a_bad_check_digit_is_rejected(
    shop: Path, tmp_path: Path, cli: Cli
) -> None:
    """Card numbers are checked: a wrong check digit and a foreign prefix are row errors."""
    foreign = make_card_number("9999", 5)
    bad_digit = CARD_A[:-1] + str((int(CARD_A[-1]) + 1) % 10)
    body = (
        f"x1,cafe-1,{bad_digit},,2025-03-04T09:10:00Z,LATTE,coffee,1,390,\n"
        f"x2,cafe-1,{foreign},,2025-03-04T09:10:00Z,LATTE,coffee,1,390,\n"
    )
    done = cli("import", "transactions", _csv(tmp_path, body), "--batch-size", "1")
    one_line_error(done, "2 batches rejected")
    assert (
        "line 2: card" in done.err and "line 3: card" in done.err and "not a card of this tenant" in done.err
    )
    assert count(shop, "transactions") == 0 and count(shop, "cards") == 0


def test_a_file_with_missing_columns_or_unknown_format_writes_nothing(
    shop: Path, tmp_path: Path, cli: Cli
) -> None:
    """A header without the required columns, an unknown suffix or a missing file: one line, no rows."""
    path = tmp_path / "bad.csv"
    path.write_text("external_id,outlet\nr1,cafe-1\n")
    one_line_error(
        cli("import", "transactions", path), "lacks the columns card, occurred_at, sku, unit_price"
    )
    other = tmp_path / "history.xlsx"
    other.write_text("x")
    one_line_error(cli("import", "transactions", other), "--format")
    one_line_error(cli("import", "transactions", tmp_path / "missing.csv"), "no such file")
    assert count(shop, "transactions") == 0


def test_import_streams_the_file(shop: Path, tmp_path: Path) -> None:
    """The reader yields purchases one at a time from a stream (it never reads the whole file)."""
    from rich.progress import Progress

    from loyalty.ops import importer

    path = _csv(tmp_path, GOOD * 4000)  # ~1 MB: far more than one read
    size = path.stat().st_size
    with Progress(disable=True) as bar:
        task = bar.add_task("import", total=size)
        with bar.open(path, "r", encoding="utf-8-sig", newline="", task_id=task) as stream:
            rows = importer.read_file(stream, "csv")
            first = next(rows)
            assert isinstance(first, importer.Purchase) and len(first.items) == 2
            assert 0 < bar.tasks[0].completed < size / 4, (bar.tasks[0].completed, size)
    ids = [p.external_id for p in importer.read_csv(path.open(newline=""))]
    assert ids[:3] == ["r1", "r2", "r3"] and len(ids) == 3 * 4000
