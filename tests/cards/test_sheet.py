"""Printable sheets: A4 pages of cards whose text and QR codes read back from the PDF."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

import pytest
import zxingcpp
from PIL import Image, ImageDraw
from pypdf import PdfReader
from pypdf.generic import ContentStream

from loyalty.cards.numbers import format_card_number, make_card_number
from loyalty.cards.qr import card_url
from loyalty.cards.sheet import CARD_HEIGHT, CARD_WIDTH, CARDS_PER_PAGE, SheetCard, render_sheet
from loyalty.cards.tokens import KeyRing, SigningKey, sign_token

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RING = KeyRing(7, [SigningKey(1, bytes(range(32)))])
BASE = "https://bonus.example.com"
A4_POINTS = (595.2756, 841.8898)


def _batch(count: int, start: int = 1000) -> list[SheetCard]:
    return [
        SheetCard(make_card_number("6012", serial), card_url(BASE, sign_token(RING, serial, now=NOW)))
        for serial in range(start, start + count)
    ]


CARDS = _batch(24)


@pytest.fixture(scope="module")
def reader() -> PdfReader:
    pdf = render_sheet(CARDS, program_name="Kaffeehaus Bonus", caption="Café am Markt", label="Batch 17")
    return PdfReader(io.BytesIO(pdf))


def _qr_codes(reader: PdfReader, page_number: int) -> list[tuple[tuple[float, float, float, float], str]]:
    """Each QR on a page, as drawn: its dark-module bounding box in points and what a scanner reads."""
    page = reader.pages[page_number]
    found = []
    transform: list[float] | None = None
    runs: list[tuple[int, int, int]] = []
    for operands, operator in ContentStream(page.get_contents(), reader).operations:
        if operator == b"cm":
            transform, runs = [float(v) for v in operands], []
        elif operator == b"re" and transform is not None:
            runs.append(tuple(int(v) for v in operands[:3]))  # type: ignore[arg-type]
        elif operator == b"f" and transform is not None and runs:
            module, _, _, _, left, upper = transform
            side = max(x + n for x, _, n in runs)
            rows = max(y for _, y, _ in runs) + 1
            scale, quiet = 6, 4
            image = Image.new("L", ((side + 2 * quiet) * scale, (rows + 2 * quiet) * scale), 255)
            draw = ImageDraw.Draw(image)
            for x, y, n in runs:
                x0, y0 = (x + quiet) * scale, (y + quiet) * scale
                draw.rectangle((x0, y0, x0 + n * scale - 1, y0 + scale - 1), fill=0)
            (text,) = [barcode.text for barcode in zxingcpp.read_barcodes(image)]
            found.append(((left, upper - rows * module, left + side * module, upper), text))
            transform = None
    return found


def test_a_24_card_batch_fills_three_a4_pages(reader: PdfReader) -> None:
    """Twenty-four cards at ten per page make three A4 pages."""
    assert CARDS_PER_PAGE == 10 and len(reader.pages) == 3
    for page in reader.pages:
        assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx(A4_POINTS, abs=0.01)


def test_the_text_holds_every_card_number_in_groups_of_four(reader: PdfReader) -> None:
    """Every card number of the batch is printed, grouped by four, on the page its position says."""
    texts = [page.extract_text() for page in reader.pages]
    for i, card in enumerate(CARDS):
        assert format_card_number(card.number) in texts[i // CARDS_PER_PAGE]
    assert sum(text.count("6012 ") for text in texts) == len(CARDS)


def test_every_card_shows_program_name_and_caption(reader: PdfReader) -> None:
    """Each card carries the program name and the caption; each page names the batch and its number."""
    texts = [page.extract_text() for page in reader.pages]
    assert [text.count("Kaffeehaus Bonus") for text in texts] == [10, 10, 4]
    assert [text.count("Café am Markt") for text in texts] == [10, 10, 4]
    assert "Batch 17" in texts[0] and "page 3 of 3" in texts[2]


def test_every_qr_reads_back_as_its_card_url_inside_its_card(reader: PdfReader) -> None:
    """The QR drawn on each card decodes to that card's URL and lies within that card's cell."""
    decoded = [qr for page in range(len(reader.pages)) for qr in _qr_codes(reader, page)]
    assert [text for _, text in decoded] == [card.qr_payload for card in CARDS]
    grid_left = (A4_POINTS[0] - 2 * CARD_WIDTH) / 2
    grid_bottom = (A4_POINTS[1] - 5 * CARD_HEIGHT) / 2
    for slot, ((x0, y0, x1, y1), _) in enumerate(decoded):
        col, row = slot % 2, (slot % CARDS_PER_PAGE) // 2
        left, bottom = grid_left + col * CARD_WIDTH, grid_bottom + (4 - row) * CARD_HEIGHT
        assert left < x0 < x1 < left + CARD_WIDTH and bottom < y0 < y1 < bottom + CARD_HEIGHT
        assert x1 - x0 > 25 / 25.4 * 72  # dark modules span more than 25 mm: easy for any phone


def test_a_long_program_name_is_shortened_to_fit() -> None:
    """A program name too long for the card is cut with an ellipsis instead of running under the QR."""
    pdf = render_sheet(CARDS[:1], program_name="Kaffeehaus " * 20)
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Kaffeehaus Kaffeehaus" in text and "…" in text and "Kaffeehaus " * 6 not in text


def test_rendering_is_deterministic() -> None:
    """The same batch renders to the same bytes, so a reprint is identical."""
    assert render_sheet(CARDS[:3], program_name="P") == render_sheet(CARDS[:3], program_name="P")


def test_a_hundred_cards_render_quickly() -> None:
    """A 100-card batch (ten pages) renders in well under two seconds."""
    cards = _batch(100, start=5000)
    started = time.perf_counter()
    pdf = render_sheet(cards, program_name="Kaffeehaus Bonus")
    assert time.perf_counter() - started < 2.0
    assert len(PdfReader(io.BytesIO(pdf)).pages) == 10


@pytest.mark.parametrize(
    "cards",
    [[], [SheetCard("6012000000000004", BASE + "/c/x")], [SheetCard("6012 0000 0000 0003", BASE + "/c/x")]],
)
def test_an_empty_batch_or_a_bad_number_is_refused(cards: list[SheetCard]) -> None:
    """A sheet needs cards, and each needs a valid number of bare digits."""
    with pytest.raises(ValueError):
        render_sheet(cards, program_name="P")
