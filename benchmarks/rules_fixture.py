"""The rules benchmark's workload and its non-engine contenders.

One realistic 50-rule program (generated from small tables, so a 500-rule program for the compile-time
benchmark comes from the same code), a 20-line basket with the member and outlet it is evaluated for,
and two implementations that are not the engine:

* :func:`hand_written_total`: the named baseline, the function a careful engineer would write for this
  very program (Decimal money, the engine's decimal context and rounding, one ``if`` per rule).
* :class:`RuleEngineContender`: the same conditions written in the ``rule-engine`` package's syntax,
  evaluated with ``Rule.matches`` per item or per transaction, with the points arithmetic around it.

Every contender must return the same whole-points total as ``rules.evaluate``; the benchmark asserts
that before timing, and ``test_contenders_agree`` checks it on many random baskets.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Context, Decimal, localcontext
from typing import Any
from zoneinfo import ZoneInfo

import rule_engine

from rules import Item, Member, Outlet, Transaction
from rules.schema import NEVER_DAYS

ZONE = ZoneInfo("Europe/Berlin")
#: The engine's decimal context is explicit (rules.engine.DECIMAL_CONTEXT); the baselines use their own
#: explicit one with the same precision, never the caller's global context.
DECIMAL = Context(prec=34, traps=[])
MINOR = Decimal("0.01")
ONE = Decimal(1)
ZERO = Decimal(0)
DAY = timedelta(days=1)

# ---------------------------------------------------------------------------------------------------
# The program


@dataclass(frozen=True, slots=True)
class Spec:
    """One rule of the program, plus the same conditions in rule-engine syntax (None: no condition)."""

    rule: dict[str, Any]
    re_when: str | None = None
    re_where: str | None = None


CATEGORY_BONUS = [
    ("coffee", "0.5"),
    ("tea", "0.5"),
    ("bakery", "0.25"),
    ("produce", "0.25"),
    ("dairy", "0.2"),
    ("household", "0.1"),
]
TAG_MULTIPLIERS = [
    ("organic", "2"),
    ("vegan", "1.5"),
    ("new", "1.25"),
    ("promo", "3"),
    ("bulk", "1.1"),
    ("seasonal", "1.2"),
]
AMOUNT_MAX_MULTIPLIERS = [(10, "1.2"), (20, "1.5"), (50, "2")]
SKU_POINTS = [("C-100", 10), ("C-101", 15), ("T-200", 5), ("B-300", 20), ("D-400", 8), ("P-500", 12)]


def _specs(k: int) -> list[Spec]:
    """Round ``k`` of 50 rules; round 0 is the benchmarked program, later rounds vary ids and constants."""
    sfx = f"-{k}" if k else ""
    item = {"for_each": "item"}
    specs: list[Spec] = [
        Spec(
            {
                "id": f"base{sfx}",
                **item,
                "where": 'item.category not in ["tobacco", "giftcard"]',
                "earn": {"per_currency_unit": 1},
            },
            re_where='category not in ["tobacco", "giftcard"]',
        ),
    ]
    # Category bonuses: extra points per euro in some departments.
    for cat, rate in CATEGORY_BONUS:
        specs.append(
            Spec(
                {
                    "id": f"bonus-{cat}{sfx}",
                    **item,
                    "where": f'item.category == "{cat}"',
                    "earn": {"per_currency_unit": rate},
                },
                re_where=f'category == "{cat}"',
            )
        )
    lo, hi = 5 + k, 10 + k
    specs += [
        Spec(
            {
                "id": f"mid-price{sfx}",
                **item,
                "where": f"item.unit_price >= {lo} and item.unit_price < {hi}",
                "earn": {"per_currency_unit": "0.1"},
            },
            re_where=f"unit_price >= {lo} and unit_price < {hi}",
        ),
        Spec(
            {
                "id": f"high-price{sfx}",
                **item,
                "where": f"item.unit_price >= {hi}",
                "earn": {"per_currency_unit": "0.2"},
            },
            re_where=f"unit_price >= {hi}",
        ),
        Spec(
            {
                "id": f"big-line{sfx}",
                **item,
                "where": f"item.amount >= {25 + k}",
                "earn": {"per_currency_unit": "0.15"},
            },
            re_where=f"amount >= {25 + k}",
        ),
        Spec(
            {
                "id": f"house-coffee{sfx}",
                **item,
                "where": 'item.sku in ["C-100", "C-101", "C-102"]',
                "earn": {"per_currency_unit": 2},
            },
            re_where='sku in ["C-100", "C-101", "C-102"]',
        ),
        Spec(
            {
                "id": f"house-tea{sfx}",
                **item,
                "where": 'lower(item.sku) == "t-200"',
                "earn": {"per_currency_unit": 1},
            },
            re_where='sku.as_lower == "t-200"',
        ),
        Spec(
            {
                "id": f"fairtrade{sfx}",
                **item,
                "where": '"fairtrade" in item.tags',
                "earn": {"per_currency_unit": "0.5"},
            },
            re_where='"fairtrade" in tags',
        ),
        Spec(
            {
                "id": f"local-fresh{sfx}",
                **item,
                "where": 'any(item.tags, ["regional", "seasonal"]) and item.category != "frozen"',
                "earn": {"per_currency_unit": "0.3"},
            },
            re_where='("regional" in tags or "seasonal" in tags) and category != "frozen"',
        ),
        Spec(
            {
                "id": f"gold-hot-drinks{sfx}",
                **item,
                "when": 'member.tier == "gold"',
                "where": 'item.category in ["coffee", "tea"]',
                "earn": {"per_currency_unit": "0.5"},
            },
            re_when='member_tier == "gold"',
            re_where='category in ["coffee", "tea"]',
        ),
        Spec(
            {
                "id": f"app-orders{sfx}",
                **item,
                "when": 'tx.channel == "app"',
                "where": "item.unit_price > 2",
                "earn": {"per_currency_unit": "0.5"},
            },
            re_when='channel == "app"',
            re_where="unit_price > 2",
        ),
    ]
    # Multipliers: tags stack, line size takes the largest, two promotions replace everything else.
    for tag, factor in TAG_MULTIPLIERS:
        specs.append(
            Spec(
                {
                    "id": f"x-{tag}{sfx}",
                    **item,
                    "where": f'"{tag}" in item.tags',
                    "earn": {"multiplier": factor},
                },
                re_where=f'"{tag}" in tags',
            )
        )
    specs.append(
        Spec(
            {
                "id": f"x-bulk-lines{sfx}",
                **item,
                "where": "item.quantity >= 6",
                "earn": {"multiplier": "1.5"},
                "limit": {"per_transaction": 2},
            },
            re_where="quantity >= 6",
        )
    )
    for amount, factor in AMOUNT_MAX_MULTIPLIERS:
        specs.append(
            Spec(
                {
                    "id": f"x-line-{amount}{sfx}",
                    **item,
                    "where": f"item.amount >= {amount + k}",
                    "earn": {"multiplier": factor},
                    "stacking": "max",
                },
                re_where=f"amount >= {amount + k}",
            )
        )
    specs += [
        Spec(
            {
                "id": f"x-coffee-pair{sfx}",
                **item,
                "where": 'item.category == "coffee" and item.quantity >= 2',
                "earn": {"multiplier": "1.3"},
                "stacking": "max",
            },
            re_where='category == "coffee" and quantity >= 2',
        ),
        Spec(
            {
                "id": f"x-sunday{sfx}",
                "when": 'weekday(tx.time) == "sun"',
                "earn": {"multiplier": 4},
                "stacking": "exclusive",
            },
            re_when='time.weekday == "Sunday"',
        ),
        Spec(
            {
                "id": f"x-coffee-promo{sfx}",
                **item,
                "where": 'item.sku == "C-100" and "promo" in item.tags',
                "earn": {"multiplier": 5},
                "stacking": "exclusive",
            },
            re_where='sku == "C-100" and "promo" in tags',
        ),
        Spec(
            {
                "id": f"x-weekend-day{sfx}",
                "when": 'weekday(tx.time) in ["sat", "sun"] and 10 <= hour(tx.time) < 18',
                "earn": {"multiplier": "1.5"},
            },
            re_when='time.weekday in ["Saturday", "Sunday"] and time.hour >= 10 and time.hour < 18',
        ),
        Spec(
            {"id": f"x-students{sfx}", "when": '"student" in member.tags', "earn": {"multiplier": "1.1"}},
            re_when='"student" in member_tags',
        ),
        Spec(
            {
                "id": f"x-regulars{sfx}",
                "when": f"member.visits >= {50 + k}",
                "earn": {"multiplier": "1.4"},
                "stacking": "max",
            },
            re_when=f"member_visits >= {50 + k}",
        ),
    ]
    # Fixed points per unit of some products.
    for sku, points in SKU_POINTS:
        rule: dict[str, Any] = {
            "id": f"pts-{sku}{sfx}",
            **item,
            "where": f'item.sku == "{sku}"',
            "earn": {"points": points + k},
        }
        if sku == "B-300":
            rule["limit"] = {"per_transaction": 1}
        specs.append(Spec(rule, re_where=f'sku == "{sku}"'))
    specs += [
        Spec(
            {
                "id": f"pts-bakery-three{sfx}",
                **item,
                "where": 'item.category == "bakery" and item.quantity >= 3',
                "earn": {"points": 25},
            },
            re_where='category == "bakery" and quantity >= 3',
        ),
        Spec(
            {
                "id": f"pts-try-new{sfx}",
                **item,
                "where": '"new" in item.tags and item.unit_price < 3',
                "earn": {"points": 5},
            },
            re_where='"new" in tags and unit_price < 3',
        ),
    ]
    # Transaction-level points on the member, the time and the basket.
    specs += [
        Spec(
            {
                "id": f"welcome-back{sfx}",
                "when": "member.days_since_last_visit > 90",
                "earn": {"points": 200},
                "limit": {"per_member": 1},
            },
            re_when="days_since_last_visit > 90",
        ),
        Spec(
            {"id": f"basket-50{sfx}", "when": f"tx.total >= {50 + k}", "earn": {"points": 100}},
            re_when=f"total >= {50 + k}",
        ),
        Spec(
            {"id": f"basket-100{sfx}", "when": f"tx.total >= {100 + k}", "earn": {"points": 250}},
            re_when=f"total >= {100 + k}",
        ),
        Spec(
            {
                "id": f"regular{sfx}",
                "when": "member.visits >= 10 and member.visits < 50",
                "earn": {"points": 30},
            },
            re_when="member_visits >= 10 and member_visits < 50",
        ),
        Spec(
            {
                "id": f"saturday-afternoon{sfx}",
                "when": 'weekday(tx.time) == "sat" and hour(tx.time) >= 15',
                "earn": {"points": 40},
            },
            re_when='time.weekday == "Saturday" and time.hour >= 15',
        ),
        Spec(
            {
                "id": f"student-till{sfx}",
                "when": '"student" in member.tags and tx.channel == "till"',
                "earn": {"points": 20},
                "limit": {"per_day": 1},
            },
            re_when='"student" in member_tags and channel == "till"',
        ),
        Spec(
            {"id": f"tier-bonus{sfx}", "when": 'member.tier in ["silver", "gold"]', "earn": {"points": 50}},
            re_when='member_tier in ["silver", "gold"]',
        ),
        Spec(
            {"id": f"big-basket{sfx}", "when": "count(tx.items) >= 15", "earn": {"points": 60}},
            re_when="item_count >= 15",
        ),
        Spec(
            {
                "id": f"partner-bakery{sfx}",
                "partners": ["bakery-co"],
                "when": "tx.total >= 20",
                "earn": {"points": 75},
            },
            re_when='outlet_partner == "bakery-co" and total >= 20',
        ),
        Spec(
            {
                "id": f"march-vip{sfx}",
                "valid_from": date(2026, 3, 1),
                "valid_until": date(2026, 4, 1),
                "when": "member.points > 1000",
                "earn": {"points": 500},
            },
            re_when='time >= d"2026-03-01T00:00:00+01:00" and time < d"2026-04-01T00:00:00+02:00" '
            "and member_points > 1000",
        ),
    ]
    return specs


def specs(n_rules: int = 50) -> list[Spec]:
    """The first ``n_rules`` rules (a multiple of 50 gives whole rounds)."""
    out: list[Spec] = []
    k = 0
    while len(out) < n_rules:
        out += _specs(k)
        k += 1
    return out[:n_rules]


def program_data(n_rules: int = 50) -> dict[str, Any]:
    """The program document as plain data (what ``rules.load_program_data`` takes)."""
    return {
        "program": f"Benchmark Markt ({n_rules} rules)",
        "currency": "EUR",
        "timezone": "Europe/Berlin",
        "points": {"rounding": "floor"},
        "tiers": {
            "qualify_on": "points",
            "levels": [
                {"name": "bronze", "min": 0},
                {"name": "silver", "min": 1000, "earn_multiplier": Decimal("1.25")},
                {"name": "gold", "min": 5000, "earn_multiplier": Decimal("1.5")},
            ],
        },
        "rules": [s.rule for s in specs(n_rules)],
    }


TIER_EXTRA = {"bronze": ZERO, "silver": Decimal("0.25"), "gold": Decimal("0.5")}

# ---------------------------------------------------------------------------------------------------
# The inputs

#: (sku, category, unit price in cents, quantity, tags): a supermarket-café basket touching most rules.
BASKET_LINES: list[tuple[str, str, int, int, tuple[str, ...]]] = [
    ("C-100", "coffee", 899, 1, ("promo", "fairtrade")),
    ("C-101", "coffee", 1249, 2, ("fairtrade", "organic")),
    ("T-200", "tea", 450, 1, ("organic", "vegan")),
    ("B-300", "bakery", 120, 4, ("regional",)),
    ("B-300", "bakery", 120, 2, ("regional",)),
    ("B-310", "bakery", 295, 1, ("new",)),
    ("D-400", "dairy", 109, 6, ("bulk",)),
    ("D-410", "dairy", 229, 1, ("organic", "regional")),
    ("P-500", "produce", 199, 3, ("seasonal", "regional")),
    ("P-510", "produce", 349, 1, ("organic",)),
    ("F-600", "frozen", 499, 2, ("seasonal",)),
    ("S-700", "snacks", 179, 8, ("promo", "bulk")),
    ("S-710", "snacks", 99, 1, ("new", "vegan")),
    ("H-800", "household", 1599, 1, ()),
    ("H-810", "household", 549, 2, ("bulk",)),
    ("V-900", "beverages", 89, 12, ("bulk",)),
    ("V-910", "beverages", 2999, 1, ("new",)),
    ("X-001", "tobacco", 850, 1, ()),
    ("G-050", "giftcard", 2500, 1, ()),
    ("C-102", "coffee", 5499, 1, ("organic", "fairtrade")),
]
#: Saturday afternoon in March: the weekend, Saturday and March rules apply, the Sunday one does not.
WHEN = datetime(2026, 3, 14, 15, 30, tzinfo=ZONE)


def basket(
    lines: list[tuple[str, str, int, int, tuple[str, ...]]] = BASKET_LINES,
    when: datetime = WHEN,
    channel: str = "till",
) -> Transaction:
    items = tuple(Item(sku=s, category=c, unit_price=p, quantity=q, tags=t) for s, c, p, q, t in lines)
    return Transaction(time=when, items=items, channel=channel)


MEMBER = Member(
    id="m-1",
    tier="silver",
    points=1500,
    visits=23,
    last_visit_at=WHEN - timedelta(days=120),
    enrolled_at=datetime(2023, 5, 2, tzinfo=ZONE),
    tags=("student",),
    rule_uses={"student-till": (4, 0)},
)
OUTLET = Outlet(id="berlin-01", partner="bakery-co", tags=("berlin",))


def random_case(rng: random.Random) -> tuple[Transaction, Member, Outlet]:
    """A random basket, member and outlet drawn from the same vocabulary (for the agreement check)."""
    lines = [
        (
            sku,
            cat,
            rng.choice([0, 89, 150, 499, 500, 999, 1000, 2500, 5001]) if rng.random() < 0.4 else price,
            rng.choice([1, 1, 2, 3, 6, 7]),
            tuple(
                rng.sample(
                    ["promo", "organic", "vegan", "new", "bulk", "seasonal", "regional", "fairtrade"],
                    rng.randint(0, 3),
                )
            ),
        )
        for sku, cat, price, _, _ in rng.choices(BASKET_LINES, k=rng.randint(0, 20))
    ]
    when = datetime(
        2026, rng.choice([2, 3, 4]), rng.randint(1, 28), rng.randint(0, 23), rng.choice([0, 59]), tzinfo=ZONE
    )
    tier = rng.choice([None, "bronze", "silver", "gold"])
    last = rng.choice([None, when - timedelta(days=rng.randint(0, 200))])
    uses = {"welcome-back": (rng.randint(0, 1), 0), "student-till": (3, rng.randint(0, 1))}
    member = Member(
        id="m-r",
        tier=tier,
        points=rng.choice([0, 1000, 1001]),
        visits=rng.choice([0, 9, 10, 49, 50, 80]),
        last_visit_at=last,
        tags=rng.choice([(), ("student",), ("student", "staff")]),
        rule_uses=uses,
    )
    outlet = Outlet(id="o", partner=rng.choice(["bakery-co", "carwash"]))
    return basket(lines, when, rng.choice(["till", "app"])), member, outlet


# ---------------------------------------------------------------------------------------------------
# The named baseline: this program written by hand


def _remaining(
    member: Member,
    rule_id: str,
    per_transaction: int | None = None,
    per_member: int | None = None,
    per_day: int | None = None,
) -> int:
    ever, today = member.rule_uses.get(rule_id, (0, 0))
    caps = [
        c
        for c in (per_transaction, per_member and per_member - ever, per_day and per_day - today)
        if c is not None
    ]
    return max(0, min(caps)) if caps else 1_000_000


_C_BONUS = {cat: Decimal(rate) for cat, rate in CATEGORY_BONUS}
_D = Decimal
_R01, _R015, _R02, _R03, _R05 = _D("0.1"), _D("0.15"), _D("0.2"), _D("0.3"), _D("0.5")
_X1, _X05, _X025, _X2, _X01, _X02, _X04, _X03, _X3, _X4 = (
    _D(1),
    _D("0.5"),
    _D("0.25"),
    _D(2),
    _D("0.1"),
    _D("0.2"),
    _D("0.4"),
    _D("0.3"),
    _D(3),
    _D(4),
)
_MARCH = (datetime(2026, 3, 1, tzinfo=ZONE), datetime(2026, 4, 1, tzinfo=ZONE))
_HOUSE_COFFEE = frozenset({"C-100", "C-101", "C-102"})
_NO_BASE = frozenset({"tobacco", "giftcard"})


def hand_written_total(tx: Transaction, member: Member, outlet: Outlet, now: datetime | None = None) -> int:
    """Whole points for ``tx`` under the 50-rule program, written out rule by rule."""
    now = now or tx.time
    local = tx.time.astimezone(ZONE)
    weekday, hour = local.weekday(), local.hour
    tier = member.tier or "bronze"
    items = tx.items
    with localcontext(DECIMAL):
        total_amount = sum([i.unit_price * i.quantity for i in items]) * MINOR
        gold_hot = tier == "gold"
        app = tx.channel == "app"
        sunday = weekday == 6
        weekend_day = weekday >= 5 and 10 <= hour < 18
        student = "student" in member.tags
        regular_max = member.visits >= 50
        bulk_left = _remaining(member, "x-bulk-lines", per_transaction=2)
        bakery_left = _remaining(member, "pts-B-300", per_transaction=1)
        base_sum = ZERO
        fixed = 0
        for it in items:
            cat, sku, tags, qty = it.category, it.sku, it.tags, it.quantity
            price = it.unit_price * MINOR
            amount = it.unit_price * qty * MINOR
            # Base points per euro.
            rate = ZERO
            if cat not in _NO_BASE:
                rate += _X1
            bonus = _C_BONUS.get(cat)
            if bonus is not None:
                rate += bonus
            if 5 <= price < 10:
                rate += _R01
            if price >= 10:
                rate += _R02
            if amount >= 25:
                rate += _R015
            if sku in _HOUSE_COFFEE:
                rate += _X2
            if sku.lower() == "t-200":
                rate += _X1
            if "fairtrade" in tags:
                rate += _R05
            if ("regional" in tags or "seasonal" in tags) and cat != "frozen":
                rate += _R03
            if gold_hot and (cat == "coffee" or cat == "tea"):
                rate += _R05
            if app and price > 2:
                rate += _R05
            base = amount * rate
            # Multipliers scale the base: a promotion replaces the rest, tags stack, the largest 'max' wins.
            if base:
                if sunday:
                    extra = base * _X3
                elif sku == "C-100" and "promo" in tags:
                    extra = base * _X4
                else:
                    extra = ZERO
                    if "organic" in tags:
                        extra += base
                    if "vegan" in tags:
                        extra += base * _X05
                    if "new" in tags:
                        extra += base * _X025
                    if "promo" in tags:
                        extra += base * _X2
                    if "bulk" in tags:
                        extra += base * _X01
                    if "seasonal" in tags:
                        extra += base * _X02
                    if qty >= 6 and bulk_left:
                        bulk_left -= 1
                        extra += base * _X05
                    if weekend_day:
                        extra += base * _X05
                    if student:
                        extra += base * _X01
                    if amount >= 50:
                        extra += base
                    elif amount >= 20:
                        extra += base * _X05
                    elif regular_max:
                        extra += base * _X04
                    elif cat == "coffee" and qty >= 2:
                        extra += base * _X03
                    elif amount >= 10:
                        extra += base * _X02
                base += extra
            base_sum += base
            # Fixed points per unit.
            if sku == "C-100":
                fixed += 10 * qty
            elif sku == "C-101":
                fixed += 15 * qty
            elif sku == "T-200":
                fixed += 5 * qty
            elif sku == "B-300":
                if bakery_left:
                    bakery_left -= 1
                    fixed += 20 * qty
            elif sku == "D-400":
                fixed += 8 * qty
            elif sku == "P-500":
                fixed += 12 * qty
            if cat == "bakery" and qty >= 3:
                fixed += 25 * qty
            if "new" in tags and price < 3:
                fixed += 5 * qty
        points = int((base_sum * (ONE + TIER_EXTRA[tier])).quantize(ONE, rounding=ROUND_FLOOR))
    # Transaction-level points.
    last = member.last_visit_at
    days_away = NEVER_DAYS if last is None else max(0, (now - last) // DAY)
    if days_away > 90 and _remaining(member, "welcome-back", per_member=1):
        fixed += 200
    if total_amount >= 50:
        fixed += 100
    if total_amount >= 100:
        fixed += 250
    if 10 <= member.visits < 50:
        fixed += 30
    if weekday == 5 and hour >= 15:
        fixed += 40
    if student and tx.channel == "till" and _remaining(member, "student-till", per_day=1):
        fixed += 20
    if tier == "silver" or tier == "gold":
        fixed += 50
    if len(items) >= 15:
        fixed += 60
    if outlet.partner == "bakery-co" and total_amount >= 20:
        fixed += 75
    if _MARCH[0] <= tx.time < _MARCH[1] and member.points > 1000:
        fixed += 500
    return points + fixed


# ---------------------------------------------------------------------------------------------------
# The rule-engine package evaluating the same conditions

_ITEM_TYPES = {
    "sku": rule_engine.DataType.STRING,
    "category": rule_engine.DataType.STRING,
    "quantity": rule_engine.DataType.FLOAT,
    "unit_price": rule_engine.DataType.FLOAT,
    "amount": rule_engine.DataType.FLOAT,
    "tags": rule_engine.DataType.ARRAY(rule_engine.DataType.STRING),
}
_TX_TYPES = {
    "time": rule_engine.DataType.DATETIME,
    "channel": rule_engine.DataType.STRING,
    "total": rule_engine.DataType.FLOAT,
    "item_count": rule_engine.DataType.FLOAT,
    "member_tier": rule_engine.DataType.STRING,
    "member_visits": rule_engine.DataType.FLOAT,
    "member_points": rule_engine.DataType.FLOAT,
    "member_tags": rule_engine.DataType.ARRAY(rule_engine.DataType.STRING),
    "days_since_last_visit": rule_engine.DataType.FLOAT,
    "outlet_partner": rule_engine.DataType.STRING,
}


@dataclass(slots=True)
class _CompiledRule:
    id: str
    kind: str  # base | multiplier | points
    per_item: bool
    stacking: str
    amount: Decimal
    when: Callable[[Any], bool] | None
    where: Callable[[Any], bool] | None
    limit: dict[str, int] | None


class RuleEngineContender:
    """Conditions parsed once by rule-engine; evaluation calls ``Rule.matches`` and adds up points."""

    def __init__(self, spec_list: list[Spec], tier_extra: dict[str, Decimal]) -> None:
        item_ctx = rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(_ITEM_TYPES))
        tx_ctx = rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(_TX_TYPES))
        self.tier_extra = tier_extra
        self.rules: list[_CompiledRule] = []
        for s in spec_list:
            r = s.rule
            kind = {"per_currency_unit": "base", "multiplier": "multiplier", "points": "points"}[
                next(iter(r["earn"]))
            ]
            amount = Decimal(str(next(iter(r["earn"].values()))))
            self.rules.append(
                _CompiledRule(
                    id=r["id"],
                    kind=kind,
                    per_item=r.get("for_each") == "item",
                    stacking=r.get("stacking", "additive"),
                    amount=amount - 1 if kind == "multiplier" else amount,
                    when=rule_engine.Rule(s.re_when, context=tx_ctx).matches if s.re_when else None,
                    where=rule_engine.Rule(s.re_where, context=item_ctx).matches if s.re_where else None,
                    limit=r.get("limit"),
                )
            )
        self.base = [r for r in self.rules if r.kind == "base"]
        mult = [r for r in self.rules if r.kind == "multiplier"]
        self.exclusive = [r for r in mult if r.stacking == "exclusive"]
        self.additive = [r for r in mult if r.stacking == "additive"]
        self.maxed = sorted((r for r in mult if r.stacking == "max"), key=lambda r: -r.amount)
        self.item_points = [r for r in self.rules if r.kind == "points" and r.per_item]
        self.tx_points = [r for r in self.rules if r.kind == "points" and not r.per_item]

    def total(self, tx: Transaction, member: Member, outlet: Outlet, now: datetime | None = None) -> int:
        now = now or tx.time
        last = member.last_visit_at
        with localcontext(DECIMAL):
            tx_ctx = {
                "time": tx.time.astimezone(ZONE),
                "channel": tx.channel,
                "total": sum([i.unit_price * i.quantity for i in tx.items]) * MINOR,
                "item_count": len(tx.items),
                "member_tier": member.tier or "bronze",
                "member_visits": member.visits,
                "member_points": member.points,
                "member_tags": member.tags,
                "days_since_last_visit": NEVER_DAYS if last is None else max(0, (now - last) // DAY),
                "outlet_partner": outlet.partner,
            }
            # Transaction-level conditions and limits once; per item only what depends on the item.
            gate = {r.id: r.when is None or r.when(tx_ctx) for r in self.rules}
            left = {r.id: _remaining(member, r.id, **r.limit) for r in self.rules if r.limit}
            base_sum = ZERO
            fixed = 0
            for it in tx.items:
                ctx = {
                    "sku": it.sku,
                    "category": it.category,
                    "quantity": it.quantity,
                    "unit_price": it.unit_price * MINOR,
                    "amount": it.unit_price * it.quantity * MINOR,
                    "tags": it.tags,
                }
                base = ZERO
                for r in self.base:
                    if self._applies(r, gate, left, ctx):
                        base += ctx["amount"] * r.amount
                if base:
                    extra = ZERO
                    chosen = next((r for r in self.exclusive if self._applies(r, gate, left, ctx)), None)
                    if chosen is not None:
                        extra = base * chosen.amount
                    else:
                        for r in self.additive:
                            if self._applies(r, gate, left, ctx):
                                extra += base * r.amount
                        best = next((r for r in self.maxed if self._applies(r, gate, left, ctx)), None)
                        if best is not None:
                            extra += base * best.amount
                    base += extra
                base_sum += base
                for r in self.item_points:
                    if self._applies(r, gate, left, ctx):
                        fixed += int(r.amount) * it.quantity
            for r in self.tx_points:
                if gate[r.id] and left.get(r.id, 1) > 0:
                    fixed += int(r.amount)
            tier = member.tier or "bronze"
            points = int((base_sum * (ONE + self.tier_extra[tier])).quantize(ONE, rounding=ROUND_FLOOR))
        return points + fixed

    @staticmethod
    def _applies(r: _CompiledRule, gate: dict[str, bool], left: dict[str, int], ctx: dict[str, Any]) -> bool:
        if not gate[r.id] or (r.where is not None and not r.where(ctx)):
            return False
        if r.limit is None:
            return True
        if left[r.id] <= 0:
            return False
        left[r.id] -= 1
        return True
