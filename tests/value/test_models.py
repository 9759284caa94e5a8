"""BG/NBD and Gamma-Gamma reproduce the published fits on the CDNOW sample, and their predictions
behave as the papers say (a customer long silent after a busy spell is less likely alive)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from loyalty.value.models import BetaGeo, fit_bgnbd, fit_gamma_gamma

#: Fader, Hardie & Lee (2005), "Counting your customers the easy way", table 1 (weeks).
BGNBD_PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
#: Fader, Hardie & Lee (2005), "RFM and CLV", on the 946 repeat buyers.
GAMMA_GAMMA_PUBLISHED = {"p": 6.25, "q": 3.74, "gamma": 15.44}


def _rows(cdnow: dict[str, str], name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(cdnow[name])))


def test_bgnbd_reproduces_the_published_cdnow_fit(cdnow: dict[str, str]) -> None:
    rows = _rows(cdnow, "cdnow_customers_summary.csv")
    assert len(rows) == 2357
    fitted = fit_bgnbd(
        [float(r["frequency"]) for r in rows],
        [float(r["recency"]) for r in rows],
        [float(r["T"]) for r in rows],
    )
    for name, published in BGNBD_PUBLISHED.items():
        assert getattr(fitted, name) == pytest.approx(published, rel=0.02), name


def test_gamma_gamma_reproduces_the_published_cdnow_fit(cdnow: dict[str, str]) -> None:
    rows = _rows(cdnow, "cdnow_customers_summary_with_transactions.csv")
    frequency = [float(r["x"]) for r in rows]
    assert sum(1 for x in frequency if x > 0) == 946
    fitted = fit_gamma_gamma(frequency, [float(r["zbar"]) for r in rows])
    for name, published in GAMMA_GAMMA_PUBLISHED.items():
        assert getattr(fitted, name) == pytest.approx(published, rel=0.02), name


def test_conditional_expectation_matches_the_paper() -> None:
    """FHL 2005, section 5: the customer with x = 2, t_x = 30.43, T = 38.86 weeks is expected to
    make 1.226 purchases in the next 39 weeks under the published parameters."""
    model = BetaGeo(**BGNBD_PUBLISHED)
    assert model.expected_purchases(39, [2], [30.43], [38.86])[0] == pytest.approx(1.226, abs=0.005)


def test_silence_after_a_busy_spell_lowers_the_chance_of_being_alive() -> None:
    model = BetaGeo(**BGNBD_PUBLISHED)
    recent, silent = model.alive([10, 10], [38, 10], [39, 39])
    assert recent > 0.9 > 0.5 > silent
    # Someone who never came back after the first purchase is not judged by a rhythm they never had.
    assert model.alive([0], [0], [39])[0] == 1.0
    assert np.all(model.expected_purchases(10, [0, 5], [0, 20], [39, 39]) >= 0)
