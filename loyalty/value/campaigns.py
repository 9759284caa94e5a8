"""Campaign lift: what a rule with a control group (``holdout``) actually brought.

A member is *exposed* to the campaign at their first purchase in the campaign's window at which the
rule applied (treated: they got its effect) or would have applied (control: the posting recorded it
as withheld). Which group a member is in was drawn from their id and the rule's (:mod:`rules.campaigns`)
before anything happened, so the two groups differ only by the effect. Each exposed member is then
followed for ``horizon_days`` after that first purchase: purchases (visits), net revenue, whether
they came back at all (retention), and the points the rule gave them (its cost). Members whose
horizon has not ended by ``now`` are left out, so every member is followed equally long.

The report gives each group's mean, the difference (treated - control) with its 95% confidence
interval (Welch's t, which does not assume equal variances), the relative lift, and the sample
sizes. Everything is computed from the postings: nothing in the report is written in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scipy import stats
from sqlalchemy import select

import rules
from loyalty.errors import InvalidInput, NotFound
from loyalty.programs import versions
from loyalty.storage.db import Database
from loyalty.storage.models import Transaction

#: The confidence level of the intervals.
CONFIDENCE = 0.95
#: Exposed members each group needs before the groups are compared: with fewer, an interval says
#: little (and two members with equal outcomes would give one of zero width).
MIN_GROUP = 10
METRICS = ("visits", "revenue", "retention", "points_cost")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One exposed member's figures over the horizon after their exposure."""

    member_id: int
    treated: bool
    exposed_at: datetime
    visits: int
    #: Net revenue, minor units.
    revenue: int
    points_cost: int

    @property
    def retained(self) -> int:
        return 1 if self.visits > 0 else 0


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    treated: float
    control: float
    #: treated - control, and its confidence interval.
    difference: float
    low: float
    high: float
    #: difference / control (None when the control mean is 0).
    relative: float | None

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True, slots=True)
class Lift:
    rule: str
    holdout: float
    since: datetime
    until: datetime
    horizon_days: int
    treated: int
    control: int
    #: Empty until both groups hold at least ``MIN_GROUP`` exposed members (see ``enough``).
    metrics: tuple[Metric, ...]
    #: The program's estimated cost of the effect as booked: points given to the treated members.
    points_given: int
    #: Whether both groups are large enough to compare (else ``metrics`` is empty).
    enough: bool


@dataclass(frozen=True, slots=True)
class Campaign:
    rule: str
    holdout: float
    description: str | None


def of_program(program: rules.CheckedProgram) -> list[Campaign]:
    """The program's rules that hold out a control group, in document order."""
    return [
        Campaign(r.id, r.holdout, program.document.rules[r.index].description)
        for r in program.rules
        if r.holdout is not None
    ]


def compare(name: str, treated: Sequence[float], control: Sequence[float]) -> Metric:
    """Means of both groups and the Welch confidence interval of their difference."""
    if len(treated) < MIN_GROUP or len(control) < MIN_GROUP:
        raise InvalidInput(f"too few exposed members to compare: at least {MIN_GROUP} in each group")
    t_mean, c_mean = sum(treated) / len(treated), sum(control) / len(control)
    difference = t_mean - c_mean
    t_var = _variance(treated)
    c_var = _variance(control)
    if t_var == 0 and c_var == 0:
        low = high = difference
    else:
        with warnings.catch_warnings():
            # One constant group (everyone retained, say) is fine for Welch's test: scipy warns anyway.
            warnings.simplefilter("ignore", RuntimeWarning)
            interval = stats.ttest_ind(treated, control, equal_var=False).confidence_interval(CONFIDENCE)
        low, high = float(interval.low), float(interval.high)
    relative = difference / c_mean if c_mean else None
    return Metric(name, t_mean, c_mean, difference, low, high, relative)


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def applied(evaluation: dict[str, Any], rule: str) -> bool:
    """Whether ``rule`` applied in a stored evaluation."""
    return any(r["rule"] == rule and r["applications"] for r in evaluation.get("rules", ()))


def outcomes(
    rows: Sequence[tuple[int, datetime, int, dict[str, Any]]],
    rule: str,
    *,
    since: datetime,
    until: datetime,
    horizon: timedelta,
    now: datetime,
) -> list[Outcome]:
    """Each exposed member's outcome from their purchases (member, occurred_at, net amount,
    evaluation), sorted by time."""
    by_member: dict[int, list[tuple[datetime, int, dict[str, Any]]]] = {}
    for member_id, at, net, evaluation in rows:
        by_member.setdefault(member_id, []).append((at, net, evaluation))
    found = []
    for member_id, purchases in by_member.items():
        purchases.sort(key=lambda p: p[0])
        exposure = None
        for at, _net, evaluation in purchases:
            if not since <= at < until:
                continue
            if applied(evaluation, rule):
                exposure = (at, True)
            elif rule in evaluation.get("withheld", {}):
                exposure = (at, False)
            if exposure is not None:
                break
        if exposure is None or exposure[0] + horizon > now:
            continue
        start, treated = exposure
        after = [p for p in purchases if start < p[0] <= start + horizon]
        cost = (
            sum(_points(e, rule) for at, _n, e in purchases if start <= at <= start + horizon)
            if treated
            else 0
        )
        found.append(
            Outcome(
                member_id, treated, start, sum(1 for p in after if p[1] > 0), sum(p[1] for p in after), cost
            )
        )
    return found


def _points(evaluation: dict[str, Any], rule: str) -> int:
    """Whole points ``rule`` contributed to a stored evaluation (before the tier multiplier)."""
    for r in evaluation.get("rules", ()):
        if r["rule"] == rule:
            return round(float(r["points"]))
    return 0


async def lift(
    db: Database,
    tenant_id: int,
    rule: str,
    *,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    horizon_days: int = 60,
) -> Lift:
    """The lift report of ``rule`` (see the module docstring). The window defaults to the rule's own
    validity in the program in force, else the year before ``now``."""
    program = (await versions.current(db, tenant_id, now)).program
    checked = next((r for r in program.rules if r.id == rule), None)
    if checked is None:
        raise NotFound(f"no rule {rule!r} in the program in force")
    if checked.holdout is None:
        raise InvalidInput(f"rule {rule!r} has no control group: give it a holdout share to measure its lift")
    if not 1 <= horizon_days <= 730:
        raise InvalidInput("the horizon is 1 to 730 days")
    horizon = timedelta(days=horizon_days)
    since = since or checked.valid_from or now - timedelta(days=365)
    until = min(until or checked.valid_until or now, now)
    if until <= since:
        raise InvalidInput("the window ends before it starts")
    t = Transaction
    async with db.read() as s:
        rows = (
            await s.execute(
                select(t.member_id, t.occurred_at, t.amount - t.amount_refunded, t.evaluation)
                .where(t.tenant_id == tenant_id, t.occurred_at >= since, t.occurred_at <= until + horizon)
                .order_by(t.member_id, t.occurred_at)
            )
        ).all()
    found = outcomes(
        [(int(m), at, int(net), ev) for m, at, net, ev in rows],
        rule,
        since=since,
        until=until,
        horizon=horizon,
        now=now,
    )
    treated = [o for o in found if o.treated]
    control = [o for o in found if not o.treated]
    metrics = (
        tuple(
            compare(name, [_value(o, name) for o in treated], [_value(o, name) for o in control])
            for name in METRICS
        )
        if min(len(treated), len(control)) >= MIN_GROUP
        else ()
    )
    return Lift(
        rule,
        checked.holdout,
        since,
        until,
        horizon_days,
        len(treated),
        len(control),
        metrics,
        sum(o.points_cost for o in treated),
        bool(metrics),
    )


def _value(o: Outcome, name: str) -> float:
    return float(
        {"visits": o.visits, "revenue": o.revenue, "retention": o.retained, "points_cost": o.points_cost}[
            name
        ]
    )
