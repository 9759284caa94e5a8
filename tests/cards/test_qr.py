"""QR codes: what a scanner reads back from the PNG and SVG is exactly the card URL."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
import zxingcpp
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from loyalty.cards.qr import QUIET_ZONE, card_url, dark_runs, qr_matrix, qr_png, qr_svg, token_from_url
from loyalty.cards.tokens import KeyRing, SigningKey, sign_token, verify_token

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RING = KeyRing(7, [SigningKey(1, bytes(range(32)))])
BASE = "https://bonus.example.com"


def _decode(image: Image.Image) -> list[str]:
    return [barcode.text for barcode in zxingcpp.read_barcodes(image)]


def _paint(runs: list[tuple[int, int, int]], side: int, scale: int = 8) -> Image.Image:
    image = Image.new("L", (side * scale, side * scale), 255)
    draw = ImageDraw.Draw(image)
    for x, y, n in runs:
        draw.rectangle((x * scale, y * scale, (x + n) * scale - 1, (y + 1) * scale - 1), fill=0)
    return image


def test_png_decodes_to_the_exact_url_and_its_token_verifies() -> None:
    """A scanner reads the card URL from the PNG, and the token in it verifies to the card."""
    url = card_url(BASE, sign_token(RING, 4711, now=NOW))
    assert _decode(Image.open(io.BytesIO(qr_png(url)))) == [url]
    token = token_from_url(url, BASE)
    assert token is not None and verify_token(token, RING, now=NOW).card_id == 4711


def test_png_has_a_quiet_zone_and_the_asked_module_size() -> None:
    """The PNG is the symbol plus four light modules each side, box_size pixels per module, white corners."""
    url = card_url(BASE, sign_token(RING, 1, now=NOW))
    image = Image.open(io.BytesIO(qr_png(url, box_size=3))).convert("L")
    assert image.size == ((len(qr_matrix(url)) + 2 * QUIET_ZONE) * 3,) * 2
    assert image.getpixel((0, 0)) == 255 and image.getpixel((image.width - 1, image.height - 1)) == 255


def test_svg_decodes_to_the_exact_url() -> None:
    """The SVG's single path of dark runs, painted as drawn, reads back as the card URL."""
    url = card_url(BASE, sign_token(RING, 4711, now=NOW))
    root = ET.fromstring(qr_svg(url, size_mm=30))
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("width") == "30mm"
    side = int(root.get("viewBox", "").split()[2])
    (path,) = root.iter("{http://www.w3.org/2000/svg}path")
    runs = [
        (int(x), int(y), int(n)) for x, y, n in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\d+z", path.get("d", ""))
    ]
    assert _decode(_paint(runs, side)) == [url]


@given(st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=5))
def test_dark_runs_cover_exactly_the_dark_modules(matrix: list[list[bool]]) -> None:
    """The runs cover every dark module once and no light one."""
    covered = {(y, x + i) for y, x, n in dark_runs(matrix) for i in range(n)}
    assert covered == {(y, x) for y, row in enumerate(matrix) for x, dark in enumerate(row) if dark}
    assert sum(n for _, _, n in dark_runs(matrix)) == len(covered)


def test_card_url_joins_base_and_token() -> None:
    """The URL is the base without a trailing slash, /c/, then the token, which reads back from it."""
    assert (
        card_url("https://bonus.example.com/kaffee/", "AbC-_9") == "https://bonus.example.com/kaffee/c/AbC-_9"
    )
    assert (
        token_from_url("https://bonus.example.com/kaffee/c/AbC-_9", "https://bonus.example.com/kaffee")
        == "AbC-_9"
    )
    assert token_from_url("https://evil.example.com/c/AbC-_9", "https://bonus.example.com") is None
    assert token_from_url("https://bonus.example.com/c/", "https://bonus.example.com") is None


@pytest.mark.parametrize(
    ("base", "token"),
    [
        ("ftp://bonus.example.com", "abc"),
        ("bonus.example.com", "abc"),
        ("https://", "abc"),
        ("https://bonus.example.com/?x=1", "abc"),
        ("https://bonus.example.com/#top", "abc"),
        ("https://bonus.exa mple.com", "abc"),
        ("https://bönus.example.com", "abc"),
        (BASE, ""),
        (BASE, "a/b"),
        (BASE, "a?b"),
        (BASE, "ä"),
        (BASE, "a" * 60),
    ],
)
def test_card_url_refuses_unusable_parts(base: str, token: str) -> None:
    """A base URL that is not plain http(s) or a token with characters a URL would mangle is a ValueError."""
    with pytest.raises(ValueError):
        card_url(base, token)
