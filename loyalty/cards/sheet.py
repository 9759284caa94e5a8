"""Printable sheets of blank cards: A4 pages of credit-card-sized cards with crop marks.

Each card shows the program name, its QR (drawn as vector rectangles straight from the QR matrix:
sharp at any printer resolution, and much faster than embedding a PNG per card) and its printed
number in groups of four. Cards sit edge to edge, two across and five down, so one straight cut
along each crop mark separates them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from reportlab.lib.pagesizes import A4  # type: ignore[import-untyped]
from reportlab.lib.units import mm  # type: ignore[import-untyped]
from reportlab.pdfbase.pdfmetrics import stringWidth  # type: ignore[import-untyped]
from reportlab.pdfgen.canvas import Canvas  # type: ignore[import-untyped]

from loyalty.cards.numbers import format_card_number, luhn_valid
from loyalty.cards.qr import QUIET_ZONE, dark_runs, qr_matrix

__all__ = ["CARDS_PER_PAGE", "MAX_SHEET_CARDS", "SheetCard", "render_sheet"]

#: ISO/IEC 7810 ID-1, the size of a payment card: fits every wallet.
CARD_WIDTH = 85.60 * mm
CARD_HEIGHT = 53.98 * mm
COLUMNS, ROWS = 2, 5
CARDS_PER_PAGE = COLUMNS * ROWS
#: Largest batch one PDF holds (1,000 pages); bigger orders are split into several batches.
MAX_SHEET_CARDS = 10_000

_PAGE_WIDTH, _PAGE_HEIGHT = A4
_GRID_LEFT = (_PAGE_WIDTH - COLUMNS * CARD_WIDTH) / 2
_GRID_BOTTOM = (_PAGE_HEIGHT - ROWS * CARD_HEIGHT) / 2
_PAD = 4 * mm
#: The QR's side, quiet zone included; at version 4 a module is 0.88 mm, easy for any phone.
_QR_SIDE = 36 * mm
_QR_INSET = 1.5 * mm  # the quiet zone is white anyway, so the symbol may come close to the edge
# Marks end 5.5 mm from the paper's edge: inside what office printers can print.
_CROP_GAP, _CROP_LENGTH = 2 * mm, 6 * mm

_NAME_FONT, _NAME_SIZES = "Helvetica-Bold", (13, 12, 11, 10, 9, 8)
_CAPTION_FONT, _CAPTION_SIZE = "Helvetica", 7
_NUMBER_FONT, _NUMBER_SIZE = "Courier-Bold", 13
_FOOTER_FONT, _FOOTER_SIZE = "Helvetica", 7


@dataclass(frozen=True, slots=True)
class SheetCard:
    """One blank card to print: its number (digits only) and the URL its QR holds."""

    number: str
    qr_payload: str


def _fit(text: str, font: str, sizes: Sequence[float], width: float) -> tuple[str, float]:
    """The largest of ``sizes`` at which ``text`` fits ``width``; at the smallest, cut with an ellipsis."""
    for size in sizes:
        if stringWidth(text, font, size) <= width:
            return text, size
    size = sizes[-1]
    while text and stringWidth(text + "…", font, size) > width:
        text = text[:-1]
    return text.rstrip() + "…", size


def _draw_card(
    c: Canvas, card: SheetCard, x: float, y: float, name: tuple[str, float], caption: str | None
) -> None:
    top = y + CARD_HEIGHT
    text, size = name
    c.setFont(_NAME_FONT, size)
    c.drawString(x + _PAD, top - _PAD - size, text)
    if caption:
        c.setFont(_CAPTION_FONT, _CAPTION_SIZE)
        c.drawString(x + _PAD, top - _PAD - size - 4 - _CAPTION_SIZE, caption)
    c.setFont(_NUMBER_FONT, _NUMBER_SIZE)
    c.drawString(x + _PAD, y + _PAD + 2 * mm, format_card_number(card.number))

    matrix = qr_matrix(card.qr_payload)
    module = _QR_SIDE / (len(matrix) + 2 * QUIET_ZONE)
    left = x + CARD_WIDTH - _QR_INSET - _QR_SIDE + QUIET_ZONE * module
    upper = top - _QR_INSET - QUIET_ZONE * module
    # Raw operators in module units, y pointing down the rows: integer rectangles and one fill.
    # reportlab's path API formats four floats per rectangle in pure Python, which took about as
    # long as encoding the QR itself.
    runs = " ".join(f"{col} {row} {n} 1 re" for row, col, n in dark_runs(matrix))
    c.addLiteral(f"q 0 g {module:.4f} 0 0 {-module:.4f} {left:.3f} {upper:.3f} cm {runs} f Q")


def _draw_crop_marks(c: Canvas) -> None:
    right = _GRID_LEFT + COLUMNS * CARD_WIDTH
    top = _GRID_BOTTOM + ROWS * CARD_HEIGHT
    c.setLineWidth(0.3)
    c.setStrokeGray(0)
    for i in range(COLUMNS + 1):
        x = _GRID_LEFT + i * CARD_WIDTH
        c.line(x, top + _CROP_GAP, x, top + _CROP_GAP + _CROP_LENGTH)
        c.line(x, _GRID_BOTTOM - _CROP_GAP, x, _GRID_BOTTOM - _CROP_GAP - _CROP_LENGTH)
    for j in range(ROWS + 1):
        y = _GRID_BOTTOM + j * CARD_HEIGHT
        c.line(_GRID_LEFT - _CROP_GAP, y, _GRID_LEFT - _CROP_GAP - _CROP_LENGTH, y)
        c.line(right + _CROP_GAP, y, right + _CROP_GAP + _CROP_LENGTH, y)


def _draw_guides(c: Canvas) -> None:
    """Faint card outlines for cutting with scissors where there is no guillotine."""
    c.saveState()
    c.setLineWidth(0.25)
    c.setStrokeGray(0.85)
    for i in range(COLUMNS):
        for j in range(ROWS):
            c.rect(_GRID_LEFT + i * CARD_WIDTH, _GRID_BOTTOM + j * CARD_HEIGHT, CARD_WIDTH, CARD_HEIGHT)
    c.restoreState()


def render_sheet(
    cards: Sequence[SheetCard],
    *,
    program_name: str,
    caption: str | None = None,
    label: str | None = None,
    guides: bool = True,
) -> bytes:
    """A PDF of ``cards`` on A4 pages, ten per page, in order (left to right, top to bottom).

    ``caption`` is a small line under the program name on every card (an outlet, "Scan me");
    ``label`` names the batch in each page's footer. Text uses the PDF standard fonts, which cover
    Latin-1; other characters print as a box.
    """
    if not cards:
        raise ValueError("a sheet needs at least one card")
    if len(cards) > MAX_SHEET_CARDS:
        raise ValueError(f"a sheet holds at most {MAX_SHEET_CARDS} cards")
    for card in cards:
        if not luhn_valid(card.number):
            raise ValueError(f"not a valid card number: {card.number!r}")
    name_width = CARD_WIDTH - _QR_SIDE - _QR_INSET - _PAD - 2 * mm
    name = _fit(program_name.strip(), _NAME_FONT, _NAME_SIZES, name_width)
    if caption:
        caption = _fit(caption.strip(), _CAPTION_FONT, (_CAPTION_SIZE,), name_width)[0]
    pages = -(-len(cards) // CARDS_PER_PAGE)

    out = io.BytesIO()
    c = Canvas(out, pagesize=A4, pageCompression=1, invariant=True)
    c.setTitle(f"{program_name} cards" + (f": {label}" if label else ""))
    c.setCreator("loyalty")
    for page in range(pages):
        if guides:
            _draw_guides(c)
        _draw_crop_marks(c)
        for slot, card in enumerate(cards[page * CARDS_PER_PAGE : (page + 1) * CARDS_PER_PAGE]):
            col, row = slot % COLUMNS, slot // COLUMNS
            x = _GRID_LEFT + col * CARD_WIDTH
            y = _GRID_BOTTOM + (ROWS - 1 - row) * CARD_HEIGHT
            _draw_card(c, card, x, y, name, caption)
        # In the top margin, between the left and the middle crop marks.
        footer = _fit(
            f"{label}  ·  page {page + 1} of {pages}" if label else f"page {page + 1} of {pages}",
            _FOOTER_FONT,
            (_FOOTER_SIZE,),
            CARD_WIDTH - 10 * mm,
        )[0]
        c.setFont(_FOOTER_FONT, _FOOTER_SIZE)
        c.setFillGray(0.4)
        c.drawString(_GRID_LEFT + 5 * mm, _PAGE_HEIGHT - _GRID_BOTTOM + 4 * mm, footer)
        c.setFillGray(0)
        c.showPage()
    c.save()
    return out.getvalue()
