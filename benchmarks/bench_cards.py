"""Cards benchmarks: a 1,000-card batch PDF, and token signing and verifying per second.

Run with ``.venv/bin/python -m pytest benchmarks/bench_cards.py --benchmark-enable -s``; each test also
prints its figure in plain words.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pytest_benchmark.fixture import BenchmarkFixture

from loyalty.cards.numbers import make_card_number
from loyalty.cards.qr import card_url, qr_matrix, qr_png
from loyalty.cards.sheet import SheetCard, render_sheet
from loyalty.cards.tokens import KeyRing, SigningKey, generate_secret, sign_token, verify_token

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RING = KeyRing(7, [SigningKey(1, generate_secret())])
BASE = "https://bonus.example.com"
BATCH = [
    SheetCard(make_card_number("6012", serial), card_url(BASE, sign_token(RING, 100_000 + serial, now=NOW)))
    for serial in range(1000)
]
TOKEN = sign_token(RING, 123_456, now=NOW)


def _report(benchmark: BenchmarkFixture, what: str, per_call: int = 1) -> None:
    stats = benchmark.stats
    if stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    median = stats.stats.median
    rate = f", {per_call / median:,.0f} per second" if per_call > 1 else ""
    print(f"\n{what}: median {median * 1000:,.1f} ms{rate}")


def test_render_1000_card_batch(benchmark: BenchmarkFixture) -> None:
    """A 1,000-card batch (100 A4 pages) renders to one PDF."""
    pdf = benchmark.pedantic(  # type: ignore[no-untyped-call]
        render_sheet, args=(BATCH,), kwargs={"program_name": "Kaffeehaus Bonus"}, rounds=3
    )
    assert pdf.startswith(b"%PDF")
    _report(benchmark, f"1,000-card PDF ({len(pdf) / 1e6:.1f} MB)")


def test_qr_matrices_of_1000_cards(benchmark: BenchmarkFixture) -> None:
    """Encoding the 1,000 QR matrices alone: the share of the batch that is the QR encoder."""
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        lambda: [qr_matrix(card.qr_payload) for card in BATCH], rounds=3
    )
    _report(benchmark, "1,000 QR matrices")


def test_card_png(benchmark: BenchmarkFixture) -> None:
    """One card's QR as a PNG, as the API serves it."""
    benchmark(qr_png, BATCH[0].qr_payload)
    _report(benchmark, "QR PNG")


def test_sign_tokens(benchmark: BenchmarkFixture) -> None:
    """Signing 1,000 tokens."""
    benchmark(lambda: [sign_token(RING, card_id, now=NOW) for card_id in range(1000)])
    _report(benchmark, "token sign", per_call=1000)


def test_verify_tokens(benchmark: BenchmarkFixture) -> None:
    """Verifying a token 1,000 times."""
    benchmark(lambda: [verify_token(TOKEN, RING, now=NOW) for _ in range(1000)])
    _report(benchmark, "token verify", per_call=1000)
