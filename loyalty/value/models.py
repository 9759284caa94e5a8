"""The standard customer-base models, fitted by maximum likelihood: BG/NBD for how often a customer
buys and whether they are still "alive" (Fader, Hardie & Lee 2005, "Counting your customers the
easy way"), and Gamma-Gamma for how much they spend per purchase (Fader, Hardie & Lee 2005, "RFM
and CLV"; Fader & Hardie 2013, "The Gamma-Gamma model of monetary value").

Why here and not a library: ``lifetimes`` is unmaintained since 2020 (it pins old pandas and
autograd), and ``pymc-marketing`` brings a full probabilistic stack (PyMC, PyTensor, ArviZ) for two
closed-form likelihoods. Both models are a few lines of ``scipy.special`` each; scipy fits them in
milliseconds, and the tests check the fits against the published CDNOW estimates.

Inputs per customer, in one time unit (the job uses days, the CDNOW sample weeks): ``frequency`` x,
the number of repeat purchases (purchase days after the first); ``recency`` t_x, the age of the
customer at their last purchase; ``age`` T, the time since their first purchase; and for
Gamma-Gamma the mean value of their repeat purchases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import gammaln, hyp2f1

Floats = NDArray[np.float64]


def _arrays(*values: ArrayLike) -> tuple[Floats, ...]:
    return tuple(np.asarray(v, dtype=np.float64) for v in values)


@dataclass(frozen=True, slots=True)
class BetaGeo:
    """A fitted BG/NBD model: purchase rates are Gamma(r, alpha) across customers, the chance of
    dropping out after each purchase Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float

    def alive(self, frequency: ArrayLike, recency: ArrayLike, age: ArrayLike) -> Floats:
        """The probability that each customer is still active (has not silently left)."""
        x, t_x, t = _arrays(frequency, recency, age)
        ratio = np.where(
            x > 0,
            self.a
            / (self.b + np.maximum(x, 1) - 1)
            * ((self.alpha + t) / (self.alpha + t_x)) ** (self.r + x),
            0.0,
        )
        return np.asarray(1.0 / (1.0 + ratio), dtype=np.float64)

    def expected_purchases(
        self, horizon: float, frequency: ArrayLike, recency: ArrayLike, age: ArrayLike
    ) -> Floats:
        """The expected number of purchases of each customer in the next ``horizon`` time units,
        given their history (FHL 2005, equation 10)."""
        x, t_x, t = _arrays(frequency, recency, age)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, horizon / (alpha + t + horizon))
        first = (a + b + x - 1) / (a - 1)
        second = 1 - ((alpha + t) / (alpha + t + horizon)) ** (r + x) * hyp
        ratio = np.where(
            x > 0, a / (b + np.maximum(x, 1) - 1) * ((alpha + t) / (alpha + t_x)) ** (r + x), 0.0
        )
        return np.asarray(first * second / (1 + ratio), dtype=np.float64)


def bgnbd_log_likelihood(
    params: ArrayLike, frequency: ArrayLike, recency: ArrayLike, age: ArrayLike
) -> Floats:
    """Each customer's log-likelihood under BG/NBD with ``params`` (r, alpha, a, b)."""
    r, alpha, a, b = (float(p) for p in np.asarray(params, dtype=np.float64))
    x, t_x, t = _arrays(frequency, recency, age)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + t)
    with np.errstate(divide="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return np.asarray(a1 + a2 + np.logaddexp(a3, a4), dtype=np.float64)


#: The parameters are searched between e^-12 and e^12: wide enough for every real customer base, and
#: a base with no sign of dropping out (a and b running away together) stays finite.
_LOG_BOUND = 12.0


def _fit(mean_negative_ll: Callable[[Floats], float], start: Floats) -> Floats:
    """Minimise the mean negative log-likelihood over the logarithms of the (positive) parameters.

    L-BFGS-B with numerical gradients: ~100-200 evaluations where Nelder-Mead needed thousands (a
    100,000-member tenant: 4 s against several minutes, measured with benchmarks/bench_value.py),
    with the same CDNOW estimates to four digits.
    """
    result = minimize(
        lambda logs: mean_negative_ll(np.exp(logs)),
        np.log(start),
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * len(start),
        options={"maxiter": 2_000},
    )
    if not result.success or not np.all(np.isfinite(result.x)):
        raise ValueError(f"the model did not converge on this history: {result.message}")
    return np.asarray(np.exp(result.x), dtype=np.float64)


def fit_bgnbd(frequency: ArrayLike, recency: ArrayLike, age: ArrayLike) -> BetaGeo:
    """Fit BG/NBD by maximum likelihood to one customer base."""
    x, t_x, t = _arrays(frequency, recency, age)
    if len(x) == 0:
        raise ValueError("no customers to fit")
    scale = float(np.mean(t)) or 1.0
    params = _fit(
        lambda p: -float(np.mean(bgnbd_log_likelihood(p, x, t_x, t))), np.array([1.0, scale, 1.0, 1.0])
    )
    return BetaGeo(*(float(p) for p in params))


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """A fitted Gamma-Gamma model: a customer's mean spend per purchase varies around their own
    (unobserved) mean, which is spread across customers as Gamma(q, gamma) scaled by p."""

    p: float
    q: float
    gamma: float

    def expected_spend(self, frequency: ArrayLike, mean_value: ArrayLike) -> Floats:
        """The expected value of each customer's future purchases: their own mean, shrunk towards the
        population's the fewer purchases it rests on."""
        x, m = _arrays(frequency, mean_value)
        population = self.p * self.gamma / (self.q - 1)
        own = (self.gamma + x * m) * self.p / (self.p * x + self.q - 1)
        return np.asarray(np.where(x > 0, own, population), dtype=np.float64)


def gamma_gamma_log_likelihood(params: ArrayLike, frequency: ArrayLike, mean_value: ArrayLike) -> Floats:
    """Each repeat customer's log-likelihood under Gamma-Gamma with ``params`` (p, q, gamma)."""
    p, q, g = (float(v) for v in np.asarray(params, dtype=np.float64))
    x, m = _arrays(frequency, mean_value)
    return np.asarray(
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(g)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(x * m + g),
        dtype=np.float64,
    )


def fit_gamma_gamma(frequency: ArrayLike, mean_value: ArrayLike) -> GammaGamma:
    """Fit Gamma-Gamma to the customers with at least one repeat purchase (the others say nothing
    about the variation of spend)."""
    x, m = _arrays(frequency, mean_value)
    keep = (x > 0) & (m > 0)
    x, m = x[keep], m[keep]
    if len(x) == 0:
        raise ValueError("no repeat customers to fit")
    params = _fit(
        lambda p: -float(np.mean(gamma_gamma_log_likelihood(p, x, m))),
        np.array([1.0, 1.0, float(np.mean(m))]),
    )
    if params[1] <= 1:
        # q <= 1: the population's mean spend is unbounded; the model says nothing usable.
        raise ValueError("spend varies too much between customers for the Gamma-Gamma model (q <= 1)")
    return GammaGamma(*(float(v) for v in params))
