"""QR codes of card URLs: the module matrix (from ``qrcode``), PNG and SVG images of it.

The payload is ``{public_base_url}/c/{token}``: a phone camera opens the member's page and a till
scanner reads the same token out of the URL. The matrix is also what the printable sheet draws as
vector rectangles, so every rendering of a card's QR comes from one encoder.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import qrcode  # type: ignore[import-untyped]  # no stubs installed (types-qrcode)
from qrcode.constants import ERROR_CORRECT_M  # type: ignore[import-untyped]

from loyalty.cards.tokens import MAX_TOKEN_LENGTH

__all__ = [
    "QUIET_ZONE",
    "card_url",
    "dark_runs",
    "qr_matrix",
    "qr_png",
    "qr_svg",
    "token_from_url",
]

#: Light modules around the symbol, the minimum ISO/IEC 18004 asks for; scanners need it.
QUIET_ZONE = 4
#: Level M recovers ~15% damage: a worn card in a wallet still scans, and a 60-character URL still
#: fits version 4 (33 x 33 modules), which prints sharp at credit-card size.
ERROR_CORRECTION = ERROR_CORRECT_M
#: Longest base URL accepted, so that every card's QR stays small enough to print and scan.
MAX_BASE_URL_LENGTH = 200
#: Path segment of the card page; the API routes ``/c/{token}`` to it.
CARD_PATH = "/c/"

Matrix = list[list[bool]]


def card_url(public_base_url: str, token: str) -> str:
    """The URL a card's QR holds: the program's public base URL, then ``/c/`` and the token."""
    base = public_base_url.rstrip("/")
    parts = urlsplit(base)
    if (
        parts.scheme not in ("https", "http")
        or not parts.netloc
        or parts.query
        or parts.fragment
        or len(base) > MAX_BASE_URL_LENGTH
        or not base.isascii()
        or any(c.isspace() for c in base)
    ):
        raise ValueError(f"not a usable public base URL: {public_base_url!r}")
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not _url_safe(token):
        raise ValueError(f"not a card token: {token!r}")
    return f"{base}{CARD_PATH}{token}"


def token_from_url(url: str, public_base_url: str) -> str | None:
    """The token in a scanned card URL of this program, or ``None`` when the URL is not one.

    A till scanner reads the whole URL; the token still has to be verified.
    """
    prefix = public_base_url.rstrip("/") + CARD_PATH
    if not url.startswith(prefix):
        return None
    token = url[len(prefix) :]
    return token if token and "/" not in token else None


def _url_safe(text: str) -> bool:
    return all(c.isalnum() or c in "-_" for c in text)


def _encoder(payload: str) -> Any:  # a qrcode.QRCode
    qr = qrcode.QRCode(error_correction=ERROR_CORRECTION, border=QUIET_ZONE)
    qr.add_data(payload.encode("utf-8"))
    qr.make(fit=True)
    return qr


def qr_matrix(payload: str) -> Matrix:
    """The symbol's modules, row by row, ``True`` for dark; without the quiet zone."""
    return [[bool(m) for m in row] for row in _encoder(payload).modules]


def dark_runs(matrix: Sequence[Sequence[bool]]) -> Iterator[tuple[int, int, int]]:
    """``(row, column, length)`` of each horizontal run of dark modules.

    Drawing one rectangle per run instead of per module halves the shapes in a PDF or SVG and
    leaves no hairline seams between neighbouring modules.
    """
    for y, row in enumerate(matrix):
        x, width = 0, len(row)
        while x < width:
            if row[x]:
                start = x
                while x < width and row[x]:
                    x += 1
                yield y, start, x - start
            else:
                x += 1


def qr_png(payload: str, *, box_size: int = 10) -> bytes:
    """A black-on-white PNG of the QR, ``box_size`` pixels per module, quiet zone included."""
    if not 1 <= box_size <= 100:
        raise ValueError("box_size is 1 to 100 pixels")
    qr = _encoder(payload)
    qr.box_size = box_size
    out = io.BytesIO()
    qr.make_image().save(out, format="PNG")
    return out.getvalue()


def qr_svg(payload: str, *, size_mm: float | None = None) -> bytes:
    """A standalone SVG of the QR: one path of dark runs on a white square, quiet zone included.

    The white background keeps it scannable on dark pages; ``size_mm`` sets the printed size,
    otherwise it scales to its container.
    """
    matrix = qr_matrix(payload)
    side = len(matrix) + 2 * QUIET_ZONE
    path = "".join(f"M{x + QUIET_ZONE} {y + QUIET_ZONE}h{n}v1h-{n}z" for y, x, n in dark_runs(matrix))
    size = f' width="{size_mm:g}mm" height="{size_mm:g}mm"' if size_mm is not None else ""
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}"{size} '
        f'shape-rendering="crispEdges">'
        f'<rect width="{side}" height="{side}" fill="#fff"/>'
        f'<path fill="#000" d="{path}"/>'
        "</svg>\n"
    )
    return svg.encode("ascii")
