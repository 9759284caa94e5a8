"""`loyalty cards batch`: blank cards for an outlet as a printable PDF with signed QR codes."""

from __future__ import annotations

from pathlib import Path

import pypdf
import pytest

from tests.cli.conftest import Cli, count, ok, one_line_error


def test_cards_batch_writes_a_pdf_of_new_blank_cards(shop: Path, tmp_path: Path, cli: Cli) -> None:
    """`cards batch` issues N blank cards for the outlet and writes them, ten a page, with their QR URLs."""
    target = tmp_path / "cards.pdf"
    assert (
        "12 cards for cafe-1"
        in ok(cli("cards", "batch", "--outlet", "cafe-1", "--count", "12", "--out", target)).out
    )
    assert count(shop, "cards", "state = 'blank' AND outlet_id IS NOT NULL") == 12
    pdf = pypdf.PdfReader(target)
    assert len(pdf.pages) == 2
    text = pdf.pages[0].extract_text()
    assert "Stadtbonus" in text and "7301" in text.replace(" ", "")


def test_card_tokens_carry_the_cards_database_ids(
    shop: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each printed QR is the program's card URL with a token that verifies to that card's row id."""
    import sqlite3
    from datetime import UTC, datetime

    from loyalty.cards import sheet
    from loyalty.cards.secrets import load_secrets
    from loyalty.cards.tokens import verify_token
    from loyalty.members.lookup import token_of

    printed: list[sheet.SheetCard] = []
    real = sheet.render_sheet
    monkeypatch.setattr(sheet, "render_sheet", lambda cards, **kw: printed.extend(cards) or real(cards, **kw))
    ok(cli("cards", "batch", "--outlet", "cafe-1", "--count", "3", "--out", tmp_path / "three.pdf"))
    with sqlite3.connect(shop) as conn:
        ids = dict(conn.execute("SELECT number, id FROM cards").fetchall())
        tenant_id = conn.execute("SELECT id FROM tenants").fetchone()[0]
    ring = load_secrets().ring(tenant_id)
    assert len(printed) == 3
    for card in printed:
        assert card.qr_payload.startswith("http://127.0.0.1:8000/c/")
        token = verify_token(token_of(card.qr_payload), ring, now=datetime.now(UTC), tenant_id=tenant_id)
        assert token.card_id == ids[card.number]


def test_cards_batch_rejects_bad_input_and_issues_nothing(shop: Path, tmp_path: Path, cli: Cli) -> None:
    """An unknown outlet, a zero count or a missing directory: one error line and no card issued."""
    one_line_error(
        cli("cards", "batch", "--outlet", "nope", "--count", "5", "--out", tmp_path / "a.pdf"),
        "outlet 'nope'",
    )
    one_line_error(
        cli("cards", "batch", "--outlet", "cafe-1", "--count", "0", "--out", tmp_path / "a.pdf"), "--count"
    )
    one_line_error(
        cli("cards", "batch", "--outlet", "cafe-1", "--count", "5", "--out", tmp_path / "no" / "a.pdf"),
        "no such directory",
    )
    assert count(shop, "cards") == 0 and not (tmp_path / "a.pdf").exists()


def test_cards_batch_needs_the_secrets_file(shop: Path, tmp_path: Path, cli: Cli) -> None:
    """Without the secrets file the command says to run `loyalty secrets init` and issues nothing."""
    (tmp_path / "secrets.json").unlink()
    one_line_error(
        cli("cards", "batch", "--outlet", "cafe-1", "--count", "5", "--out", tmp_path / "a.pdf"),
        "secrets init",
    )
    assert count(shop, "cards") == 0
