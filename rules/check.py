"""Stage 2 of a condition: the allowed ``ast`` -> a typed tree (IR) checked against the schema.

Every IR node knows its result type once built; evaluation never checks a type. Problems are collected,
not raised: one pass over a document reports all of them. A subexpression that already failed gets the
``ERROR`` type, which silences follow-on errors about the same mistake.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from rules import schema
from rules.errors import Issue
from rules.hints import did_you_mean
from rules.parse import BIN_OPS, BOOL_OPS, CMP_OPS, UNARY_OPS, Located
from rules.schema import BOOL, DATE, DATETIME, ERROR, ITEM, NUMBER, STRING, Type, list_of

# ---------------------------------------------------------------------------------------------------
# The typed tree


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    type: Type
    #: The node's own source text, for explanations ("item.category == 'organic'").
    text: str


@dataclass(frozen=True, slots=True, eq=False)
class Const(Node):
    value: object


@dataclass(frozen=True, slots=True, eq=False)
class FieldRef(Node):
    root: str
    name: str


@dataclass(frozen=True, slots=True, eq=False)
class Project(Node):
    """``tx.items.category``: a field read from every item, giving a list."""

    source: Node
    name: str


@dataclass(frozen=True, slots=True, eq=False)
class ListLit(Node):
    elements: tuple[Node, ...]


@dataclass(frozen=True, slots=True, eq=False)
class BoolOp(Node):
    op: str
    values: tuple[Node, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Not(Node):
    operand: Node


@dataclass(frozen=True, slots=True, eq=False)
class Neg(Node):
    operand: Node


@dataclass(frozen=True, slots=True, eq=False)
class Arith(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True, eq=False)
class Compare(Node):
    left: Node
    ops: tuple[str, ...]
    comparators: tuple[Node, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Call(Node):
    func: str
    args: tuple[Node, ...]


_ORDERED = (NUMBER, STRING, DATETIME, DATE)


class Checker:
    """Turns one condition's ``ast`` into IR; ``item_scope`` allows ``item.*`` (for_each: item rules)."""

    def __init__(
        self,
        loc: Located,
        *,
        item_scope: bool,
        tiers: tuple[str, ...] = (),
        segment_scope: bool = False,
        segments: tuple[str, ...] = (),
    ) -> None:
        self.loc = loc
        self.segments = segments
        self.item_scope = item_scope
        self.segment_scope = segment_scope
        self.tiers = tiers
        self.issues: list[Issue] = []

    def error(self, message: str, node: ast.AST, hint: str | None = None) -> None:
        self.issues.append(self.loc.issue(message, node, hint))

    def text(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.loc.flat, node) or ""

    def check(self, node: ast.expr) -> Node:
        handler = _HANDLERS.get(type(node))
        if handler is None:  # the parser's allowlist makes this unreachable; stay safe anyway
            self.error(f"{type(node).__name__} is not allowed in a condition", node)
            return Const(ERROR, self.text(node), None)
        return handler(self, node)

    # -- leaves -------------------------------------------------------------------------------------

    def constant(self, node: ast.Constant) -> Node:
        value = node.value
        text = self.text(node)
        if isinstance(value, bool):
            return Const(BOOL, text, value)
        if isinstance(value, int | float):
            try:
                # From the source text, so 0.1 is exactly one tenth, never a float.
                number = Decimal(text.replace("_", "")) if text else Decimal(value)
            except InvalidOperation:
                number = Decimal(str(value))
            return Const(NUMBER, text, number)
        return Const(STRING, text, value)

    def name(self, node: ast.Name) -> Node:
        roots = list(schema.FIELDS)
        if node.id in schema.FIELDS:
            self.error(
                f"{node.id} is a record; read one of its fields",
                node,
                f"for example {node.id}.{next(iter(schema.FIELDS[node.id]))}",
            )
        elif node.id in schema.FUNCTIONS:
            self.error(f"{node.id} is a function; call it", node, schema.FUNCTIONS[node.id].doc)
        elif node.id in ("true", "false"):
            self.error(f"unknown name {node.id}", node, f"did you mean {node.id.capitalize()}?")
        else:
            hint = did_you_mean(node.id, roots + list(schema.FIELDS["item"]) + list(schema.FUNCTIONS))
            self.error(f"unknown name {node.id}", node, hint or f"conditions read {', '.join(roots)}")
        return Const(ERROR, self.text(node), None)

    def attribute(self, node: ast.Attribute) -> Node:
        text = self.text(node)
        if isinstance(node.value, ast.Name) and node.value.id in schema.FIELDS:
            root = node.value.id
            fields = schema.FIELDS[root]
            if root in schema.ITEM_ONLY_ROOTS and not self.item_scope:
                self.error(
                    f"{root}.{node.attr} is only available in rules with for_each: item",
                    node,
                    "add for_each: item, or read tx.items",
                )
                return Const(ERROR, text, None)
            if root in schema.SEGMENT_ONLY_ROOTS and not self.segment_scope:
                self.error(
                    f"{root}.{node.attr} is read by segment conditions only",
                    node,
                    "define a segment with it under segments, then read member.segment here",
                )
                return Const(ERROR, text, None)
            if self.segment_scope and root not in schema.SEGMENT_ROOTS:
                self.error(
                    f"a segment condition reads member and customer only, not {root}",
                    node,
                    "a segment run has no transaction, outlet or event",
                )
                return Const(ERROR, text, None)
            if node.attr not in fields:
                hint = did_you_mean(node.attr, list(fields), f"{root}.")
                self.error(
                    f"unknown field {root}.{node.attr}", node, hint or f"{root} has {', '.join(fields)}"
                )
                return Const(ERROR, text, None)
            return FieldRef(fields[node.attr].type, text, root, node.attr)
        base = self.check(node.value)
        if base.type is ERROR:
            return base
        if base.type == list_of(ITEM):
            fields = schema.FIELDS["item"]
            if node.attr not in fields:
                hint = did_you_mean(node.attr, list(fields), "tx.items.")
                self.error(f"unknown item field {node.attr}", node, hint)
                return Const(ERROR, text, None)
            element = fields[node.attr].type
            if element.is_list:
                self.error(
                    f"tx.items.{node.attr} would be a list of lists",
                    node,
                    "read it per item in a for_each: item rule",
                )
                return Const(ERROR, text, None)
            return Project(list_of(element), text, base, node.attr)
        self.error(f"{base.type} has no field {node.attr}", node)
        return Const(ERROR, text, None)

    def list_(self, node: ast.List | ast.Tuple) -> Node:
        elements = tuple(self.check(e) for e in node.elts)
        text = self.text(node)
        if any(e.type is ERROR for e in elements):
            return Const(ERROR, text, None)
        if not elements:
            self.error("empty list literal", node, "a list needs at least one element")
            return Const(ERROR, text, None)
        first = elements[0].type
        if first.is_list:
            self.error("lists of lists are not supported", node)
            return Const(ERROR, text, None)
        for element, src in zip(elements, node.elts, strict=True):
            if element.type != first:
                self.error(f"list mixes {first} and {element.type}", src)
                return Const(ERROR, text, None)
        return ListLit(list_of(first), text, elements)

    # -- operators ----------------------------------------------------------------------------------

    def boolop(self, node: ast.BoolOp) -> Node:
        op = BOOL_OPS[type(node.op)]
        values = tuple(self.check(v) for v in node.values)
        for value, src in zip(values, node.values, strict=True):
            if value.type not in (BOOL, ERROR):
                self.error(
                    f"'{op}' needs true/false on both sides, got {value.type}",
                    src,
                    "compare it with something, e.g. x > 0",
                )
        if any(v.type is not BOOL for v in values):
            return Const(ERROR, self.text(node), None)
        return BoolOp(BOOL, self.text(node), op, values)

    def unaryop(self, node: ast.UnaryOp) -> Node:
        op = UNARY_OPS[type(node.op)]
        operand = self.check(node.operand)
        text = self.text(node)
        if operand.type is ERROR:
            return operand
        if op == "not":
            if operand.type != BOOL:
                self.error(f"'not' needs true/false, got {operand.type}", node)
                return Const(ERROR, text, None)
            return Not(BOOL, text, operand)
        if operand.type != NUMBER:
            self.error(f"unary '{op}' needs a number, got {operand.type}", node)
            return Const(ERROR, text, None)
        if isinstance(operand, Const):
            value = operand.value
            assert isinstance(value, Decimal)
            # copy_negate is exact; unary minus would round to the caller's decimal context.
            return Const(NUMBER, text, value.copy_negate() if op == "-" else value)
        return Neg(NUMBER, text, operand) if op == "-" else operand

    def binop(self, node: ast.BinOp) -> Node:
        op = BIN_OPS[type(node.op)]
        left, right = self.check(node.left), self.check(node.right)
        text = self.text(node)
        if ERROR in (left.type, right.type):
            return Const(ERROR, text, None)
        if op == "+" and left.type == right.type == STRING:
            return Arith(STRING, text, op, left, right)
        if left.type != NUMBER or right.type != NUMBER:
            self.error(f"'{op}' needs numbers, got {left.type} and {right.type}", node)
            return Const(ERROR, text, None)
        if op in ("/", "%"):
            # A constant divisor means no division by zero can ever happen while evaluating.
            if not isinstance(right, Const):
                self.error(
                    f"'{op}' needs a constant number on its right",
                    node.right,
                    "multiply instead, e.g. a > b * 2 rather than a / b > 2",
                )
                return Const(ERROR, text, None)
            if right.value == 0:
                self.error("division by zero", node.right)
                return Const(ERROR, text, None)
        return Arith(NUMBER, text, op, left, right)

    def compare(self, node: ast.Compare) -> Node:
        left = self.check(node.left)
        comparators = tuple(self.check(c) for c in node.comparators)
        ops = tuple(CMP_OPS[type(o)] for o in node.ops)
        text = self.text(node)
        if left.type is ERROR or any(c.type is ERROR for c in comparators):
            return Const(ERROR, text, None)
        ok = True
        lhs, lhs_node = left, node.left
        for op, rhs, rhs_node in zip(ops, comparators, node.comparators, strict=True):
            ok &= self._pair(op, lhs, rhs, node, lhs_node, rhs_node)
            lhs, lhs_node = rhs, rhs_node
        if not ok:
            return Const(ERROR, text, None)
        return Compare(BOOL, text, left, ops, comparators)

    def _pair(self, op: str, a: Node, b: Node, node: ast.AST, a_src: ast.AST, b_src: ast.AST) -> bool:
        if op in ("in", "not in"):
            if b.type == STRING and a.type == STRING:
                return True
            if not b.type.is_list:
                self.error(
                    f"'{op}' needs a list (or a string) on its right, got {b.type}",
                    b_src,
                    'for example item.category in ["bakery", "coffee"]',
                )
                return False
            if b.type.element != a.type:
                self.error(f"'{op}' looks for {a.type} in a {b.type}", node)
                return False
            self._known_literal(a, b)
            return True
        if a.type.is_list or b.type.is_list:
            self.error(f"'{op}' cannot compare lists", node, "use 'in', any() or count()")
            return False
        if a.type != b.type:
            self.error(
                f"cannot compare {a.type} with {b.type} using '{op}'", node, _compare_hint(a.type, b.type)
            )
            return False
        if op not in ("==", "!=") and a.type not in _ORDERED:
            self.error(f"'{op}' does not order {a.type} values", node, "use == or !=")
            return False
        self._known_literal(a, b)
        return True

    def _known_literal(self, a: Node, b: Node) -> None:
        """``member.tier == "platnum"`` or ``member.segment == "at_rsk"`` is almost surely a typo:
        check tier and segment names against the document."""
        field, other = (a, b) if isinstance(a, FieldRef) else (b, a)
        if not (isinstance(field, FieldRef) and field.root == "member" and field.name in ("tier", "segment")):
            return
        known, what = (self.tiers, "tier") if field.name == "tier" else (("", *self.segments), "segment")
        if not known:
            return
        literals = other.elements if isinstance(other, ListLit) else (other,)
        for lit in literals:
            if isinstance(lit, Const) and isinstance(lit.value, str) and lit.value not in known:
                self.issues.append(
                    self.loc.issue(
                        f"unknown {what} {lit.value!r}",
                        None,
                        did_you_mean(lit.value, known) or f"{what}s are {', '.join(k for k in known if k)}",
                        col=self.loc.flat.find(lit.text),
                    )
                )

    # -- calls --------------------------------------------------------------------------------------

    def call(self, node: ast.Call) -> Node:
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        text = self.text(node)
        if name not in schema.FUNCTIONS:
            self.error(
                f"unknown function {name}",
                node.func,
                did_you_mean(name, list(schema.FUNCTIONS)) or f"functions: {', '.join(schema.FUNCTIONS)}",
            )
            return Const(ERROR, text, None)
        # ``date("2026-12-24")`` is a date constant, checked now rather than at every evaluation.
        if (
            name == "date"
            and len(node.args) == 1
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            try:
                return Const(DATE, text, date.fromisoformat(node.args[0].value))
            except ValueError:
                self.error(f"not a date: {node.args[0].value!r}", node.args[0], "write it as YYYY-MM-DD")
                return Const(ERROR, text, None)
        args = tuple(self.check(a) for a in node.args)
        if any(a.type is ERROR for a in args):
            return Const(ERROR, text, None)
        result = _signature(name, [a.type for a in args])
        if isinstance(result, str):
            self.error(f"{name}(): {result}", node, schema.FUNCTIONS[name].doc)
            return Const(ERROR, text, None)
        return Call(result, text, name, args)


def _compare_hint(a: Type, b: Type) -> str | None:
    if {a, b} == {NUMBER, STRING}:
        return "quote numbers that are codes, or drop the quotes around a number"
    if {a, b} == {DATETIME, DATE}:
        return "compare date(tx.time) with a date"
    return None


def _signature(name: str, args: list[Type]) -> Type | str:
    """The result type of ``name(*args)``, or a message saying what is wrong."""
    n = len(args)

    def want(count: str, ok: bool) -> str | None:
        return None if ok else f"takes {count} argument{'s' if count != '1' else ''}, got {n}"

    if name in ("weekday", "hour"):
        if (msg := want("1", n == 1)) is not None:
            return msg
        if args[0] != DATETIME:
            return f"needs a datetime, got {args[0]}"
        return STRING if name == "weekday" else NUMBER
    if name == "date":
        if (msg := want("1", n == 1)) is not None:
            return msg
        return DATE if args[0] == DATETIME else f"needs a datetime or a 'YYYY-MM-DD' string, got {args[0]}"
    if name == "days_since":
        if (msg := want("1", n == 1)) is not None:
            return msg
        return NUMBER if args[0] in (DATETIME, DATE) else f"needs a datetime or date, got {args[0]}"
    if name == "lower":
        if (msg := want("1", n == 1)) is not None:
            return msg
        return STRING if args[0] == STRING else f"needs a string, got {args[0]}"
    if name == "count":
        if (msg := want("1 or 2", n in (1, 2))) is not None:
            return msg
        if not args[0].is_list:
            return f"needs a list, got {args[0]}"
        if n == 2 and args[1] != args[0].element:
            return f"counts {args[0].element} values, got {args[1]}"
        return NUMBER
    if name == "sum":
        if (msg := want("1", n == 1)) is not None:
            return msg
        return NUMBER if args[0] == list_of(NUMBER) else f"needs a list of numbers, got {args[0]}"
    if name == "any":
        if (msg := want("1 or 2", n in (1, 2))) is not None:
            return msg
        if n == 1:
            return BOOL if args[0] == list_of(BOOL) else f"needs a list of booleans, got {args[0]}"
        if not (args[0].is_list and args[1].is_list and args[0].element == args[1].element):
            return f"needs two lists of the same kind, got {args[0]} and {args[1]}"
        return BOOL
    if name in ("min", "max"):
        if n == 0:
            return "takes a list or at least two numbers"
        if n == 1:
            return NUMBER if args[0] == list_of(NUMBER) else f"needs a list of numbers, got {args[0]}"
        bad = [a for a in args if a != NUMBER]
        return NUMBER if not bad else f"needs numbers, got {bad[0]}"
    return f"unknown function {name}"


_HANDLERS: dict[type[ast.AST], Callable[[Checker, Any], Node]] = {
    ast.Constant: Checker.constant,
    ast.Name: Checker.name,
    ast.Attribute: Checker.attribute,
    ast.List: Checker.list_,
    ast.Tuple: Checker.list_,
    ast.BoolOp: Checker.boolop,
    ast.UnaryOp: Checker.unaryop,
    ast.BinOp: Checker.binop,
    ast.Compare: Checker.compare,
    ast.Call: Checker.call,
}


def check_expression(
    tree: ast.expr,
    loc: Located,
    *,
    item_scope: bool,
    want: Type | None,
    tiers: tuple[str, ...] = (),
    segment_scope: bool = False,
    segments: tuple[str, ...] = (),
) -> tuple[Node, list[Issue]]:
    """Type-check one parsed condition; ``want`` is the required result type (BOOL for conditions)."""
    checker = Checker(loc, item_scope=item_scope, tiers=tiers, segment_scope=segment_scope, segments=segments)
    node = checker.check(tree)
    if want is not None and node.type is not ERROR and node.type != want:
        checker.error(
            f"this must give {want}, but gives {node.type}",
            tree,
            "compare it, e.g. item.quantity > 1" if want == BOOL else None,
        )
        node = Const(ERROR, node.text, None)
    return node, checker.issues
