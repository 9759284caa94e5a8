"""Customer figures: what a member's purchases say about them, computed for a whole tenant at once.

One grouped query per tenant reads each member's purchases (net of refunds) over the window:
purchase days, first and last purchase, spend; the window functions of the same query rank each
figure within the tenant (``PERCENT_RANK``: equal figures get equal scores, the lowest of their
group). The rest is arithmetic per member on the rows that query returns (a prediction that comes
out undefined, from a fit at the edge of its bounds, is left out):

* **RFM scores** 1-5 within the tenant: recency (5 = most recent), frequency (purchase days) and
  monetary value (net spend), each the member's quintile.
* **Rhythm**: the member's own typical interval between purchase days, the moment their next visit
  is due, and whether they are **at risk**: silent for longer than ``at_risk_factor`` of their own
  intervals (not one number of days for everyone). A member with fewer than ``MIN_RHYTHM_DAYS``
  purchase days has no rhythm yet and is never at risk by it.
* **Value**: historical (net spend in the window) and predicted over ``horizon_days``: BG/NBD's
  expected purchases times Gamma-Gamma's expected spend per purchase, both fitted on this tenant's
  own members (:mod:`loyalty.value.models`); with too few members to fit, no prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Date, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from loyalty.storage.db import Database
from loyalty.storage.models import Transaction
from loyalty.value.models import BetaGeo, GammaGamma, fit_bgnbd, fit_gamma_gamma

#: Purchase days before a member's own rhythm is trusted.
MIN_RHYTHM_DAYS = 3
#: Members (with a repeat purchase) a tenant needs before the value models are fitted on it.
MIN_FIT_MEMBERS = 30
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Settings:
    #: How far back purchases count (days).
    window_days: int = 730
    #: Silent for more than this many of their own intervals: at risk.
    at_risk_factor: float = 2.0
    #: How far ahead the predicted value looks (days).
    horizon_days: int = 365


DEFAULTS = Settings()


@dataclass(frozen=True, slots=True)
class Figures:
    member_id: int
    purchase_days: int
    first_purchase_at: datetime
    last_purchase_at: datetime
    #: Net spend in the window, minor units.
    spend: int
    recency_days: float
    #: RFM scores, 1-5 within the tenant.
    r: int
    f: int
    m: int
    typical_interval_days: float | None
    #: Days until the next visit is due by the member's rhythm (negative: overdue by that much).
    expected_visit_in_days: float | None
    at_risk: bool
    #: BG/NBD's probability that the member is still active, when the tenant could be fitted.
    alive: float | None
    #: Expected spend over the horizon (minor units), when the tenant could be fitted.
    predicted_value: int | None

    @property
    def rfm(self) -> str:
        return f"{self.r}{self.f}{self.m}"


@dataclass(frozen=True, slots=True)
class Fit:
    frequency: BetaGeo
    spend: GammaGamma


def _day(column: Any, dialect: str) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp, as each database spells it (SQLite stores UTC; on
    PostgreSQL the day is taken in UTC, whatever the session's time zone)."""
    return func.date(column) if dialect == "sqlite" else cast(func.timezone("UTC", column), Date)


def _score(percent_rank: float) -> int:
    """A quintile from a percent rank [0, 1]: 1 for the lowest fifth, 5 for the highest. Ties share the
    lowest rank of their group, so a tied majority at the bottom (one-time buyers) scores 1."""
    return min(5, 1 + math.floor(round(percent_rank * 5, 9)))


async def compute(
    db: Database, tenant_id: int, *, now: datetime, settings: Settings = DEFAULTS
) -> tuple[list[Figures], Fit | None]:
    """Every purchasing member's figures for one tenant at ``now``, and the value models fitted."""
    since = now - timedelta(days=settings.window_days)
    t = Transaction
    net = t.amount - t.amount_refunded
    grouped = (
        select(
            t.member_id.label("member_id"),
            func.count(func.distinct(_day(t.occurred_at, db.dialect))).label("days"),
            func.min(t.occurred_at).label("first"),
            func.max(t.occurred_at).label("last"),
            func.sum(net).label("spend"),
        )
        .where(t.tenant_id == tenant_id, t.occurred_at > since, t.occurred_at <= now, net > 0)
        .group_by(t.member_id)
        .subquery()
    )
    ranked = select(
        grouped,
        func.percent_rank().over(order_by=grouped.c["last"]).label("r_rank"),
        func.percent_rank().over(order_by=grouped.c.days).label("f_rank"),
        func.percent_rank().over(order_by=grouped.c.spend).label("m_rank"),
    ).order_by(grouped.c.member_id)
    async with db.read() as s:
        rows = (await s.execute(ranked)).all()
    if not rows:
        return [], None
    first = np.array([_instant(r.first).timestamp() for r in rows])
    last = np.array([_instant(r.last).timestamp() for r in rows])
    days = np.array([int(r.days) for r in rows], dtype=np.float64)
    spend = np.array([int(r.spend) for r in rows], dtype=np.float64)
    frequency = days - 1
    recency = (last - first) / DAY
    age = (now.timestamp() - first) / DAY
    fit = _fit(frequency, recency, age, spend / days)
    alive = predicted = None
    if fit is not None:
        alive = fit.frequency.alive(frequency, recency, age)
        purchases = fit.frequency.expected_purchases(settings.horizon_days, frequency, recency, age)
        predicted = purchases * fit.spend.expected_spend(frequency, spend / days)
    out = []
    for i, row in enumerate(rows):
        silent = (now.timestamp() - last[i]) / DAY
        interval = recency[i] / frequency[i] if days[i] >= MIN_RHYTHM_DAYS else None
        out.append(
            Figures(
                member_id=int(row.member_id),
                purchase_days=int(days[i]),
                first_purchase_at=_instant(row.first),
                last_purchase_at=_instant(row.last),
                spend=int(spend[i]),
                recency_days=round(silent, 3),
                r=_score(row.r_rank),
                f=_score(row.f_rank),
                m=_score(row.m_rank),
                typical_interval_days=None if interval is None else round(interval, 3),
                expected_visit_in_days=None if interval is None else round(interval - silent, 3),
                at_risk=interval is not None and silent > settings.at_risk_factor * interval,
                alive=None if alive is None or not np.isfinite(alive[i]) else round(float(alive[i]), 4),
                predicted_value=(
                    None if predicted is None or not np.isfinite(predicted[i]) else round(float(predicted[i]))
                ),
            )
        )
    return out, fit


def _fit(frequency: np.ndarray, recency: np.ndarray, age: np.ndarray, mean_spend: np.ndarray) -> Fit | None:
    """Both value models fitted on this tenant, or None with too few repeat buyers to say anything."""
    if int(np.sum(frequency > 0)) < MIN_FIT_MEMBERS:
        return None
    try:
        return Fit(fit_bgnbd(frequency, recency, age), fit_gamma_gamma(frequency, mean_spend))
    except ValueError:
        return None


def _instant(value: object) -> datetime:
    """A timestamp as SQLite returns it (naive UTC, or text from an aggregate) or PostgreSQL does."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
