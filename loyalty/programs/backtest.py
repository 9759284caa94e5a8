"""Backtests: replay a period's stored transactions against a draft and compare with what was booked.

A marketer asks "what would this draft have given on last year's purchases?". :func:`backtest`
streams the tenant's transactions of ``[since, until)`` in ``occurred_at`` order, page by page
(keyset pagination, the items of a page fetched in one query), rebuilds the engine's inputs,
evaluates them with the draft compiled once, and compares with the points booked at posting.
:func:`points_per_rule` sums what each rule earned over a period from the stored evaluations.

What a replay can and cannot know (the approximations, chosen so that a draft identical to the
booked version shows no difference on purchases its rules price from the basket alone):

* **Basket**: the booked lines less their refunded quantities; fully refunded lines are left out.
  A purchase returned entirely counts 0 points on both sides and is not evaluated. For a purchase
  returned in part, the "actual" side is the booked version re-evaluated on the kept lines (so both
  sides price the same basket); every other purchase is compared with its booked points and the
  per-rule points of its stored evaluation.
* **Tier**: the tier recorded in the stored evaluation (the lowest tier when the draft has no such
  tier); tier changes during the period are therefore those that really happened.
* **Member**: ``visits`` and ``last_visit_at`` start from the member's purchases before ``since`` and
  advance with every replayed purchase; ``points`` is the draft points earned in the period so far
  (the balance before ``since``, redemptions and expiry are unknown to a replay); tags and
  enrolment date are the member's current ones. Stamp cards start empty (they never change points).
* **Limits and budgets** of the draft count from zero at ``since`` and are kept in memory.
* **Tier changes**: each side's tier is its own program's ladder applied to the member's
  qualifying figure over the replayed period (not the program's rolling window): points (booked
  points for the published version, draft points for the draft), spend or visits as each program's
  ``qualify_on`` says. The published ladder is that of the version in force at the period's end.
  Only members with purchases in the period are compared.

Per-rule figures are what each rule contributed before the tier multiplier and rounding (the
engine's ``RulePoints.points``); totals are whole points after rounding.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

from sqlalchemy import String, and_, bindparam, cast, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

import rules
from loyalty.errors import InvalidInput, NotFound
from loyalty.programs import tiers, versions
from loyalty.storage.db import Database
from loyalty.storage.models import (
    Member,
    Outlet,
    Partner,
    ProgramVersion,
    Transaction,
    TransactionItem,
    UTCDateTime,
)
from rules.engine import DECIMAL_CONTEXT, CompiledProgram

#: Transactions per page: one query for them, one for their lines (and one for members first seen).
BATCH_SIZE = 1_000
#: Transactions replayed between two yields to the event loop (about 5 ms of work): the read of the
#: next page advances meanwhile, and a server stays responsive during a long replay.
SLICE = 100
#: Members listed by name in a report (the counts cover all of them).
TOP_MEMBERS = 20

_ZERO = Decimal(0)
_NO_USES: Mapping[str, tuple[int, int]] = {}
_NO_BUDGETS: Mapping[str, int] = {}
_NO_LINES: list[rules.Item] = []


# ---------------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True, slots=True)
class RuleDiff:
    """One rule's points in the period, as booked and under the draft (before tier and rounding)."""

    rule: str
    actual_applications: int
    actual: Decimal
    draft_applications: int
    draft: Decimal
    difference: Decimal


@dataclass(frozen=True, slots=True)
class MemberDiff:
    """A member's points in the period, as booked and under the draft."""

    member_id: int
    actual: int
    draft: int
    difference: int


@dataclass(frozen=True, slots=True)
class TierDiff:
    """A member who would end the period in another tier under the draft."""

    member_id: int
    actual_tier: str | None
    draft_tier: str | None
    #: The qualifying figures each side used (points, minor units of spend, or visits).
    actual_qualifying: int
    draft_qualifying: int


@dataclass(frozen=True, slots=True)
class TierShift:
    """How many members move from one tier to another under the draft."""

    actual_tier: str | None
    draft_tier: str | None
    members: int


@dataclass(frozen=True, slots=True)
class BacktestReport:
    """What a draft would have given on a period's purchases, next to what was booked."""

    since: datetime
    until: datetime
    draft_digest: str
    #: The version in force at the period's end (None when none was published by then).
    published_digest: str | None
    #: Purchases evaluated; ``fully_refunded`` purchases are counted apart and not evaluated.
    transactions: int
    fully_refunded: int
    partly_refunded: int
    actual_points: int
    draft_points: int
    #: The cost difference in points (draft minus actual), and as a share of the actual points.
    difference: int
    difference_share: float | None
    rules: tuple[RuleDiff, ...]
    members: int
    members_changed: int
    #: The members whose points change most (largest absolute difference first).
    top_members: tuple[MemberDiff, ...]
    tier_changes: int
    tier_shifts: tuple[TierShift, ...]
    top_tier_changes: tuple[TierDiff, ...]
    elapsed_seconds: float
    transactions_per_second: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view: Decimals as strings, instants in ISO 8601."""
        return _jsonable(asdict(self))  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class RuleTotal:
    """What one rule earned over a period, as booked (before the tier multiplier and rounding)."""

    rule: str
    #: Times the rule applied (items, or transactions for transaction-level rules).
    applications: int
    #: Transactions it applied to.
    transactions: int
    points: Decimal

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[no-any-return]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# ---------------------------------------------------------------------------------------------------
# Reading


_TX_COLUMNS = (
    Transaction.id,
    Transaction.member_id,
    Transaction.outlet_id,
    Transaction.occurred_at,
    Transaction.channel,
    Transaction.program_version_id,
    Transaction.points,
    Transaction.amount,
    Transaction.amount_refunded,
    Transaction.evaluation["tier"].as_string(),
    # Text, parsed here: only the small "rules" part of the evaluation, never its explanation.
    cast(Transaction.evaluation["rules"], String),
)
_ITEM_COLUMNS = (
    TransactionItem.transaction_id,
    TransactionItem.sku,
    TransactionItem.category,
    cast(TransactionItem.tags, String),
    TransactionItem.unit_price,
    TransactionItem.quantity,
    TransactionItem.refunded_quantity,
)


def _check_period(since: datetime, until: datetime) -> None:
    for name, value in (("since", since), ("until", until)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInput(f"{name} must carry a time zone")
    if until < since:
        raise InvalidInput("until must not be before since")


def _in_period(tenant_id: int, since: datetime, until: datetime) -> Any:
    return and_(
        Transaction.tenant_id == tenant_id, Transaction.occurred_at >= since, Transaction.occurred_at < until
    )


async def _pages(
    conn: AsyncConnection, columns: Iterable[Any], tenant_id: int, since: datetime, until: datetime, size: int
) -> AsyncGenerator[Sequence[Any], None]:
    """Yield pages of rows in (occurred_at, id) order: keyset pagination, each page one index range."""
    query = (
        select(*columns)
        .where(_in_period(tenant_id, since, until))
        .order_by(Transaction.occurred_at, Transaction.id)
        .limit(size)
    )
    after: tuple[datetime, int] | None = None
    while True:
        stmt = query
        if after is not None:
            at, last = after
            stmt = query.where(
                Transaction.occurred_at >= at,
                or_(Transaction.occurred_at > at, and_(Transaction.occurred_at == at, Transaction.id > last)),
            )
        rows = (await conn.execute(stmt)).all()
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        after = (rows[-1][3], rows[-1][0])


def _items_of_page(tenant_id: int, rows: Sequence[Any]) -> Any:
    """The lines of a page's transactions: one join over the page's (occurred_at, id) bounds, so the
    statement has the same shape on every page (no list of a thousand ids to bind and plan)."""
    (first_id, first_at), (last_id, last_at) = (rows[0][0], rows[0][3]), (rows[-1][0], rows[-1][3])
    at = Transaction.occurred_at
    return (
        select(*_ITEM_COLUMNS)
        # The items' own tenant and member: a join a database distributed by member keeps on one shard.
        .join(
            Transaction,
            and_(
                Transaction.tenant_id == TransactionItem.tenant_id,
                Transaction.member_id == TransactionItem.member_id,
                Transaction.id == TransactionItem.transaction_id,
            ),
        )
        .where(
            Transaction.tenant_id == tenant_id,
            at >= first_at,
            at <= last_at,
            or_(at > first_at, Transaction.id >= first_id),
            or_(at < last_at, Transaction.id <= last_id),
        )
        .order_by(TransactionItem.transaction_id, TransactionItem.line)
    )


async def _outlets(conn: AsyncConnection, tenant_id: int) -> dict[int, rules.Outlet]:
    rows = await conn.execute(
        select(Outlet.id, Outlet.code, Partner.code, Outlet.tags)
        .join(Partner, Partner.id == Outlet.partner_id)
        .where(Outlet.tenant_id == tenant_id)
    )
    return {
        oid: rules.Outlet(id=code, partner=partner, tags=tuple(tags)) for oid, code, partner, tags in rows
    }


# ---------------------------------------------------------------------------------------------------
# Replay


class _Replayed:
    """One member during the replay: the engine's view of them, and their totals so far."""

    __slots__ = (
        "actual",
        "day",
        "day_uses",
        "draft",
        "enrolled_at",
        "holdout",
        "key",
        "last_visit_at",
        "segment",
        "spend",
        "tags",
        "uses",
        "visits",
        "visits_in_period",
    )

    def __init__(
        self,
        member_id: int,
        enrolled_at: datetime | None,
        tags: tuple[str, ...],
        visits: int,
        last_visit_at: datetime | None,
        segment: str = "",
    ) -> None:
        self.key = str(member_id)
        self.segment = segment
        #: The draft's rules whose control group the member is in (drawn on first use).
        self.holdout: frozenset[str] | None = None
        self.enrolled_at = enrolled_at
        self.tags = tags
        self.visits = visits
        self.last_visit_at = last_visit_at
        self.actual = 0
        self.draft = 0
        self.spend = 0
        self.visits_in_period = 0
        #: Limited rules of the draft: applications ever (in the period) and on ``day``.
        self.uses: dict[str, int] = {}
        self.day: date | None = None
        self.day_uses: dict[str, int] = {}

    def rule_uses(self, day: date) -> Mapping[str, tuple[int, int]]:
        if not self.uses:
            return _NO_USES
        same_day = day == self.day
        return {rule: (n, self.day_uses.get(rule, 0) if same_day else 0) for rule, n in self.uses.items()}

    def count_uses(self, day: date, used: Iterable[tuple[str, int]]) -> None:
        if day != self.day:
            self.day, self.day_uses = day, {}
        for rule, n in used:
            self.uses[rule] = self.uses.get(rule, 0) + n
            self.day_uses[rule] = self.day_uses.get(rule, 0) + n


class _Replay:
    """The state of one backtest run; :meth:`page` replays one page of transactions."""

    def __init__(self, draft: rules.CheckedProgram, outlets: dict[int, rules.Outlet]) -> None:
        self.draft = draft
        self.compiled = rules.compile_program(draft)
        self.outlets = outlets
        self.zone = draft.zone
        self.tier_names = _tier_names(draft)
        self.limited = frozenset(r.id for r in draft.rules if r.limited)
        self.budgeted = frozenset(r.id for r in draft.rules if r.budget is not None)
        self.budgets: dict[str, int] = {}
        self.members: dict[int, _Replayed] = {}
        #: Booked versions (of partly refunded purchases only) with their tier names.
        self.versions: dict[int, tuple[CompiledProgram, set[str]]] = {}
        #: rule -> [applications, points, transactions] as booked, and under the draft.
        self.actual_rules: dict[str, list[Any]] = {}
        self.draft_rules: dict[str, list[Any]] = {}
        self.transactions = self.fully_refunded = self.partly_refunded = 0
        # Parsed tags and built Items, shared by equal lines: a catalogue repeats itself.
        self._tags: dict[str, tuple[str, ...]] = {"[]": ()}
        self._items: dict[tuple[Any, ...], rules.Item] = {}

    def tags(self, text: str) -> tuple[str, ...]:
        parsed = self._tags.get(text)
        if parsed is None:
            parsed = self._tags[text] = tuple(json.loads(text))
        return parsed

    def baskets(self, rows: Iterable[Any]) -> tuple[dict[int, list[rules.Item]], set[int]]:
        """Kept lines per transaction (booked less refunded quantity; fully returned lines left out),
        and the transactions with a refund."""
        out: dict[int, list[rules.Item]] = {}
        refunds: set[int] = set()
        items = self._items
        current = -1
        lines: list[rules.Item] = []
        for tx_id, sku, category, tags, price, quantity, refunded in rows:
            if tx_id != current:
                current = tx_id
                lines = out[tx_id] = []
            if refunded:
                refunds.add(tx_id)
                kept = quantity - refunded
                if kept <= 0:
                    continue
            else:
                kept = quantity
            key = (sku, category, tags, price, kept)
            item = items.get(key)
            if item is None:
                item = items[key] = rules.Item(
                    sku=sku, unit_price=price, quantity=kept, category=category, tags=self.tags(tags)
                )
            lines.append(item)
        return out, refunds

    def page(self, rows: Iterable[Any], baskets: dict[int, list[rules.Item]], refunds: set[int]) -> None:
        compiled = self.compiled
        evaluate = compiled.evaluate
        outlets, members, zone = self.outlets, self.members, self.zone
        tier_names, limited, budgeted = self.tier_names, self.limited, self.budgeted
        budgets = self.budgets
        actual_rules, draft_rules = self.actual_rules, self.draft_rules
        for (
            tx_id,
            member_id,
            outlet_id,
            at,
            channel,
            version_id,
            points,
            amount,
            amount_refunded,
            tier,
            booked_rules,
        ) in rows:
            m = members[member_id]
            lines = baskets.get(tx_id, _NO_LINES)
            refunded = tx_id in refunds
            if refunded and not lines:
                # Every line went back: nothing earned on either side, but the visit happened.
                self.fully_refunded += 1
            else:
                day = at.astimezone(zone).date() if limited else None
                if m.holdout is None:
                    m.holdout = rules.holdout_of(self.draft, m.key)
                member = rules.Member(
                    id=m.key,
                    tier=tier if tier in tier_names else None,
                    points=m.draft,
                    visits=m.visits,
                    last_visit_at=m.last_visit_at,
                    enrolled_at=m.enrolled_at,
                    tags=m.tags,
                    rule_uses=m.rule_uses(day) if day is not None else _NO_USES,
                    segment=m.segment,
                    holdout=m.holdout,
                )
                tx = rules.Transaction(time=at, items=tuple(lines), channel=channel)
                outlet = outlets[outlet_id]
                result = evaluate(tx, member, outlet, now=at, budgets=budgets if budgeted else _NO_BUDGETS)
                got = result.total
                used = []
                for rp in result.rules:
                    _add(draft_rules, rp.rule, rp.applications, rp.points)
                    if rp.rule in limited:
                        used.append((rp.rule, rp.applications))
                    if rp.rule in budgeted and rp.points > 0:
                        # Budgets are whole points, rounded against the rule (as posting does).
                        budgets[rp.rule] = budgets.get(rp.rule, 0) + math.ceil(rp.points)
                if used and day is not None:
                    m.count_uses(day, used)
                if refunded:
                    self.partly_refunded += 1
                    booked = self._rebook(version_id, tx, member, tier, outlet)
                    points = booked.total
                    for rp in booked.rules:
                        _add(actual_rules, rp.rule, rp.applications, rp.points)
                else:
                    for r in json.loads(booked_rules) if booked_rules else ():
                        _add(actual_rules, r["rule"], r["applications"], Decimal(r["points"]))
                self.transactions += 1
                m.actual += points
                m.draft += got
                m.spend += amount - amount_refunded
                m.visits_in_period += 1
            m.visits += 1
            if m.last_visit_at is None or at > m.last_visit_at:
                m.last_visit_at = at

    def _rebook(
        self,
        version_id: int,
        tx: rules.Transaction,
        member: rules.Member,
        tier: str | None,
        outlet: rules.Outlet,
    ) -> rules.Result:
        """The booked version's result on the kept lines, with the tier it recorded."""
        compiled, tier_names = self.versions[version_id]
        member = replace(member, tier=tier if tier in tier_names else None)
        return compiled.evaluate(tx, member, outlet, now=tx.time)


def _tier_names(program: rules.CheckedProgram) -> set[str]:
    return {lv.name for lv in program.document.tiers.levels} if program.document.tiers else set()


def _add(acc: dict[str, list[Any]], rule: str, applications: int, points: Decimal) -> None:
    entry = acc.get(rule)
    if entry is None:
        acc[rule] = [applications, points, 1]
    else:
        entry[0] += applications
        entry[1] += points
        entry[2] += 1


async def _load_members(
    conn: AsyncConnection, tenant_id: int, ids: list[int], since: datetime, into: dict[int, _Replayed]
) -> None:
    """Members first seen on this page, with their purchases before the period (visits, last visit)."""
    before = {
        mid: (n, last)
        for mid, n, last in await conn.execute(
            select(Transaction.member_id, func.count(), func.max(Transaction.occurred_at))
            .where(
                Transaction.tenant_id == tenant_id,
                Transaction.member_id.in_(ids),
                Transaction.occurred_at < since,
            )
            .group_by(Transaction.member_id)
        )
    }
    rows = await conn.execute(
        select(Member.id, Member.enrolled_at, Member.tags, Member.segment).where(
            Member.tenant_id == tenant_id, Member.id.in_(ids)
        )
    )
    # A draft reading member.segment sees each member's segment of the last run (not the one they had
    # at each purchase: the history of segments has no values for times between runs).
    for mid, enrolled_at, tags, segment in rows:
        visits, last = before.get(mid, (0, None))
        into[mid] = _Replayed(mid, enrolled_at, tuple(tags), int(visits), last, segment or "")


_PRIOR_USES = {
    # Applications of limited rules booked before the period, per member and rule, from the stored
    # evaluations ("rules": [{"rule": id, "applications": n, ...}]).
    "postgresql": """
        SELECT t.member_id, r->>'rule', SUM((r->>'applications')::int)
        FROM transactions t CROSS JOIN LATERAL jsonb_array_elements(t.evaluation->'rules') r
        WHERE t.tenant_id = :tenant AND t.member_id = ANY(:members) AND t.occurred_at < :since
          AND r->>'rule' = ANY(:rules)
        GROUP BY t.member_id, r->>'rule'""",
    "sqlite": """
        SELECT t.member_id, json_extract(r.value, '$.rule'), SUM(json_extract(r.value, '$.applications'))
        FROM transactions t, json_each(t.evaluation, '$.rules') r
        WHERE t.tenant_id = :tenant AND t.member_id IN (SELECT value FROM json_each(:members))
          AND t.occurred_at < :since
          AND json_extract(r.value, '$.rule') IN (SELECT value FROM json_each(:rules))
        GROUP BY t.member_id, json_extract(r.value, '$.rule')""",
}


async def _load_prior_uses(
    conn: AsyncConnection,
    tenant_id: int,
    ids: list[int],
    since: datetime,
    limited: frozenset[str],
    into: dict[int, _Replayed],
) -> None:
    """Start each member's limited rules from what they had used before the period.

    A once-per-member bonus taken last year must not be granted again by the replay. Only the
    lifetime count is seeded: a per-day count never reaches across the period's start by more than a day.
    """
    if not limited or not ids:
        return
    dialect = conn.dialect.name
    sql = text(_PRIOR_USES["postgresql" if dialect == "postgresql" else "sqlite"]).bindparams(
        bindparam("since", type_=UTCDateTime())
    )
    params: dict[str, Any] = {"tenant": tenant_id, "since": since}
    if dialect == "postgresql":
        params.update(members=list(ids), rules=sorted(limited))
    else:
        params.update(members=json.dumps(list(ids)), rules=json.dumps(sorted(limited)))
    for member_id, rule, used in await conn.execute(sql, params):
        replayed = into.get(member_id)
        if replayed is not None and used:
            replayed.uses[str(rule)] = int(used)


async def _load_versions(
    conn: AsyncConnection,
    tenant_id: int,
    ids: Iterable[int],
    into: dict[int, tuple[CompiledProgram, set[str]]],
) -> None:
    missing = [i for i in set(ids) if i not in into]
    if not missing:
        return
    rows = await conn.execute(
        select(ProgramVersion.id, ProgramVersion.digest, ProgramVersion.document).where(
            ProgramVersion.tenant_id == tenant_id, ProgramVersion.id.in_(missing)
        )
    )
    for vid, digest, document in rows:
        program = versions.checked(digest, document)
        into[vid] = rules.compile_program(program), _tier_names(program)


@dataclass(frozen=True, slots=True)
class _Page:
    rows: Sequence[Any]
    baskets: dict[int, list[rules.Item]]
    refunds: set[int]


async def _read(
    conn: AsyncConnection, tenant_id: int, since: datetime, until: datetime, replay: _Replay
) -> AsyncGenerator[_Page, None]:
    """Pages of transactions with their kept lines; members and booked versions they need are loaded."""
    async for rows in _pages(conn, _TX_COLUMNS, tenant_id, since, until, BATCH_SIZE):
        new = list({r[1] for r in rows if r[1] not in replay.members})
        if new:
            await _load_members(conn, tenant_id, new, since, replay.members)
            await _load_prior_uses(conn, tenant_id, new, since, replay.limited, replay.members)
        items = (await conn.execute(_items_of_page(tenant_id, rows))).all()
        baskets, refunds = replay.baskets(items)
        if refunds:
            booked = (r[5] for r in rows if r[0] in refunds)
            await _load_versions(conn, tenant_id, booked, replay.versions)
        yield _Page(rows, baskets, refunds)


async def _next(pages: AsyncIterator[_Page]) -> _Page | None:
    try:
        return await anext(pages)
    except StopAsyncIteration:
        return None


async def backtest(
    db: Database,
    tenant_id: int,
    draft: rules.CheckedProgram,
    *,
    since: datetime,
    until: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> BacktestReport:
    """Replay the purchases of ``[since, until)`` against ``draft`` and compare with what was booked.

    ``progress(done, total)`` is called after every page of :data:`BATCH_SIZE` transactions (and once,
    with ``(0, 0)``, for an empty period). See the module docstring for what a replay approximates.
    """
    _check_period(since, until)
    started = time.perf_counter()
    replay = _Replay(draft, {})
    done = 0
    async with db.read() as session:
        conn = await session.connection()
        total = int(
            await conn.scalar(
                select(func.count()).select_from(Transaction).where(_in_period(tenant_id, since, until))
            )
            or 0
        )
        try:
            published: rules.CheckedProgram | None = (
                await versions.version_at(session, tenant_id, until - timedelta(microseconds=1))
            ).program
        except NotFound:
            published = None
        replay.outlets.update(await _outlets(conn, tenant_id))
        pages = _read(conn, tenant_id, since, until, replay)
        # The next page is read while this one is replayed: the database works while Python evaluates.
        reading = asyncio.ensure_future(_next(pages))
        try:
            while (page := await reading) is not None:
                reading = asyncio.ensure_future(_next(pages))
                rows = page.rows
                for start in range(0, len(rows), SLICE):
                    with localcontext(DECIMAL_CONTEXT):
                        replay.page(rows[start : start + SLICE], page.baskets, page.refunds)
                    await asyncio.sleep(0)  # let the read go on (and other requests be served)
                done += len(rows)
                if progress is not None:
                    progress(done, max(total, done))
        finally:
            if not reading.done():
                reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading  # a failed read surfaced above; an error of the replay takes precedence
            await pages.aclose()
    if progress is not None and done == 0:
        progress(0, 0)
    return _report(replay, published, since, until, time.perf_counter() - started)


def _ladder_tier(program: rules.CheckedProgram | None, m: _Replayed, points: int) -> tuple[str | None, int]:
    """The tier ``program``'s ladder gives the member for the period, with the qualifying figure."""
    if program is None or program.document.tiers is None:
        return None, 0
    qualify_on = program.document.tiers.qualify_on
    value = points if qualify_on == "points" else m.spend if qualify_on == "spend" else m.visits_in_period
    name = None
    for level in tiers.levels(program):
        if value >= level.threshold:
            name = level.name
    return name, value


def _report(
    replay: _Replay, published: rules.CheckedProgram | None, since: datetime, until: datetime, elapsed: float
) -> BacktestReport:
    with localcontext(DECIMAL_CONTEXT):
        rule_ids = list(dict.fromkeys([*replay.actual_rules, *replay.draft_rules]))
        diffs = []
        for rule in rule_ids:
            a_n, a_p, _ = replay.actual_rules.get(rule, (0, _ZERO, 0))
            d_n, d_p, _ = replay.draft_rules.get(rule, (0, _ZERO, 0))
            diffs.append(RuleDiff(rule, a_n, a_p, d_n, d_p, d_p - a_p))
    diffs.sort(key=lambda d: (-abs(d.difference), d.rule))
    members = replay.members.items()
    changed = [
        MemberDiff(mid, m.actual, m.draft, m.draft - m.actual) for mid, m in members if m.draft != m.actual
    ]
    changed.sort(key=lambda d: (-abs(d.difference), d.member_id))
    moved: list[TierDiff] = []
    shifts: dict[tuple[str | None, str | None], int] = {}
    for mid, m in members:
        if not m.visits_in_period:
            continue
        actual_tier, actual_value = _ladder_tier(published, m, m.actual)
        draft_tier, draft_value = _ladder_tier(replay.draft, m, m.draft)
        if actual_tier != draft_tier:
            moved.append(TierDiff(mid, actual_tier, draft_tier, actual_value, draft_value))
            shifts[actual_tier, draft_tier] = shifts.get((actual_tier, draft_tier), 0) + 1
    moved.sort(key=lambda d: (-abs(d.draft_qualifying - d.actual_qualifying), d.member_id))
    actual = sum(m.actual for m in replay.members.values())
    draft = sum(m.draft for m in replay.members.values())
    replayed = replay.transactions + replay.fully_refunded
    return BacktestReport(
        since=since,
        until=until,
        draft_digest=replay.draft.digest,
        published_digest=published.digest if published is not None else None,
        transactions=replay.transactions,
        fully_refunded=replay.fully_refunded,
        partly_refunded=replay.partly_refunded,
        actual_points=actual,
        draft_points=draft,
        difference=draft - actual,
        difference_share=(draft - actual) / actual if actual else None,
        rules=tuple(diffs),
        members=sum(1 for _, m in members if m.visits_in_period),
        members_changed=len(changed),
        top_members=tuple(changed[:TOP_MEMBERS]),
        tier_changes=len(moved),
        tier_shifts=tuple(
            TierShift(a, d, n)
            for (a, d), n in sorted(shifts.items(), key=lambda kv: (-kv[1], str(kv[0][0]), str(kv[0][1])))
        ),
        top_tier_changes=tuple(moved[:TOP_MEMBERS]),
        elapsed_seconds=elapsed,
        transactions_per_second=replayed / elapsed if elapsed > 0 else 0.0,
    )


# ---------------------------------------------------------------------------------------------------
# Points per rule


async def points_per_rule(
    db: Database, tenant_id: int, *, since: datetime, until: datetime
) -> list[RuleTotal]:
    """Points each rule earned on purchases of ``[since, until)``, as booked, most points first.

    Figures are from the stored evaluations: before the tier multiplier and rounding, and before
    refunds (a refund reverses a line's points, not a rule's).
    """
    _check_period(since, until)
    totals: dict[str, list[Any]] = {}
    column = cast(Transaction.evaluation["rules"], String)
    async with db.read() as session:
        result = await session.stream(
            select(column).where(_in_period(tenant_id, since, until)).execution_options(yield_per=5_000)
        )
        with localcontext(DECIMAL_CONTEXT):
            async for partition in result.partitions():
                for (text,) in partition:
                    for r in json.loads(text) if text else ():
                        _add(totals, r["rule"], r["applications"], Decimal(r["points"]))
    out = [RuleTotal(rule, n, count, points) for rule, (n, points, count) in totals.items()]
    out.sort(key=lambda t: (-t.points, t.rule))
    return out
