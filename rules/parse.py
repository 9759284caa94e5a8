"""Stage 1 of a condition: text -> Python ``ast`` restricted to an allowlist, within fixed bounds.

Only node classes in ``ALLOWED`` pass; anything else is an error that names the construct. The text is
parsed by ``ast.parse`` in eval mode and never executed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from rules.document import Position
from rules.errors import Issue

#: Characters in one condition; real conditions are one line, and it bounds parser work.
MAX_EXPRESSION_LENGTH = 1_000
#: Nesting depth of a condition's tree (parentheses, calls, operators).
MAX_DEPTH = 32
#: Largest absolute numeric literal: money and points never come close, and it keeps arithmetic cheap.
MAX_NUMBER = 10**15
#: Longest string literal.
MAX_STRING = 1_000
#: Most elements in a list literal.
MAX_LIST = 1_000

_BOOL_OPS = {ast.And: "and", ast.Or: "or"}
_BIN_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}
_UNARY_OPS = {ast.Not: "not", ast.USub: "-", ast.UAdd: "+"}
_CMP_OPS = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}

#: Node classes a condition may contain. Everything else is refused with a message naming it.
ALLOWED: frozenset[type[ast.AST]] = frozenset(
    {
        ast.Expression,
        ast.BoolOp,
        ast.BinOp,
        ast.UnaryOp,
        ast.Compare,
        ast.Call,
        ast.Constant,
        ast.Name,
        ast.Attribute,
        ast.List,
        ast.Tuple,
        ast.Load,
        *_BOOL_OPS,
        *_BIN_OPS,
        *_UNARY_OPS,
        *_CMP_OPS,
    }
)

#: Friendly names for refused constructs.
_REFUSED = {
    ast.Lambda: "lambda",
    ast.ListComp: "list comprehension",
    ast.SetComp: "set comprehension",
    ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression",
    ast.Subscript: "subscript ([...])",
    ast.Slice: "slice",
    ast.NamedExpr: "assignment expression (:=)",
    ast.Starred: "starred expression (*x)",
    ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string",
    ast.IfExp: "conditional expression (x if c else y)",
    ast.Dict: "dict literal",
    ast.Set: "set literal",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Pow: "power operator (**)",
    ast.FloorDiv: "floor division (//)",
    ast.LShift: "shift operator",
    ast.RShift: "shift operator",
    ast.BitAnd: "bitwise operator (&)",
    ast.BitOr: "bitwise operator (|)",
    ast.BitXor: "bitwise operator (^)",
    ast.Invert: "bitwise operator (~)",
    ast.MatMult: "matrix operator (@)",
    ast.Is: "identity test (is)",
    ast.IsNot: "identity test (is not)",
    ast.keyword: "keyword argument",
}

_HINTS = {
    ast.Subscript: "use functions such as count(), sum() or any() on lists",
    ast.Is: "compare with == instead",
    ast.IsNot: "compare with != instead",
    ast.IfExp: "split the rule into two rules",
    ast.ListComp: "use any(list, [values]) or count(list, value)",
    ast.GeneratorExp: "use any(list, [values]) or count(list, value)",
    ast.Pow: "write the multiplication out",
}


@dataclass(frozen=True, slots=True)
class Located:
    """Maps positions inside a condition's text to positions in the document.

    A condition may span lines in the document (a folded or literal block, a long plain scalar), and
    YAML may have changed its text on the way (folded line breaks, stripped blanks, quote escapes). The
    parser works on ``flat``, the text with line breaks turned into spaces, so one character index
    names a position; :meth:`issue` finds that character in the document by walking both texts.
    """

    text: str
    path: str
    origin: Position | None
    #: The whole document text, when there is one (YAML or JSON); positions are found in it.
    document: str = ""

    @property
    def flat(self) -> str:
        """The text as one line: same length, line breaks as spaces (a condition is one expression)."""
        return self.text.replace("\r", " ").replace("\n", " ")

    def issue(
        self,
        message: str,
        node: ast.AST | None = None,
        hint: str | None = None,
        *,
        line: int | None = None,
        col: int | None = None,
    ) -> Issue:
        """Build an Issue at ``node`` (or at 0-based character ``col`` of the flat text)."""
        if node is not None and hasattr(node, "col_offset"):
            col = byte_to_char(self.flat, 1, node.col_offset)
        col = max(0, min(col or 0, max(len(self.text) - 1, 0)))
        found = self._in_document(col)
        if found is not None:
            doc_line, doc_col, source_line = found
        elif self.origin is None:
            doc_line, doc_col, source_line = 1, col + 1, self.flat
        else:
            doc_line, doc_col, source_line = self.origin.line, self.origin.column, self.flat
        return Issue(
            message=message, path=self.path, line=doc_line, column=doc_col, hint=hint, source_line=source_line
        )

    def _in_document(self, index: int) -> tuple[int, int, str] | None:
        """(line, column, that line) in the document of character ``index`` of the text, if found."""
        origin, doc = self.origin, self.document
        if origin is None or not doc:
            return None
        lines = doc.splitlines(keepends=True)
        if not 0 < origin.line <= len(lines):
            return None
        start = sum(len(x) for x in lines[: origin.line - 1])
        if origin.block:  # the text starts on the line after the | or > indicator
            start += len(lines[origin.line - 1])
        else:
            start += origin.column - 1 + origin.quote
        opening = doc[start - 1] if origin.quote and start > 0 else ""
        at = _align(doc, start, self.text, index, single_quoted=opening == "'", double_quoted=opening == '"')
        if at is None:
            return None
        line_start = doc.rfind("\n", 0, at) + 1
        line_no = doc.count("\n", 0, at) + 1
        return line_no, at - line_start + 1, lines[line_no - 1].rstrip("\r\n")


def _align(
    doc: str, start: int, text: str, target: int, *, single_quoted: bool, double_quoted: bool
) -> int | None:
    """The offset in ``doc`` of ``text[target]``, walking from ``start`` and skipping what YAML folds.

    Blanks and line breaks may differ (folding, stripping); every other character must match, allowing
    for the quote escapes of YAML (``''`` in single quotes, a backslash in double quotes).
    """
    d = start
    for t in range(target + 1):
        c = text[t]
        if c.isspace():
            continue
        while d < len(doc) and doc[d].isspace():
            d += 1
        if d < len(doc) and double_quoted and doc[d] == "\\" and c != "\\":
            d += 1
        if d >= len(doc) or doc[d] != c:
            return None
        if t == target:
            return d
        d += 2 if single_quoted and c == "'" and doc[d : d + 2] == "''" else 1
    return None


def byte_to_char(text: str, lineno: int, byte_offset: int) -> int:
    """``ast`` columns count UTF-8 bytes; editors count characters."""
    lines = text.splitlines() or [""]
    if not 0 < lineno <= len(lines):
        return byte_offset
    return len(lines[lineno - 1].encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))


def parse_expression(loc: Located) -> tuple[ast.expr | None, list[Issue]]:
    """Parse ``loc.text``; return the expression tree (or None) and every problem found.

    Positions in the tree count UTF-8 bytes of ``loc.flat`` on line 1: a condition written over several
    lines is parsed as one line, as if it were in parentheses.
    """
    text = loc.flat
    if len(text) > MAX_EXPRESSION_LENGTH:
        return None, [
            loc.issue(
                f"condition is longer than {MAX_EXPRESSION_LENGTH} characters",
                hint="split it into several rules",
            )
        ]
    if not text.strip():
        return None, [loc.issue("condition is empty")]
    shift = len(text) - len(text.lstrip())
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        # SyntaxError.offset counts characters (1-based) of the parsed line.
        col = max((exc.offset or 1) - 1, 0) + shift if (exc.lineno or 1) == 1 else len(text.rstrip())
        return None, [loc.issue(f"syntax error: {exc.msg}", col=col)]
    except (RecursionError, MemoryError, ValueError) as exc:
        return None, [loc.issue(f"condition cannot be parsed: {type(exc).__name__}")]
    if shift:
        # Positions were computed on the stripped text, in bytes; shift them back.
        shift_bytes = len(text[:shift].encode("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.expr):
                node.col_offset += shift_bytes
                if node.end_col_offset is not None:
                    node.end_col_offset += shift_bytes
    issues: list[Issue] = []
    _validate(tree.body, loc, issues, depth=1)
    return (tree.body if not issues else None), issues


def _validate(node: ast.AST, loc: Located, issues: list[Issue], depth: int) -> None:
    if depth > MAX_DEPTH:
        issues.append(loc.issue(f"condition is nested more than {MAX_DEPTH} levels deep", node))
        return
    kind = type(node)
    if kind not in ALLOWED:
        what = _REFUSED.get(kind, kind.__name__)
        issues.append(
            loc.issue(f"{what} is not allowed in a condition", _positioned(node, loc), _HINTS.get(kind))
        )
        return
    if isinstance(node, ast.Constant):
        _check_constant(node, loc, issues)
    elif isinstance(node, ast.Name | ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        if name.startswith("_"):
            issues.append(loc.issue(f"names starting with an underscore are not allowed: {name}", node))
            return
    elif isinstance(node, ast.Call):
        if node.keywords:
            issues.append(loc.issue("keyword arguments are not allowed", node, "pass arguments by position"))
            return
        if not isinstance(node.func, ast.Name):
            # Go on into the callee: a lambda or a dunder in it deserves its own message.
            issues.append(
                loc.issue(
                    "only the built-in functions can be called",
                    node,
                    "for example weekday(tx.time) or lower(item.category)",
                )
            )
    elif isinstance(node, ast.List | ast.Tuple) and len(node.elts) > MAX_LIST:
        issues.append(loc.issue(f"list literal has more than {MAX_LIST} elements", node))
        return
    for child in ast.iter_child_nodes(node):
        _validate(child, loc, issues, depth + 1)


def _positioned(node: ast.AST, loc: Located) -> ast.AST | None:
    return node if hasattr(node, "lineno") else None


def _check_constant(node: ast.Constant, loc: Located, issues: list[Issue]) -> None:
    value = node.value
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            issues.append(loc.issue("number literal is not finite", node))
        elif abs(value) > MAX_NUMBER:
            issues.append(loc.issue(f"number literal is larger than {MAX_NUMBER:.0e}", node))
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            issues.append(loc.issue(f"string literal is longer than {MAX_STRING} characters", node))
        return
    what = "None" if value is None else type(value).__name__
    issues.append(loc.issue(f"{what} literals are not allowed", node))


BOOL_OPS = _BOOL_OPS
BIN_OPS = _BIN_OPS
UNARY_OPS = _UNARY_OPS
CMP_OPS = _CMP_OPS
