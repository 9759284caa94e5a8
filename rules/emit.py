"""Stage 4: a checked program -> Python source of one evaluation function.

The source is generated only from checked trees and the numbers of a validated document. Constants
(strings, decimals, sets) reach the function through its namespace as default arguments (fast locals),
never pasted in through ``repr``. One flat function per program: a gate per rule evaluated once, then a
single loop over the basket in which every item rule is an ``if``. With ``trace=True`` the same code also
records, per rule and item, whether it applied and which sub-condition decided it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from rules import check as ir
from rules.program import CheckedProgram, CheckedRule
from rules.schema import DATETIME, FIELDS

# Statuses recorded by traced code, per (rule, item) or per transaction rule.
APPLIED = 1
NOT_MATCHED = 0
LIMIT_REACHED = 2
OVERRIDDEN = 3
NO_BASE = 4
OUTRANKED = 5

#: Item fields the basket loop computes once per item; conditions read these locals instead.
_ITEM_LOCALS = {"unit_price": "_up", "amount": "_amt"}
#: The same money fields in integer minor units, for comparisons with constants that are exact in them.
_IN_MINOR = {"unit_price": "item.unit_price", "amount": "_ac"}
_ORDERING = frozenset({"<", "<=", ">", ">=", "==", "!="})


@dataclass
class Emitted:
    """Generated source plus the namespace it must run in."""

    source: str
    namespace: dict[str, Any]
    #: Texts a trace refers to by index (sub-conditions, gate parts).
    texts: list[str] = field(default_factory=list)


class _Emitter:
    def __init__(self, program: CheckedProgram, trace: bool) -> None:
        self.program = program
        self.trace = trace
        self.consts: dict[str, Any] = {}
        self._const_ids: dict[tuple[type, Any], str] = {}
        self.texts: list[str] = []
        self._text_ids: dict[str, int] = {}
        self.lines: list[str] = []
        self.uses: set[str] = set()
        self._tmp = 0

    # -- helpers ------------------------------------------------------------------------------------

    def const(self, value: Any) -> str:
        try:
            # str() too: Decimal("1") == Decimal("1.0"), yet they give results of different exponents.
            key: tuple[Any, ...] = (type(value), value, str(value))
            hash(key)
        except TypeError:  # a dict table: never shared, keyed by identity
            key = (type(value), id(value))
        if key not in self._const_ids:
            name = f"_k{len(self._const_ids)}"
            self._const_ids[key] = name
            self.consts[name] = value
        return self._const_ids[key]

    def text_id(self, text: str) -> int:
        if text not in self._text_ids:
            self._text_ids[text] = len(self.texts)
            self.texts.append(text)
        return self._text_ids[text]

    def tmp(self) -> str:
        self._tmp += 1
        return f"_t{self._tmp}"

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    # -- expressions --------------------------------------------------------------------------------

    def expr(self, node: ir.Node, item_var: str = "item") -> str:
        if isinstance(node, ir.Const):
            if isinstance(node.value, bool):
                return "True" if node.value else "False"
            return self.const(node.value)
        if isinstance(node, ir.FieldRef):
            if node.root == "item" and item_var == "item" and node.name in _ITEM_LOCALS:
                self.uses.add(_ITEM_LOCALS[node.name])
                return _ITEM_LOCALS[node.name]
            code = FIELDS[node.root][node.name].code
            self._note(code)
            return code.replace("item.", f"{item_var}.") if node.root == "item" else code
        if isinstance(node, ir.Project):
            code = FIELDS["item"][node.name].code.replace("item.", "_it.")
            self._note(code)
            return f"[{code} for _it in {self.expr(node.source, item_var)}]"
        if isinstance(node, ir.ListLit):
            if all(isinstance(e, ir.Const) for e in node.elements):
                return self.const(tuple(e.value for e in node.elements))  # type: ignore[attr-defined]
            return "(" + ", ".join(self.expr(e, item_var) for e in node.elements) + ",)"
        if isinstance(node, ir.BoolOp):
            return "(" + f" {node.op} ".join(self.expr(v, item_var) for v in node.values) + ")"
        if isinstance(node, ir.Not):
            return f"(not {self.expr(node.operand, item_var)})"
        if isinstance(node, ir.Neg):
            return f"(-{self.expr(node.operand, item_var)})"
        if isinstance(node, ir.Arith):
            return f"({self.expr(node.left, item_var)} {node.op} {self.expr(node.right, item_var)})"
        if isinstance(node, ir.Compare):
            in_minor = self._in_minor_units(node, item_var)
            if in_minor is not None:
                return in_minor
            parts = [self.expr(node.left, item_var)]
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                if (
                    op in ("in", "not in")
                    and isinstance(comparator, ir.ListLit)
                    and all(isinstance(e, ir.Const) for e in comparator.elements)
                ):
                    # Membership in a constant list is a frozenset lookup.
                    parts += [op, self.const(frozenset(e.value for e in comparator.elements))]  # type: ignore[attr-defined]
                else:
                    parts += [op, self.expr(comparator, item_var)]
            return "(" + " ".join(parts) + ")"
        if isinstance(node, ir.Call):
            return self.call(node, item_var)
        raise TypeError(f"cannot emit {type(node).__name__}")  # unreachable: the checker built the tree

    def _in_minor_units(self, node: ir.Compare, item_var: str) -> str | None:
        """``item.unit_price >= 5`` as ``item.unit_price >= 500``: ints, if every constant is exact."""
        if item_var != "item" or not all(op in _ORDERING for op in node.ops):
            return None
        digits = -self.program.minor.adjusted()
        operands: list[str | int] = []
        for operand in (node.left, *node.comparators):
            if isinstance(operand, ir.FieldRef) and operand.root == "item" and operand.name in _IN_MINOR:
                operands.append(_IN_MINOR[operand.name])
            elif isinstance(operand, ir.Const) and isinstance(operand.value, Decimal):
                scaled = operand.value.scaleb(digits)
                if scaled != scaled.to_integral_value():
                    return None
                operands.append(int(scaled))
            else:
                return None
        if all(isinstance(o, int) for o in operands):  # constants only: nothing to gain
            return None
        parts = [o if isinstance(o, str) else self.const(o) for o in operands]
        out = [parts[0]]
        for op, part in zip(node.ops, parts[1:], strict=True):
            out += [op, part]
        return "(" + " ".join(out) + ")"

    def _note(self, code: str) -> None:
        for local in ("_tx_total", "_tier", "_days_since_last_visit", "_days_since_enrolled"):
            if local in code:
                self.uses.add(local)

    def call(self, node: ir.Call, item_var: str) -> str:
        f = node.func
        if f == "any" and len(node.args) == 2:
            choices = node.args[1]
            if isinstance(choices, ir.ListLit) and all(isinstance(e, ir.Const) for e in choices.elements):
                # Some element in a constant list: one frozenset method call, no helper.
                options = self.const(frozenset(e.value for e in choices.elements))  # type: ignore[attr-defined]
                return f"(not {options}.isdisjoint({self.expr(node.args[0], item_var)}))"
        args = [self.expr(a, item_var) for a in node.args]
        if f in ("weekday", "hour", "date"):
            arg = node.args[0]
            if isinstance(arg, ir.FieldRef) and arg.root == "tx" and arg.name == "time":
                self.uses.add("_local")
                local = "_local"
            else:
                local = f"{args[0]}.astimezone(_ZONE)"
            return {
                "weekday": f"_WEEKDAYS[{local}.weekday()]",
                "hour": f"{local}.hour",
                "date": f"{local}.date()",
            }[f]
        if f == "days_since":
            fn = "_days_since" if node.args[0].type == DATETIME else "_days_since_date"
            return f"{fn}({args[0]}, now)"
        if f == "count":
            return f"len({args[0]})" if len(args) == 1 else f"{args[0]}.count({args[1]})"
        if f == "sum":
            return f"sum({args[0]})"
        if f == "any":
            if len(args) == 1:
                return f"any({args[0]})"
            return f"(not _isdisjoint({args[0]}, {args[1]}))"
        if f in ("min", "max"):
            return f"{f}({args[0]}, default=0)" if len(args) == 1 else f"{f}({', '.join(args)})"
        if f == "lower":
            return f"{args[0]}.lower()"
        raise TypeError(f"cannot emit call {f}")

    # -- explained conditions (trace mode) ------------------------------------------------------------

    def explain(self, node: ir.Node, depth: int, ok: str, why: str, item_var: str = "item") -> None:
        """Emit statements setting ``ok`` (bool) and ``why`` (text id of the deciding sub-condition)."""
        if isinstance(node, ir.BoolOp):
            stop = "not " if node.op == "and" else ""
            self._explain_chain(list(node.values), node, depth, ok, why, stop, item_var)
            return
        if isinstance(node, ir.Not):
            inner_ok = self.tmp()
            self.explain(node.operand, depth, inner_ok, why, item_var)
            self.line(depth, f"{ok} = not {inner_ok}")
            return
        self.line(depth, f"{ok} = bool({self.expr(node, item_var)})")
        self.line(depth, f"{why} = {self.text_id(node.text)}")

    def _explain_chain(
        self, values: list[ir.Node], whole: ir.Node, depth: int, ok: str, why: str, stop: str, item_var: str
    ) -> None:
        first, rest = values[0], values[1:]
        sub_ok = self.tmp()
        self.explain(first, depth, sub_ok, why, item_var)
        self.line(depth, f"if {stop}{sub_ok}:")
        self.line(depth + 1, f"{ok} = {sub_ok}")
        self.line(depth, "else:")
        if rest:
            self._explain_chain(rest, whole, depth + 1, ok, why, stop, item_var)
        else:
            self.line(depth + 1, f"{ok} = {sub_ok}")
            if stop:  # an 'and' where every part held: the whole condition decided it
                self.line(depth + 1, f"{why} = {self.text_id(whole.text)}")

    # -- the program ----------------------------------------------------------------------------------

    def gate_parts(self, rule: CheckedRule) -> list[tuple[str, str]]:
        """(code, explanation text) for every transaction-level condition of a rule."""
        parts: list[tuple[str, str]] = []
        if rule.valid_from is not None:
            parts.append(
                (f"tx.time >= {self.const(rule.valid_from)}", f"valid from {rule.valid_from.isoformat()}")
            )
        if rule.valid_until is not None:
            parts.append(
                (f"tx.time < {self.const(rule.valid_until)}", f"valid until {rule.valid_until.isoformat()}")
            )
        if rule.partners is not None:
            parts.append(
                (
                    f"outlet.partner in {self.const(rule.partners)}",
                    "partner in " + ", ".join(sorted(rule.partners)),
                )
            )
        if rule.outlets is not None:
            parts.append(
                (f"outlet.id in {self.const(rule.outlets)}", "outlet in " + ", ".join(sorted(rule.outlets)))
            )
        if rule.holdout is not None:
            parts.append((f"{self.const(rule.id)} not in member.holdout", "member not in the control group"))
        return parts

    def emit(self) -> Emitted:
        rules = self.program.rules
        tiers = self.program.document.tiers
        body: list[str] = []
        self.lines = body
        d = 1
        trace = self.trace
        if trace:
            self.line(d, "_T = []")  # (rule index, item index or -1, status, text id)

        # Gates: everything about a rule that does not depend on the item, evaluated once.
        for r in rules:
            j = r.index
            parts = self.gate_parts(r)
            if r.limited:
                self.line(
                    d,
                    f"_l{j} = _remaining(member, {self.const(r.id)}, {r.per_transaction}, "
                    f"{r.per_member}, {r.per_day})",
                )
            if r.budget is not None:
                self.line(d, f"_bl{j} = _budget_left(budgets, {self.const(r.id)}, {r.budget})")
            if not trace:
                codes = [c for c, _ in parts]
                if r.when is not None:
                    codes.append(self.expr(r.when))
                if r.limited and not r.per_item:
                    codes.append(f"_l{j} > 0")
                if r.budget is not None and not r.per_item and r.kind == "points":
                    codes.append(f"_bl{j} > 0")
                self.line(d, f"_g{j} = {' and '.join(codes) if codes else 'True'}")
            else:
                self.line(d, f"_g{j} = True")
                self.line(d, f"_gw{j} = -1")
                for code, text in parts:
                    self.line(d, f"if _g{j} and not ({code}):")
                    self.line(d + 1, f"_g{j} = False; _gw{j} = {self.text_id(text)}")
                if r.when is not None:
                    self.line(d, f"if _g{j}:")
                    self.explain(r.when, d + 1, f"_g{j}", f"_gw{j}")
                if r.limited and not r.per_item:
                    self.line(d, f"if _g{j} and _l{j} <= 0:")
                    self.line(d + 1, f"_g{j} = False; _gw{j} = {self.text_id('limit reached')}")
                if r.budget is not None and not r.per_item and r.kind == "points":
                    self.line(d, f"if _g{j} and _bl{j} <= 0:")
                    self.line(d + 1, f"_g{j} = False; _gw{j} = {self.text_id('budget used up')}")
                self.line(d, f"_T.append(({j}, -1, int(_g{j}), _gw{j}))")
            self.line(d, f"_p{j} = _ZERO" if r.kind in ("base", "multiplier") else f"_p{j} = 0")
            self.line(d, f"_n{j} = 0")
            if r.kind == "stamp":
                self.line(d, f"_s{j} = 0")

        # Transaction-level fixed points and stamps: once per transaction.
        for r in rules:
            if r.per_item or r.kind not in ("points", "stamp"):
                continue
            j = r.index
            self.line(d, f"if _g{j}:")
            if r.kind == "points":
                self.line(d + 1, f"_v = {int(r.amount or 0)}")
                self._budget_clamp(r, d + 1)
                self.line(d + 1, f"_p{j} = _v")
            else:
                assert r.stamp_count is not None
                self.line(d + 1, f"_s{j} = max(0, int({self.expr(r.stamp_count)}))")
            self.line(d + 1, f"_n{j} = 1")

        base_rules = [r for r in rules if r.kind == "base"]
        multipliers = [r for r in rules if r.kind == "multiplier"]
        exclusive = [r for r in multipliers if r.stacking == "exclusive"]
        additive = [r for r in multipliers if r.stacking == "additive"]
        # Only the largest matching 'max' multiplier applies: test them largest first, first match wins.
        maxed = sorted(
            (r for r in multipliers if r.stacking == "max"), key=lambda r: (-(r.amount or 0), r.index)
        )
        item_points = [r for r in rules if r.per_item and r.kind == "points"]
        item_stamps = [r for r in rules if r.per_item and r.kind == "stamp"]

        self.line(d, "_bases = []")
        if item_points:
            self.line(d, "_fixed = []")
        self.line(d, "for _i, item in enumerate(_items):")
        d2 = d + 1
        self.line(d2, "_ac = item.unit_price * item.quantity")
        self.line(d2, "_amt = _ac * _MINOR")
        loop_head = len(body)
        self.line(d2, "_b = _ZERO")
        for r in base_rules:
            self._apply(r, d2, f"_v = _amt * {self.const(r.amount)}", accumulate="_b")
        if multipliers:
            if trace:
                self.line(d2, "if not _b:")
                for r in multipliers:
                    self.line(d2 + 1, f"_T.append(({r.index}, _i, {NO_BASE}, -1))")
                self.line(d2, "else:")
            else:
                self.line(d2, "if _b:")
            d3 = d2 + 1
            self.line(d3, "_x = _ZERO")
            if exclusive:
                self._exclusive_chain(exclusive, additive + maxed, d3)
            else:
                self._stackable(additive, maxed, d3)
            self.line(d3, "_b += _x")
        self.line(d2, "_bases.append(_b)")
        if item_points:
            self.line(d2, "_f = 0")
            for r in item_points:
                self._apply(r, d2, f"_v = {int(r.amount or 0)} * item.quantity", accumulate="_f")
            self.line(d2, "_fixed.append(_f)")
        for r in item_stamps:
            assert r.stamp_count is not None
            self._apply(r, d2, f"_v = max(0, int({self.expr(r.stamp_count)}))", accumulate=None, stamp=True)

        if "_up" in self.uses:
            body.insert(loop_head, "    " * d2 + "_up = item.unit_price * _MINOR")

        # Tier multiplier on what the rules gave (after caps); fixed points are never multiplied.
        if tiers is not None:
            self.uses.add("_tier")
            self.line(d, f"_tm = {self.const(_tier_extras(self.program))}.get(_tier, _ZERO)")
        else:
            self.line(d, "_tm = _ZERO")
        n = len(rules)

        def tup(prefix: str) -> str:
            return "(" + "".join(f"{prefix}{r.index}, " for r in rules) + ")" if n else "()"

        stamp_tuple = "(" + "".join(f"_s{r.index}, " for r in rules if r.kind == "stamp") + ")"
        fixed = "_fixed" if item_points else "None"
        trace_out = "_T" if trace else "None"
        self.line(d, f"return _bases, {fixed}, {tup('_p')}, {tup('_n')}, {stamp_tuple}, _tm, {trace_out}")

        prelude = ["    _items = tx.items"]
        if "_tx_total" in self.uses:
            prelude.append("    _tx_total = sum([_it.unit_price * _it.quantity for _it in _items]) * _MINOR")
        if "_tier" in self.uses:
            prelude.append(f"    _tier = member.tier or {self.const(_default_tier(self.program))}")
        if "_days_since_last_visit" in self.uses:
            prelude.append("    _days_since_last_visit = _days_since(member.last_visit_at, now)")
        if "_days_since_enrolled" in self.uses:
            prelude.append("    _days_since_enrolled = _days_since(member.enrolled_at, now)")
        if "_local" in self.uses:
            prelude.append("    _local = tx.time.astimezone(_ZONE)")
        defaults = "".join(f", {name}={name}" for name in self.consts)
        header = f"def _evaluate(tx, member, outlet, event, now, budgets{defaults}):"
        source = "\n".join([header, *prelude, *body]) + "\n"
        return Emitted(source, dict(self.consts), self.texts)

    def _apply(self, r: CheckedRule, d: int, value: str, accumulate: str | None, stamp: bool = False) -> None:
        """Emit: if the rule's gate and item condition hold (and its limit allows), add its value."""
        j = r.index
        conds = (
            []
            if (r.when is None and not self.gate_parts(r) and not (r.limited and not r.per_item))
            else [f"_g{j}"]
        )
        if not r.per_item and not conds:
            conds = [f"_g{j}"]
        limit = self._cap(r)
        if not self.trace:
            if r.where is not None:
                conds.append(self.expr(r.where))
            if limit:
                conds.append(limit)
            self.line(d, f"if {' and '.join(conds) if conds else 'True'}:")
            self._effect(r, d + 1, value, accumulate, stamp)
            return
        self._traced(r, d, limit, lambda dd: self._effect(r, dd, value, accumulate, stamp))

    def _traced(self, r: CheckedRule, d: int, limit: str | None, apply: Any) -> None:
        j = r.index
        self.line(d, f"if not _g{j}:")
        self.line(d + 1, f"_T.append(({j}, _i, {NOT_MATCHED}, _gw{j}))")
        self.line(d, "else:")
        if r.where is not None:
            self.explain(r.where, d + 1, "_o", "_w")
        else:
            self.line(d + 1, "_o = True")
            self.line(d + 1, f"_w = _gw{j}")
        self.line(d + 1, "if not _o:")
        self.line(d + 2, f"_T.append(({j}, _i, {NOT_MATCHED}, _w))")
        if limit:
            self.line(d + 1, f"elif not ({limit}):")
            self.line(d + 2, f"_T.append(({j}, _i, {LIMIT_REACHED}, _w))")
        self.line(d + 1, "else:")
        self.line(d + 2, f"_T.append(({j}, _i, {APPLIED}, _w))")
        apply(d + 2)

    def _effect(self, r: CheckedRule, d: int, value: str, accumulate: str | None, stamp: bool) -> None:
        j = r.index
        self.line(d, value)
        if stamp:
            self.line(d, f"_s{j} += _v")
        else:
            self._budget_clamp(r, d)
            self.line(d, f"_p{j} += _v")
            if accumulate:
                self.line(d, f"{accumulate} += _v")
        # An item rule applies once per item; a transaction rule once, however many items it touched.
        self.line(d, f"_n{j} += 1" if r.per_item else f"_n{j} = 1")

    def _budget_clamp(self, r: CheckedRule, d: int) -> None:
        if r.budget is None:
            return
        j = r.index
        self.line(d, f"if _v > _bl{j}:")
        self.line(d + 1, f"_v = _bl{j}")
        # A multiplier below 1 gives a negative part: that takes points away, it never refills the budget.
        self.line(d, "if _v > 0:")
        self.line(d + 1, f"_bl{j} -= _v")

    def _cap(self, r: CheckedRule) -> str | None:
        """What must still hold for a rule to apply to one more item: its per-item limit, its budget."""
        j = r.index
        caps = []
        if r.limited and r.per_item:
            caps.append(f"_n{j} < _l{j}")
        if r.budget is not None and (r.per_item or r.kind in ("base", "multiplier")):
            # A rule whose budget is used up no longer applies (an exclusive one no longer overrides).
            caps.append(f"_bl{j} > 0")
        return " and ".join(caps) or None

    def _multiplier_cond(self, r: CheckedRule) -> tuple[list[str], str | None]:
        j = r.index
        conds = [f"_g{j}"]
        if r.where is not None:
            conds.append(self.expr(r.where))
        limit = self._cap(r)
        if limit:
            conds.append(limit)
        return conds, limit

    def _multiplier_effect(self, r: CheckedRule, d: int, assign: str) -> None:
        j = r.index
        assert r.amount is not None  # multiplier 0 is a real factor: never ``r.amount or 1``
        self.line(d, f"_v = _b * {self.const(r.amount - 1)}")
        self._budget_clamp(r, d)
        self.line(d, f"_p{j} += _v")
        self.line(d, f"_x {assign} _v")
        self.line(d, f"_n{j} += 1" if r.per_item else f"_n{j} = 1")

    def _apply_and_mark(self, r: CheckedRule, assign: str, marker: str) -> Callable[[int], None]:
        """Traced code: apply the multiplier, then note which rule won (for the explanation)."""

        def apply(depth: int) -> None:
            self._multiplier_effect(r, depth, assign)
            self.line(depth, f"{marker} = {r.index}")

        return apply

    def _exclusive_chain(self, exclusive: list[CheckedRule], others: list[CheckedRule], d: int) -> None:
        """The first matching exclusive rule (document order) replaces every other multiplier."""
        if not self.trace:
            for k, r in enumerate(exclusive):
                conds, _ = self._multiplier_cond(r)
                self.line(d, f"{'if' if k == 0 else 'elif'} {' and '.join(conds)}:")
                self._multiplier_effect(r, d + 1, "=")
            self.line(d, "else:")
            stack = [r for r in others if r.stacking == "additive"]
            maxed = [r for r in others if r.stacking == "max"]
            if stack or maxed:
                self._stackable(stack, maxed, d + 1)
            else:
                self.line(d + 1, "pass")
            return
        self.line(d, "_ex = -1")
        for r in exclusive:
            j = r.index
            self.line(d, "if _ex < 0:")
            limit = self._cap(r)
            self._traced(r, d + 1, limit, self._apply_and_mark(r, "=", "_ex"))
            self.line(d, "else:")
            self.line(d + 1, f"_T.append(({j}, _i, {OVERRIDDEN}, -1))")
        self.line(d, "if _ex >= 0:")
        for r in others:
            self.line(d + 1, f"_T.append(({r.index}, _i, {OVERRIDDEN}, -1))")
        self.line(d + 1, "pass")
        self.line(d, "else:")
        stack = [r for r in others if r.stacking == "additive"]
        maxed = [r for r in others if r.stacking == "max"]
        self._stackable(stack, maxed, d + 1)
        self.line(d + 1, "pass")

    def _stackable(self, additive: list[CheckedRule], maxed: list[CheckedRule], d: int) -> None:
        for r in additive:
            if not self.trace:
                conds, _ = self._multiplier_cond(r)
                self.line(d, f"if {' and '.join(conds)}:")
                self._multiplier_effect(r, d + 1, "+=")
            else:
                limit = self._cap(r)
                self._traced(r, d, limit, lambda dd, r=r: self._multiplier_effect(r, dd, "+="))
        if not maxed:
            return
        if not self.trace:
            for k, r in enumerate(maxed):
                conds, _ = self._multiplier_cond(r)
                self.line(d, f"{'if' if k == 0 else 'elif'} {' and '.join(conds)}:")
                self._multiplier_effect(r, d + 1, "+=")
            return
        self.line(d, "_mx = -1")
        for r in maxed:
            j = r.index
            self.line(d, "if _mx < 0:")
            limit = self._cap(r)
            self._traced(r, d + 1, limit, self._apply_and_mark(r, "+=", "_mx"))
            self.line(d, "else:")
            self.line(d + 1, f"_T.append(({j}, _i, {OUTRANKED}, -1))")


def _tier_extras(program: CheckedProgram) -> dict[str, Decimal]:
    tiers = program.document.tiers
    assert tiers is not None
    return {level.name: level.earn_multiplier - 1 for level in tiers.levels}


def _default_tier(program: CheckedProgram) -> str:
    tiers = program.document.tiers
    return tiers.levels[0].name if tiers is not None else ""


def emit_program(program: CheckedProgram, *, trace: bool = False) -> Emitted:
    """Generate the evaluation function's source for ``program``."""
    return _Emitter(program, trace).emit()
