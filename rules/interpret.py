"""The reference interpreter: the points pipeline written out plainly, walking the checked trees.

It is the yardstick the compiled engine (rules/emit.py + rules/engine.py) is measured against: the
differential tests run both on random programs and baskets and require equal figures, and the
benchmarks show what compiling buys. It is written independently of the emitter: it walks the checked
IR of every condition at every evaluation and follows DESIGN "The program document" step by step:

  1. base: every matching ``per_currency_unit`` rule gives rate x line amount per item;
  2. multipliers scale an item's base: the first matching ``exclusive`` rule (document order) replaces
     every other multiplier; otherwise every matching ``additive`` one adds its extra part and only
     the largest matching ``max`` one adds its extra part;
  3. the member's tier ``earn_multiplier`` scales what steps 1-2 gave;
  4. fixed ``points`` are added, never multiplied;
  5. ``limit`` caps how often a rule applies and ``budget`` the points it gives, items in basket
     order; a rule whose budget is used up no longer applies at all; the program's rounding applies
     once to the (multiplied) total.

An application is one item for ``for_each: item`` rules, and one transaction for the others (a
transaction-level base rule or multiplier applies when it gave at least one item something).

Stamps are counted alongside and never change points. Speed is not a goal here; clarity is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from rules import check as ir
from rules.context import Customer, Event, Item, Member, Outlet, Transaction
from rules.engine import DECIMAL_CONTEXT, check_basket, check_points
from rules.errors import EvaluationError
from rules.program import CheckedProgram, CheckedRule
from rules.schema import NEVER_DAYS, WEEKDAYS

_ROUNDING = {"floor": ROUND_FLOOR, "half_up": ROUND_HALF_UP, "ceil": ROUND_CEILING}
_ZERO = Decimal(0)
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Interpreted:
    """The figures of one interpreted evaluation, comparable with :class:`rules.engine.Result`."""

    total: int
    #: Points per rule that applied at least once, before the tier multiplier and rounding.
    rule_points: dict[str, Decimal]
    rule_applications: dict[str, int]
    #: Whole points per basket line (largest-remainder allocation, fixed item points included).
    item_points: tuple[int, ...]
    #: Stamps added per card.
    stamps: dict[str, int]
    rewards_unlocked: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------
# Conditions


@dataclass(frozen=True, slots=True)
class _Scope:
    """Everything a condition may read."""

    program: CheckedProgram
    tx: Transaction
    member: Member
    outlet: Outlet
    event: Event
    now: datetime
    tier: str
    item: Item | None = None
    customer: Customer | None = None

    def with_item(self, item: Item) -> _Scope:
        return _Scope(self.program, self.tx, self.member, self.outlet, self.event, self.now, self.tier, item)


def _days_between(earlier: datetime | None, now: datetime) -> int:
    """Whole 24-hour days from ``earlier`` to ``now`` (never negative); NEVER_DAYS without a date."""
    if earlier is None:
        return NEVER_DAYS
    return max(0, (now - earlier) // timedelta(days=1))


def _item_field(item: Item, name: str, minor: Decimal) -> Any:
    if name == "unit_price":
        return item.unit_price * minor
    if name == "amount":
        return item.unit_price * item.quantity * minor
    return getattr(item, name)  # sku, category, quantity, tags


def _field(scope: _Scope, root: str, name: str) -> Any:
    minor = scope.program.minor
    if root == "tx":
        if name == "total":
            return sum(i.unit_price * i.quantity for i in scope.tx.items) * minor
        if name == "items":
            return scope.tx.items
        return getattr(scope.tx, name)  # time, channel
    if root == "item":
        assert scope.item is not None, "the checker allows item.* only in for_each: item rules"
        return _item_field(scope.item, name, minor)
    if root == "member":
        if name == "tier":
            return scope.tier
        if name == "days_since_last_visit":
            return _days_between(scope.member.last_visit_at, scope.now)
        if name == "days_since_enrolled":
            return _days_between(scope.member.enrolled_at, scope.now)
        return getattr(scope.member, name)  # id, points, visits, tags
    if root == "customer":
        assert scope.customer is not None, "the checker allows customer.* only in segment conditions"
        if name in ("spend", "predicted_value"):
            return getattr(scope.customer, name) * minor
        value = getattr(scope.customer, name)
        return Decimal(str(value)) if isinstance(value, float) else value
    if root == "outlet":
        return getattr(scope.outlet, name)
    if root == "event":
        return getattr(scope.event, name)
    raise AssertionError(f"unknown root {root}")


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    if op == ">=":
        return bool(a >= b)
    if op == "in":
        return a in b
    if op == "not in":
        return a not in b
    raise AssertionError(f"unknown comparison {op}")


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    if op == "%":
        return a % b
    raise AssertionError(f"unknown operator {op}")


def _local(scope: _Scope, value: datetime) -> datetime:
    return value.astimezone(scope.program.zone)


def _call(scope: _Scope, node: ir.Call) -> Any:
    args = [_eval(scope, a) for a in node.args]
    f = node.func
    if f == "weekday":
        return WEEKDAYS[_local(scope, args[0]).weekday()]
    if f == "hour":
        return _local(scope, args[0]).hour
    if f == "date":
        return _local(scope, args[0]).date()
    if f == "days_since":
        value = args[0]
        if isinstance(value, datetime):
            return _days_between(value, scope.now)
        assert isinstance(value, date)
        return max(0, (_local(scope, scope.now).date() - value).days)
    if f == "count":
        values = list(args[0])
        return len(values) if len(args) == 1 else values.count(args[1])
    if f == "sum":
        total: Any = 0
        for value in args[0]:
            total = total + value
        return total
    if f == "any":
        if len(args) == 1:
            return any(args[0])
        return any(value in list(args[1]) for value in args[0])
    if f in ("min", "max"):
        pick = min if f == "min" else max
        if len(args) == 1:
            values = list(args[0])
            return pick(values) if values else 0
        return pick(args)
    if f == "lower":
        return args[0].lower()
    raise AssertionError(f"unknown function {f}")


def _eval(scope: _Scope, node: ir.Node) -> Any:
    """The value of a checked tree: one recursive walk, no code generation."""
    if isinstance(node, ir.Const):
        return node.value
    if isinstance(node, ir.FieldRef):
        return _field(scope, node.root, node.name)
    if isinstance(node, ir.Project):
        return [_item_field(item, node.name, scope.program.minor) for item in _eval(scope, node.source)]
    if isinstance(node, ir.ListLit):
        return [_eval(scope, e) for e in node.elements]
    if isinstance(node, ir.BoolOp):
        if node.op == "and":
            return all(_eval(scope, v) for v in node.values)
        return any(_eval(scope, v) for v in node.values)
    if isinstance(node, ir.Not):
        return not _eval(scope, node.operand)
    if isinstance(node, ir.Neg):
        return -_eval(scope, node.operand)
    if isinstance(node, ir.Arith):
        return _arith(node.op, _eval(scope, node.left), _eval(scope, node.right))
    if isinstance(node, ir.Compare):
        left = _eval(scope, node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(scope, comparator)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    if isinstance(node, ir.Call):
        return _call(scope, node)
    raise AssertionError(f"unknown node {type(node).__name__}")


def _holds(scope: _Scope, node: ir.Node | None) -> bool:
    return node is None or bool(_eval(scope, node))


# ---------------------------------------------------------------------------------------------------
# The pipeline


class _RuleState:
    """What one rule has done so far in this evaluation."""

    def __init__(self, rule: CheckedRule, member: Member, budgets: Mapping[str, int]) -> None:
        self.rule = rule
        self.points = _ZERO
        self.applications = 0
        self.stamps = 0
        ever, today = member.rule_uses.get(rule.id, (0, 0))
        left = []
        if rule.per_transaction is not None:
            left.append(rule.per_transaction)
        if rule.per_member is not None:
            left.append(rule.per_member - ever)
        if rule.per_day is not None:
            left.append(rule.per_day - today)
        #: Applications still allowed (None: unlimited).
        self.uses_left: int | None = max(0, min(left)) if left else None
        #: Points still allowed (None: no budget).
        self.budget_left: Decimal | None = (
            None if rule.budget is None else Decimal(max(0, rule.budget - budgets.get(rule.id, 0)))
        )

    def may_apply(self) -> bool:
        """Whether the rule's limit allows one more application."""
        return self.uses_left is None or self.applications < self.uses_left

    def has_budget(self) -> bool:
        """A rule whose budget is used up no longer applies at all."""
        return self.budget_left is None or self.budget_left > 0

    def give(self, value: Decimal) -> Decimal:
        """Book ``value`` points, capped by what is left of the budget; return what was booked."""
        if self.budget_left is not None:
            value = min(value, self.budget_left)
            if value > 0:  # a multiplier below 1 takes points away; that never refills a budget
                self.budget_left -= value
        self.points += value
        return value


def _amount(rule: CheckedRule) -> Decimal:
    """The rate, factor or fixed points of an earning rule (0 is a real value: a multiplier of 0)."""
    assert rule.amount is not None
    return rule.amount


def _gate(scope: _Scope, state: _RuleState) -> bool:
    """Everything about a rule that does not depend on an item."""
    rule, tx, outlet = state.rule, scope.tx, scope.outlet
    if rule.valid_from is not None and not tx.time >= rule.valid_from:
        return False
    if rule.valid_until is not None and not tx.time < rule.valid_until:
        return False
    if rule.partners is not None and outlet.partner not in rule.partners:
        return False
    if rule.outlets is not None and outlet.id not in rule.outlets:
        return False
    if rule.holdout is not None and rule.id in scope.member.holdout:
        return False
    if not _holds(scope, rule.when):
        return False
    if rule.per_item:
        return True
    # A transaction-level rule applies at most once, and only while its limit allows it; fixed points
    # also need budget left (base and multiplier rules check theirs item by item).
    return state.may_apply() and (rule.kind != "points" or state.has_budget())


def _validate(program: CheckedProgram, tx: Transaction, member: Member, now: datetime | None) -> None:
    def aware(value: datetime | None) -> bool:
        return value is None or (value.tzinfo is not None and value.utcoffset() is not None)

    if not aware(tx.time):
        raise EvaluationError("transaction time must be timezone-aware")
    if not aware(now):
        raise EvaluationError("now must be timezone-aware")
    if not aware(member.last_visit_at) or not aware(member.enrolled_at):
        raise EvaluationError("member dates must be timezone-aware")
    check_basket(tx.items)
    tiers = program.document.tiers
    if member.tier is not None and (tiers is None or member.tier not in {lvl.name for lvl in tiers.levels}):
        raise EvaluationError(f"member tier {member.tier!r} is not a tier of this program")


_NOBODY = Member()
_NOWHERE = Outlet()
_PURCHASE = Event()


def interpret(
    program: CheckedProgram,
    tx: Transaction,
    member: Member = _NOBODY,
    outlet: Outlet = _NOWHERE,
    event: Event = _PURCHASE,
    *,
    now: datetime | None = None,
    budgets: Mapping[str, int] | None = None,
) -> Interpreted:
    """Evaluate ``tx`` under ``program`` by walking the checked trees; see the module docstring."""
    _validate(program, tx, member, now)
    with localcontext(DECIMAL_CONTEXT):
        return _interpret(program, tx, member, outlet, event, now or tx.time, budgets or {})


def _interpret(
    program: CheckedProgram,
    tx: Transaction,
    member: Member,
    outlet: Outlet,
    event: Event,
    now: datetime,
    budgets: Mapping[str, int],
) -> Interpreted:
    tiers = program.document.tiers
    tier = member.tier or (tiers.levels[0].name if tiers is not None else "")
    tier_factor = _ONE
    if tiers is not None:
        tier_factor = next(level.earn_multiplier for level in tiers.levels if level.name == tier)
    scope = _Scope(program, tx, member, outlet, event, now, tier)

    states = [_RuleState(rule, member, budgets) for rule in program.rules]
    gates = [_gate(scope, s) for s in states]

    def matches(state: _RuleState, item_scope: _Scope) -> bool:
        """Whether a rule applies to one item: its gate, its item condition and its per-item limit."""
        if not gates[state.rule.index] or not state.has_budget():
            return False
        if state.rule.per_item:
            return _holds(item_scope, state.rule.where) and state.may_apply()
        return True

    def applied(state: _RuleState) -> None:
        """An item rule applies once per item, a transaction rule once however many items it touched."""
        if state.rule.per_item:
            state.applications += 1
        else:
            state.applications = 1

    # Transaction-level fixed points and stamps apply once when their gate holds.
    for state in states:
        rule = state.rule
        if rule.per_item or not gates[rule.index] or rule.kind not in ("points", "stamp"):
            continue
        state.applications = 1
        if rule.kind == "points":
            state.give(_amount(rule))
        elif rule.kind == "stamp":
            assert rule.stamp_count is not None
            state.stamps = max(0, int(_eval(scope, rule.stamp_count)))

    by_kind: dict[str, list[_RuleState]] = {}
    for state in states:
        by_kind.setdefault(state.rule.kind, []).append(state)
    multipliers = by_kind.get("multiplier", [])
    exclusive = [s for s in multipliers if s.rule.stacking == "exclusive"]
    additive = [s for s in multipliers if s.rule.stacking == "additive"]
    maxed = sorted(
        (s for s in multipliers if s.rule.stacking == "max"), key=lambda s: (-_amount(s.rule), s.rule.index)
    )

    def extra(state: _RuleState, base: Decimal) -> Decimal:
        """Book and return the extra part ``base x (factor - 1)`` of a multiplier."""
        booked = state.give(base * (_amount(state.rule) - 1))
        applied(state)
        return booked

    bases: list[Decimal] = []
    fixed: list[int] = []
    for item in tx.items:
        item_scope = scope.with_item(item)
        amount = item.unit_price * item.quantity * program.minor

        # 1. base
        base = _ZERO
        for state in by_kind.get("base", []):
            if matches(state, item_scope):
                base += state.give(amount * _amount(state.rule))
                applied(state)

        # 2. multipliers, only on items that earned a base
        if base:
            winner = next((s for s in exclusive if matches(s, item_scope)), None)
            if winner is not None:
                boost = extra(winner, base)
            else:
                boost = _ZERO
                for state in additive:
                    if matches(state, item_scope):
                        boost += extra(state, base)
                largest = next((s for s in maxed if matches(s, item_scope)), None)
                if largest is not None:
                    boost += extra(largest, base)
            base += boost
        bases.append(base)

        # 4. fixed points of item rules: per unit, never multiplied
        item_fixed = _ZERO
        for state in by_kind.get("points", []):
            if state.rule.per_item and matches(state, item_scope):
                item_fixed += state.give(_amount(state.rule) * item.quantity)
                applied(state)
        fixed.append(int(item_fixed))

        for state in by_kind.get("stamp", []):
            if state.rule.per_item and matches(state, item_scope):
                assert state.rule.stamp_count is not None
                state.stamps += max(0, int(_eval(item_scope, state.rule.stamp_count)))
                applied(state)

    # 3. tier, then 5. rounding once per transaction
    rounding = _ROUNDING[program.document.points.rounding]
    exact = [b * tier_factor for b in bases]
    rounded = int(sum(exact, _ZERO).quantize(_ONE, rounding=rounding))
    tx_fixed = sum((int(s.points) for s in states if s.rule.kind == "points" and not s.rule.per_item), 0)
    total = rounded + sum(fixed) + tx_fixed
    check_points(total)

    return Interpreted(
        total=total,
        rule_points={s.rule.id: s.points for s in states if s.applications},
        rule_applications={s.rule.id: s.applications for s in states if s.applications},
        item_points=_allocate(exact, rounded, fixed),
        stamps=_stamps(states),
        rewards_unlocked=_vouchers(states, member),
    )


def _allocate(exact: list[Decimal], target: int, fixed: list[int]) -> tuple[int, ...]:
    """Whole points per line adding up to ``target``: floors, then +1 by largest remainder (ties: first)."""
    floors = [int(e.to_integral_value(rounding=ROUND_FLOOR)) for e in exact]
    missing = target - sum(floors)
    by_remainder: Callable[[int], tuple[Decimal, int]] = lambda i: (-(exact[i] - floors[i]), i)  # noqa: E731
    for i in sorted(range(len(exact)), key=by_remainder)[: max(0, missing)]:
        floors[i] += 1
    return tuple(f + x for f, x in zip(floors, fixed, strict=True))


def _stamps(states: list[_RuleState]) -> dict[str, int]:
    added: dict[str, int] = {}
    for state in states:
        if state.rule.kind == "stamp" and state.stamps:
            card = state.rule.stamp_card or ""
            added[card] = added.get(card, 0) + state.stamps
    return added


def _vouchers(states: list[_RuleState], member: Member) -> tuple[str, ...]:
    cards: dict[str, tuple[int, str]] = {}
    for state in states:
        if state.rule.kind == "stamp":
            rule = state.rule
            cards[rule.stamp_card or ""] = (rule.stamp_reward_at or 1, rule.stamp_reward or "")
    vouchers: list[str] = []
    for card, added in _stamps(states).items():
        reward_at, reward = cards[card]
        vouchers += [reward] * ((member.stamps.get(card, 0) + added) // reward_at)
    return tuple(vouchers)


__all__ = ["Interpreted", "interpret"]


def segment_of(program: CheckedProgram, member: Member, customer: Customer, *, now: datetime) -> str:
    """The member's segment: the name of the first segment whose condition holds, or "" for none.

    Segment runs are a job over every member, not a till's hot path, so the conditions are walked by
    this interpreter rather than compiled (a few microseconds per member and segment).
    """
    if not program.segments:
        return ""
    tiers = program.document.tiers
    tier = member.tier or (tiers.levels[0].name if tiers is not None else "")
    scope = _Scope(program, Transaction(time=now), member, _NOWHERE, _PURCHASE, now, tier, customer=customer)
    with localcontext(DECIMAL_CONTEXT):
        for name, condition in program.segments:
            if _eval(scope, condition):
                return name
    return ""
