"""Stage 5: compile a checked program once into one callable, and evaluate baskets with it.

The callable is built from source that rules/emit.py generated from checked trees; it is registered in
``linecache`` so a traceback shows the generated line. Compiled programs are cached by document digest.

How a transaction's points add up (DESIGN "The program document"):
  1. base: every matching ``per_currency_unit`` rule gives rate x line amount per item;
  2. multipliers scale an item's base: additive ones add their extra parts, only the largest matching
     ``max`` applies, and the first matching ``exclusive`` one (document order) replaces all others;
  3. the member's tier ``earn_multiplier`` scales what steps 1-2 gave;
  4. fixed ``points`` are added, never multiplied;
  5. ``limit`` caps how often a rule applies, ``budget`` caps the points it gives (steps 1, 2, 4, while
     evaluating, items in basket order) and a rule whose budget is used up no longer applies (an
     exclusive one stops overriding); the program's rounding applies once to the total.
An application is one item for ``for_each: item`` rules, one transaction for the others (a transaction
multiplier or base rule counts when it reached at least one item, so an overridden one uses no limit).
Stamps are counted alongside and never change points.
"""

from __future__ import annotations

import linecache
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal, localcontext
from functools import cached_property
from threading import Lock
from types import MappingProxyType
from typing import Any

from cachetools import LRUCache

from rules import emit
from rules.context import Event, Item, Member, Outlet, Transaction
from rules.errors import EvaluationError
from rules.program import CheckedProgram, CheckedRule
from rules.schema import NEVER_DAYS, WEEKDAYS

#: Basket lines one evaluation accepts; a till never sends more, and it bounds the work per request.
MAX_ITEMS = 1_000
#: Largest quantity and unit price (minor units) of one line: absurd values are input errors.
MAX_QUANTITY = 100_000
MAX_UNIT_PRICE = 10**10
#: Largest total (minor units) of one line, unit price times quantity, and of a whole basket: 100
#: million in a two-decimal currency, far beyond any till receipt.
MAX_LINE_TOTAL = 10**10
MAX_BASKET_TOTAL = 10**10
#: Most points one evaluation may award. A posting beyond it is refused rather than booked: a
#: balance must stay far inside a 64-bit column (see loyalty.ledger.MAX_BALANCE).
MAX_POINTS = 10**10
#: Compiled programs kept in memory (each is a few kB of code).
CACHE_SIZE = 256

#: The decimal context of every evaluation: explicit, never the caller's global one.
DECIMAL_CONTEXT = Context(prec=34, rounding=ROUND_HALF_UP, Emin=-999999, Emax=999999, traps=[])
_ROUNDING = {"floor": ROUND_FLOOR, "half_up": ROUND_HALF_UP, "ceil": ROUND_CEILING}
_ZERO = Decimal(0)
_ONE = Decimal(1)
_NO_USES = (0, 0)
_EMPTY_BUDGETS: Mapping[str, int] = MappingProxyType({})

DEFAULT_MEMBER = Member()
DEFAULT_OUTLET = Outlet()
DEFAULT_EVENT = Event()


def _remaining(
    member: Member, rule_id: str, per_transaction: int | None, per_member: int | None, per_day: int | None
) -> int:
    ever, today = member.rule_uses.get(rule_id, _NO_USES)
    caps = [MAX_ITEMS + 1]
    if per_transaction is not None:
        caps.append(per_transaction)
    if per_member is not None:
        caps.append(per_member - ever)
    if per_day is not None:
        caps.append(per_day - today)
    return max(0, min(caps))


def _budget_left(budgets: Mapping[str, int], rule_id: str, budget: int) -> int:
    return max(0, budget - budgets.get(rule_id, 0))


def _days_since(instant: datetime | None, now: datetime) -> int:
    if instant is None:
        return NEVER_DAYS
    return max(0, (now - instant) // timedelta(days=1))


def _isdisjoint(values: Any, choices: Any) -> bool:
    return frozenset(choices).isdisjoint(values)


# ---------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class ItemPoints:
    index: int
    sku: str
    #: Points before rounding (base and multipliers, times the tier), plus fixed points of item rules.
    exact: Decimal
    #: Whole points of this line; the lines' points plus transaction-level fixed points sum to the total.
    points: int


@dataclass(frozen=True, slots=True)
class RulePoints:
    rule: str
    kind: str
    applications: int
    #: What this rule contributed before the tier multiplier and rounding.
    points: Decimal


@dataclass(frozen=True, slots=True)
class ItemDecision:
    index: int
    status: str
    decided_by: str | None


@dataclass(frozen=True, slots=True)
class RuleExplanation:
    rule: str
    kind: str
    matched: bool
    applications: int
    points: Decimal
    #: The sub-condition that decided the transaction-level part ("weekday(tx.time) == 'tue'").
    decided_by: str | None
    #: Per item, for for_each: item rules and multipliers: applied / not matched / overridden / ...
    items: tuple[ItemDecision, ...]

    def summary(self) -> str:
        if not self.matched:
            why = f": {self.decided_by} was false" if self.decided_by else ""
            return f"{self.rule}: not applied{why}"
        return f"{self.rule}: applied {self.applications}x, {self.points.normalize():f} points"


_STATUS = {
    emit.APPLIED: "applied",
    emit.NOT_MATCHED: "not matched",
    emit.LIMIT_REACHED: "limit or budget reached",
    emit.OVERRIDDEN: "overridden by an exclusive multiplier",
    emit.NO_BASE: "no base points to multiply",
    emit.OUTRANKED: "a larger max multiplier applied",
}


class Result:
    """The immutable outcome of one evaluation. Breakdowns are built on first access."""

    __slots__ = (
        "__dict__",
        "_bases",
        "_compiled",
        "_fixed",
        "_hits",
        "_member_stamps",
        "_points",
        "_stamps",
        "_tm",
        "_trace",
        "_tx",
        "exact",
        "tier",
        "total",
    )

    # Set once in __init__ (through object.__setattr__: the instance refuses later assignment).
    _bases: list[Decimal]
    _compiled: CompiledProgram
    _fixed: list[int] | None
    _hits: tuple[int, ...]
    _member_stamps: Mapping[str, int]
    _points: tuple[Any, ...]
    _stamps: tuple[int, ...]
    _tm: Decimal
    _trace: list[tuple[int, int, int, int]] | None
    _tx: Transaction
    #: Points before rounding, fixed points included.
    exact: Decimal
    #: The member's tier the evaluation used.
    tier: str | None
    #: Whole points of the transaction, rounded once as the program says.
    total: int

    def __init__(
        self,
        compiled: CompiledProgram,
        tx: Transaction,
        member: Member,
        tier: str | None,
        raw: tuple[Any, ...],
    ) -> None:
        bases, fixed, points, hits, stamps, tm, trace = raw
        object.__setattr__(self, "_member_stamps", member.stamps)
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_tx", tx)
        object.__setattr__(self, "_bases", bases)
        object.__setattr__(self, "_fixed", fixed)
        object.__setattr__(self, "_points", points)
        object.__setattr__(self, "_hits", hits)
        object.__setattr__(self, "_stamps", stamps)
        object.__setattr__(self, "_tm", tm)
        object.__setattr__(self, "_trace", trace)
        object.__setattr__(self, "tier", tier)
        fixed_total = (sum(fixed) if fixed else 0) + compiled.tx_fixed_points(points)
        # Every Decimal operation runs in the engine's context, never the caller's global one.
        with localcontext(DECIMAL_CONTEXT):
            exact = sum(bases, _ZERO) * (_ONE + tm)
            rounded = int(exact.quantize(_ONE, rounding=compiled.rounding))
            object.__setattr__(self, "exact", exact + fixed_total)
        object.__setattr__(self, "total", rounded + fixed_total)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Result is immutable")

    @property
    def version(self) -> str:
        """The digest of the program version that computed this result."""
        return self._compiled.digest

    @property
    def tier_multiplier(self) -> Decimal:
        with localcontext(DECIMAL_CONTEXT):
            return _ONE + self._tm

    @cached_property
    def tier_points(self) -> Decimal:
        with localcontext(DECIMAL_CONTEXT):
            return sum(self._bases, _ZERO) * self._tm

    @cached_property
    def items(self) -> tuple[ItemPoints, ...]:
        """Points per basket line; whole points allocated by largest remainder so they add up exactly."""
        with localcontext(DECIMAL_CONTEXT):
            factor = _ONE + self._tm
            exact = [b * factor for b in self._bases]
            target = int(sum(exact, _ZERO).quantize(_ONE, rounding=self._compiled.rounding))
            floors = [int(e.to_integral_value(rounding=ROUND_FLOOR)) for e in exact]
            extra = target - sum(floors)
            order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
            for i in order[: max(0, extra)]:
                floors[i] += 1
            fixed = self._fixed or [0] * len(exact)
            return tuple(
                ItemPoints(i, item.sku, exact[i] + fixed[i], floors[i] + fixed[i])
                for i, item in enumerate(self._tx.items)
            )

    @cached_property
    def rules(self) -> tuple[RulePoints, ...]:
        """Per rule: how often it applied and what it gave (rules that never applied are left out)."""
        return tuple(
            RulePoints(r.id, r.kind, n, Decimal(p))
            for r, p, n in zip(self._compiled.program.rules, self._points, self._hits, strict=True)
            if n
        )

    @cached_property
    def stamps(self) -> Mapping[str, int]:
        """Stamps added per card kind."""
        added: dict[str, int] = {}
        for card, count in zip(self._compiled.stamp_cards, self._stamps, strict=True):
            if count:
                added[card] = added.get(card, 0) + count
        return MappingProxyType(added)

    @property
    def rewards_unlocked(self) -> tuple[str, ...]:
        """Vouchers earned by filling stamp cards (one code per voucher)."""
        return self._unlocked[0]

    @property
    def stamp_cards(self) -> Mapping[str, int]:
        """Stamps on each touched card after this transaction (full cards turned into vouchers)."""
        return self._unlocked[1]

    @cached_property
    def _unlocked(self) -> tuple[tuple[str, ...], Mapping[str, int]]:
        vouchers: list[str] = []
        after: dict[str, int] = {}
        member_stamps = self._member_stamps
        for card, added in self.stamps.items():
            reward_at, reward = self._compiled.cards[card]
            total = member_stamps.get(card, 0) + added
            vouchers += [reward] * (total // reward_at)
            after[card] = total % reward_at
        return tuple(vouchers), MappingProxyType(after)

    @cached_property
    def explanation(self) -> tuple[RuleExplanation, ...]:
        """Per rule, whether it applied and what decided it; empty unless evaluated with explain=True."""
        if self._trace is None:
            return ()
        texts = self._compiled.trace_texts
        gate: dict[int, tuple[int, int]] = {}
        per_item: dict[int, list[ItemDecision]] = {}
        for rule_index, item_index, status, text_id in self._trace:
            why = texts[text_id] if text_id >= 0 else None
            if item_index < 0:
                gate[rule_index] = (status, text_id)
            else:
                per_item.setdefault(rule_index, []).append(ItemDecision(item_index, _STATUS[status], why))
        out = []
        for r in self._compiled.program.rules:
            status, text_id = gate.get(r.index, (1, -1))
            n = self._hits[r.index]
            out.append(
                RuleExplanation(
                    rule=r.id,
                    kind=r.kind,
                    matched=n > 0,
                    applications=n,
                    points=Decimal(self._points[r.index]),
                    decided_by=texts[text_id] if text_id >= 0 else None,
                    items=tuple(per_item.get(r.index, ())),
                )
            )
        return tuple(out)

    def explanation_dicts(self) -> list[dict[str, Any]]:
        """:attr:`explanation` as JSON-ready dicts, built straight from the trace (a till post returns it
        with every answer: this skips the intermediate objects)."""
        if self._trace is None:
            return []
        texts = self._compiled.trace_texts
        gate: dict[int, int] = {}
        per_item: dict[int, list[dict[str, Any]]] = {}
        for rule_index, item_index, status, text_id in self._trace:
            if item_index < 0:
                gate[rule_index] = text_id
            else:
                per_item.setdefault(rule_index, []).append(
                    {
                        "index": item_index,
                        "status": _STATUS[status],
                        "decided_by": texts[text_id] if text_id >= 0 else None,
                    }
                )
        hits, points = self._hits, self._points
        out = []
        for r in self._compiled.program.rules:
            i = r.index
            text_id = gate.get(i, -1)
            out.append(
                {
                    "rule": r.id,
                    "kind": r.kind,
                    "matched": hits[i] > 0,
                    "applications": hits[i],
                    "points": str(Decimal(points[i])),
                    "decided_by": texts[text_id] if text_id >= 0 else None,
                    "items": per_item.get(i, []),
                }
            )
        return out

    def as_dict(self, *, explanation: bool = True) -> dict[str, Any]:
        """A JSON-ready view (Decimals as strings) for storage and APIs; ``explanation=False`` leaves
        the explanation out (it can be recomputed from the version and the inputs)."""
        out: dict[str, Any] = {
            "version": self.version,
            "total": self.total,
            "exact": str(self.exact),
            "tier": self.tier,
            "tier_multiplier": str(self.tier_multiplier),
            "tier_points": str(self.tier_points),
            "items": [
                {"index": i.index, "sku": i.sku, "exact": str(i.exact), "points": i.points}
                for i in self.items
            ],
            "rules": [
                {"rule": r.rule, "kind": r.kind, "applications": r.applications, "points": str(r.points)}
                for r in self.rules
            ],
            "stamps": dict(self.stamps),
            "rewards_unlocked": list(self.rewards_unlocked),
        }
        if explanation:
            out["explanation"] = self.explanation_dicts()
        return out


# ---------------------------------------------------------------------------------------------------
# Compilation


class CompiledProgram:
    """A checked program with its generated evaluation function. Build with :func:`compile_program`."""

    def __init__(self, program: CheckedProgram) -> None:
        self.program = program
        self.digest = program.digest
        self.rounding = _ROUNDING[program.document.points.rounding]
        self.source, self._fn, _ = self._build(trace=False)
        self._traced: Any = None
        self._trace_lock = Lock()
        self.trace_texts: list[str] = []
        stamp_rules = [r for r in program.rules if r.kind == "stamp"]
        self.stamp_cards = tuple(r.stamp_card or "" for r in stamp_rules)
        self.cards: dict[str, tuple[int, str]] = {
            r.stamp_card or "": (r.stamp_reward_at or 1, r.stamp_reward or "") for r in stamp_rules
        }
        self._tx_points_rules = tuple(r.index for r in program.rules if r.kind == "points" and not r.per_item)
        self._tiers = {lvl.name for lvl in program.document.tiers.levels} if program.document.tiers else set()
        self._default_tier = program.document.tiers.levels[0].name if program.document.tiers else None

    def _build(self, trace: bool) -> tuple[str, Any, list[str]]:
        with localcontext(DECIMAL_CONTEXT):  # constants such as factor - 1 are computed while emitting
            emitted = emit.emit_program(self.program, trace=trace)
        filename = f"<rules {self.digest[:12]}{' trace' if trace else ''}>"
        code = compile(emitted.source, filename, "exec")
        namespace: dict[str, Any] = {
            "__builtins__": {
                "len": len,
                "sum": sum,
                "min": min,
                "max": max,
                "any": any,
                "int": int,
                "bool": bool,
                "enumerate": enumerate,
                "frozenset": frozenset,
            },
            "_ZERO": _ZERO,
            "_MINOR": self.program.minor,
            "_ZONE": self.program.zone,
            "_WEEKDAYS": WEEKDAYS,
            "_remaining": _remaining,
            "_budget_left": _budget_left,
            "_days_since": _days_since,
            "_days_since_date": self._days_since_date,
            "_isdisjoint": _isdisjoint,
            **emitted.namespace,
        }
        exec(code, namespace)  # generated from the checked tree, never from user text
        linecache.cache[filename] = (len(emitted.source), None, emitted.source.splitlines(True), filename)
        return emitted.source, namespace["_evaluate"], emitted.texts

    def _days_since_date(self, day: date, now: datetime) -> int:
        return max(0, (now.astimezone(self.program.zone).date() - day).days)

    def tx_fixed_points(self, points: tuple[Any, ...]) -> int:
        return sum(points[i] for i in self._tx_points_rules)

    def evaluate(
        self,
        tx: Transaction,
        member: Member = DEFAULT_MEMBER,
        outlet: Outlet = DEFAULT_OUTLET,
        event: Event = DEFAULT_EVENT,
        *,
        now: datetime | None = None,
        explain: bool = False,
        budgets: Mapping[str, int] | None = None,
    ) -> Result:
        """Evaluate one transaction. ``now`` (default: the transaction's time) anchors day counts."""
        _validate(tx, member, now)
        if member.tier is not None and member.tier not in self._tiers:
            raise EvaluationError(f"member tier {member.tier!r} is not a tier of this program")
        if explain:
            if self._traced is None:
                with self._trace_lock:
                    if self._traced is None:
                        _, traced, texts = self._build(trace=True)
                        # Texts first: another thread may use the function as soon as it is visible.
                        self.trace_texts = texts
                        self._traced = traced
            fn = self._traced
        else:
            fn = self._fn
        with localcontext(DECIMAL_CONTEXT):
            raw = fn(tx, member, outlet, event, now or tx.time, budgets or _EMPTY_BUDGETS)
        result = Result(self, tx, member, member.tier or self._default_tier, raw)
        check_points(result.total)
        return result


def _validate(tx: Transaction, member: Member, now: datetime | None) -> None:
    if tx.time.tzinfo is None or tx.time.utcoffset() is None:
        raise EvaluationError("transaction time must be timezone-aware")
    if now is not None and (now.tzinfo is None or now.utcoffset() is None):
        raise EvaluationError("now must be timezone-aware")
    for name in ("last_visit_at", "enrolled_at"):
        value = getattr(member, name)
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise EvaluationError(f"member.{name} must be timezone-aware")
    check_basket(tx.items)


def check_basket(items: Sequence[Item]) -> None:
    """The bounds every basket keeps (EvaluationError naming the first line beyond one): lines,
    quantity, unit price, line total and basket total. Tills, imports and simulations all pass here."""
    if len(items) > MAX_ITEMS:
        raise EvaluationError(f"a basket holds at most {MAX_ITEMS} lines")
    total = 0
    for i, item in enumerate(items):
        if not 0 <= item.quantity <= MAX_QUANTITY:
            raise EvaluationError(f"item {i}: quantity must be between 0 and {MAX_QUANTITY}")
        if not 0 <= item.unit_price <= MAX_UNIT_PRICE:
            raise EvaluationError(f"item {i}: unit_price must be between 0 and {MAX_UNIT_PRICE} minor units")
        line = item.unit_price * item.quantity
        if line > MAX_LINE_TOTAL:
            raise EvaluationError(
                f"item {i}: unit_price x quantity is {line};"
                f" a line totals at most {MAX_LINE_TOTAL} minor units"
            )
        total += line
    if total > MAX_BASKET_TOTAL:
        raise EvaluationError(f"the basket totals {total}; at most {MAX_BASKET_TOTAL} minor units")


def check_points(points: int) -> None:
    """Refuse an evaluation that awards more than MAX_POINTS (a typo'd price or a runaway rule)."""
    if points > MAX_POINTS:
        raise EvaluationError(
            f"this basket would award {points} points; one posting awards at most {MAX_POINTS}"
        )


_cache: LRUCache[str, CompiledProgram] = LRUCache(maxsize=CACHE_SIZE)
_cache_lock = Lock()


def compile_program(program: CheckedProgram) -> CompiledProgram:
    """Compile ``program``, or return the cached compilation of the same document."""
    with _cache_lock:
        hit = _cache.get(program.digest)
    if hit is not None:
        return hit
    compiled = CompiledProgram(program)
    with _cache_lock:
        return _cache.setdefault(program.digest, compiled)


def evaluate(
    program: CheckedProgram | CompiledProgram,
    tx: Transaction,
    member: Member = DEFAULT_MEMBER,
    outlet: Outlet = DEFAULT_OUTLET,
    event: Event = DEFAULT_EVENT,
    *,
    now: datetime | None = None,
    explain: bool = False,
    budgets: Mapping[str, int] | None = None,
) -> Result:
    """Evaluate ``tx`` under ``program``; see the module docstring for how points add up."""
    compiled = program if isinstance(program, CompiledProgram) else compile_program(program)
    return compiled.evaluate(tx, member, outlet, event, now=now, explain=explain, budgets=budgets)


__all__ = ["CheckedRule", "CompiledProgram", "Result", "compile_program", "evaluate"]
