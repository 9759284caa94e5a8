"""Shard readiness: every statement the suite runs on a member-owned table carries the tenant, and on the
hot paths the member too, so the schema can be distributed (Citus, by member; see docs/scaling.md)
without rewriting a query.

How it works:

* **Recording.** A listener on SQLAlchemy's :class:`~sqlalchemy.engine.Engine` class sees every
  statement of every engine (an ``AsyncEngine`` runs its ``sync_engine``); the ledger's hot path goes
  below the ORM, so the plugin also wraps ``asyncpg.Connection``'s query methods and sets a
  ``sqlite3`` trace callback on the connections of :class:`~loyalty.storage.db.SqliteWriter`. Nothing
  of the product changes: the hooks are installed from here, for the test session only.
* **Where a statement comes from** is read off the Python stack when it runs (through SQLAlchemy's
  greenlets and the SQLite writer's thread, where the ledger operation's coroutine is still on the
  stack): its *origin* is the innermost frame of ``loyalty``/``api``/``cli`` outside the storage
  plumbing; it is *hot* when a frame of a till flow (:data:`HOT_FLOWS`) is on the stack. Statements
  with no product frame are the tests' own (fixtures, assertions) and migrations' are DDL: not checked.
* **The check** (:func:`offences`) parses each distinct statement with sqlglot. A reference to a
  member-owned table is carried by the tenant when a conjunct of a ``WHERE``/``JOIN ... ON`` of the
  statement binds its ``tenant_id`` to a value (a parameter, a literal, ``= ANY($n)``, ``IN (...)``
  of values, or a column of ``unnest``/``json_each`` of parameters), or equates it with another
  column that is so carried: an equality chain through the statement (``t.tenant_id = m.tenant_id``
  where ``m.tenant_id = $1``) counts, as a router planner would follow it. Conjuncts under ``OR``/``NOT``
  do not count. An ``INSERT`` carries what its column list names. On hot statements the member
  column (``member_id``; ``id`` for ``members``) must be carried the same way; the card lookup
  (``cards``, the card-number table, a reference table in the plan) needs the tenant only.
* **Failing.** Offenders not in :data:`ALLOWED` fail the session at its end with a report
  (``pytest_sessionfinish``); ``tests/storage/test_shard_ready.py`` drives a workload and asserts none.
  ``LOYALTY_SHARDCHECK=0`` turns the session's recording and verdict off (the dedicated test still
  records its own workload).
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import sqlglot
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlglot import exp

ROOT = Path(__file__).resolve().parents[1]
#: Packages whose statements are checked (the product); the tests' own statements are not.
PRODUCT = tuple(str(ROOT / p) + os.sep for p in ("loyalty", "api", "cli"))
#: Files that only carry other modules' statements to the database: never an origin.
PLUMBING = tuple(str(ROOT / p) for p in ("loyalty/storage/db.py", "loyalty/ledger/store.py"))
MIGRATIONS = str(ROOT / "loyalty/storage/migrations") + os.sep

#: The till's flows (module, function): a statement run while one of these is on the stack must carry
#: the member, so that on a cluster distributed by member it is routed to one shard.
HOT_FLOWS = frozenset(
    {
        ("loyalty.points.posting", "post"),
        ("loyalty.points.redemptions", "redeem"),
        ("loyalty.points.redemptions", "redeem_with_member"),
        ("loyalty.points.redemptions", "use_voucher"),
        ("loyalty.points.redemptions", "cancel"),
        ("loyalty.points.refunds", "refund"),
        ("loyalty.points.refunds", "refund_with_member"),
        ("loyalty.points.balances", "balance"),
        ("loyalty.points.balances", "history"),
        ("loyalty.points.balances", "scan"),
        ("loyalty.members.membership", "card_holder"),
        ("loyalty.members.membership", "holder_id"),
        ("loyalty.members.membership", "resolve_card"),
        ("loyalty.members.lookup", "number_of"),
    }
)

#: The card lookup (card number or card id -> member): a reference table in the plan, so the tenant
#: is enough; it is what gives the hot path its member.
TENANT_ONLY = frozenset({"cards"})


@cache
def member_tables() -> dict[str, str]:
    """Member-owned table -> its member column: every table with ``member_id`` (but the card lookup),
    and ``members`` itself, whose ``id`` is the member."""
    from loyalty.storage.models import load_all

    tables = {t.name: "member_id" for t in load_all().tables.values() if "member_id" in t.c}
    for name in TENANT_ONLY:
        tables.pop(name, None)
    tables["members"] = "id"
    return tables


# --- the check ---------------------------------------------------------------------------------------

_DML = re.compile(r"^\s*(\(\s*)?(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)
_SQLITE_NUMBERED = re.compile(r"\?(\d+)")
_SCOPES = (exp.Select, exp.Update, exp.Delete, exp.Insert)


@dataclass(frozen=True)
class Offence:
    table: str
    alias: str
    missing: str  # "tenant_id" or the member column
    #: The innermost query that names the table (what an allowlist pattern is matched against).
    context: str = ""

    def __str__(self) -> str:
        named = self.table if self.alias == self.table else f"{self.table} AS {self.alias}"
        return f"{named}: no {self.missing} predicate"


def parse(sql: str) -> exp.Expression | None:
    """The statement's tree (None for anything but a query or DML: DDL, PRAGMA, BEGIN, SET ...)."""
    if not _DML.match(sql):
        return None
    text = _SQLITE_NUMBERED.sub(r"$\1", sql)
    try:
        tree = sqlglot.parse_one(text, read="postgres")
    except sqlglot.errors.ParseError:
        tree = sqlglot.parse_one(text, read="sqlite")
    assert isinstance(tree, exp.Expression)
    return tree


def _scope(node: exp.Expression) -> exp.Expression | None:
    parent = node.parent
    while parent is not None and not isinstance(parent, _SCOPES):
        parent = parent.parent
    return parent


def _conjuncts(condition: exp.Expression | None) -> Iterator[exp.Expression]:
    """The AND-ed parts of a condition; what sits under OR or NOT is not a predicate one can rely on."""
    if condition is None:
        return
    while isinstance(condition, exp.Paren):
        condition = condition.this
    if isinstance(condition, exp.And):
        yield from _conjuncts(condition.this)
        yield from _conjuncts(condition.expression)
    else:
        yield condition


def _is_value(node: exp.Expression) -> bool:
    """A value the caller bound: a parameter or literal, possibly cast, or a list of them."""
    while isinstance(node, exp.Cast | exp.Paren):
        node = node.this
    if isinstance(node, exp.Placeholder | exp.Parameter | exp.Literal | exp.Null):
        return True
    if isinstance(node, exp.Column) and node.name.startswith("$"):  # sqlite's reading of "$1"
        return True
    if isinstance(node, exp.Any):
        return _is_value(node.this)
    if isinstance(node, exp.Tuple | exp.Array):
        return all(_is_value(e) for e in node.expressions)
    return False


def _is_value_list(node: exp.Expression) -> bool:
    """``IN (SELECT value FROM json_each($n))``: SQLite's form of ``= ANY($n)``."""
    select = node.find(exp.Select)
    if select is None or select.args.get("where") is not None:
        return False
    source = select.args.get("from_") or select.args.get("from")
    return (
        source is not None
        and isinstance(source.this, exp.Table)
        and isinstance(source.this.this, exp.Anonymous)
        and all(_is_value(a) for a in source.this.this.expressions)
    )


class _Statement:
    """The sources of a parsed statement and which of their columns are carried (bound to values)."""

    def __init__(self, tree: exp.Expression) -> None:
        self.tree = tree
        #: (scope, alias) -> table name, or "" for a source made of parameters (unnest, json_each).
        self.sources: dict[tuple[int, str], str] = {}
        self.tables: list[tuple[exp.Expression, exp.Table]] = []
        for node in tree.walk():
            if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
                scope = _scope(node)
                if scope is not None and not (isinstance(scope, exp.Insert) and _is_insert_target(node)):
                    self.sources[(id(scope), node.alias_or_name)] = node.name
                    self.tables.append((scope, node))
            elif isinstance(node, exp.Unnest) or (
                isinstance(node, exp.Table) and isinstance(node.this, exp.Anonymous)
            ):
                scope = _scope(node)
                alias = node.alias if node.alias else ""
                if scope is not None and alias:
                    self.sources[(id(scope), alias)] = ""
        self.carried = self._carried()

    def _resolve(self, column: exp.Column) -> tuple[tuple[int, str], str] | None:
        """The source a column belongs to (its scope and alias) and its name; None when unknown."""
        scope = _scope(column)
        qualifier = column.table
        while scope is not None:
            if qualifier:
                if (id(scope), qualifier) in self.sources:
                    return (id(scope), qualifier), column.name
            else:
                own = [a for (s, a), t in self.sources.items() if s == id(scope) and t]
                if len(own) == 1:
                    return (id(scope), own[0]), column.name
                checked = [a for a in own if self.sources[(id(scope), a)] in member_tables() | {"cards": ""}]
                if len(checked) == 1:
                    return (id(scope), checked[0]), column.name
                return None
            scope = _scope(scope)
        return None

    def _carried(self) -> set[tuple[tuple[int, str], str]]:
        bound: set[tuple[tuple[int, str], str]] = set()
        edges: list[tuple[tuple[tuple[int, str], str], tuple[tuple[int, str], str]]] = []
        for node in self.tree.walk():
            if isinstance(node, exp.Where):
                parts = list(_conjuncts(node.this))
            elif isinstance(node, exp.Join):
                parts = list(_conjuncts(node.args.get("on")))
            else:
                continue
            for part in parts:
                self._fact(part, bound, edges)
        for (scope, alias), table in self.sources.items():
            if table == "":  # every column of unnest($n...) / json_each($n) is a bound value
                bound.add(((scope, alias), "*"))
        changed = True
        while changed:
            changed = False
            for card in self._card_lookups(bound):
                bound.add(card)
                changed = True
            for a, b in edges:
                if self._is_bound(a, bound) != self._is_bound(b, bound):
                    bound.add(b if self._is_bound(a, bound) else a)
                    changed = True
        return bound

    def _card_lookups(self, bound: set[Any]) -> list[tuple[tuple[int, str], str]]:
        """The card lookup gives the member: a ``cards`` row pinned by tenant and number (or id)
        carries its ``member_id`` on to what joins it (the plan resolves it from the card table)."""
        out = []
        for source, table in self.sources.items():
            member = (source, "member_id")
            pinned = self._is_bound((source, "number"), bound) or self._is_bound((source, "id"), bound)
            tenant = self._is_bound((source, "tenant_id"), bound)
            if table in TENANT_ONLY and member not in bound and pinned and tenant:
                out.append(member)
        return out

    def _is_bound(self, ref: tuple[tuple[int, str], str], bound: set[Any]) -> bool:
        return ref in bound or (ref[0], "*") in bound

    def _fact(self, part: exp.Expression, bound: set[Any], edges: list[Any]) -> None:
        if isinstance(part, exp.EQ):
            left, right = part.this, part.expression
            for a, b in ((left, right), (right, left)):
                if isinstance(a, exp.Column) and not a.name.startswith("$"):
                    ref = self._resolve(a)
                    if ref is None:
                        continue
                    if _is_value(b):
                        bound.add(ref)
                    elif isinstance(b, exp.Column):
                        other = self._resolve(b)
                        if other is not None:
                            edges.append((ref, other))
        elif isinstance(part, exp.In) and isinstance(part.this, exp.Column):
            ref = self._resolve(part.this)
            query = part.args.get("query")
            values = part.expressions
            if ref is not None and (
                (values and all(_is_value(v) for v in values))
                or (query is not None and _is_value_list(query))
            ):
                bound.add(ref)

    def offences(self, *, hot: bool) -> list[Offence]:
        out: list[Offence] = []
        members = member_tables()
        for scope, table in self.tables:
            if table.name not in members and table.name not in TENANT_ONLY:
                continue
            needed = ["tenant_id"] + ([members[table.name]] if hot and table.name in members else [])
            alias = table.alias_or_name
            for column in needed:
                if not self._is_bound(((id(scope), alias), column), self.carried):
                    out.append(Offence(table.name, alias, column, scope.sql(dialect="postgres")))
        for insert in self.tree.find_all(exp.Insert):
            out += _insert_offences(insert, hot=hot)
        return out


def _is_insert_target(table: exp.Table) -> bool:
    parent = table.parent
    if isinstance(parent, exp.Schema):
        parent = parent.parent
    return isinstance(parent, exp.Insert) and (parent.this is table or parent.this is table.parent)


def _insert_offences(insert: exp.Insert, *, hot: bool) -> list[Offence]:
    target = insert.this
    columns = [c.name for c in target.expressions] if isinstance(target, exp.Schema) else []
    table = target.this if isinstance(target, exp.Schema) else target
    members = member_tables()
    if not isinstance(table, exp.Table) or (table.name not in members and table.name not in TENANT_ONLY):
        return []
    # A new member's id comes from its sequence: the coordinator evaluates the default before routing.
    member = members.get(table.name) if table.name != "members" else None
    needed = ["tenant_id"] + ([member] if hot and member else [])
    return [Offence(table.name, table.name, c, "INSERT") for c in needed if c not in columns]


def offences(sql: str, *, hot: bool) -> list[Offence]:
    """What ``sql`` lacks to be routed on a cluster distributed by member (empty: nothing)."""
    tree = parse(sql)
    if tree is None:
        return []
    return _Statement(tree).offences(hot=hot)


# --- the allowlist -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allowed:
    """An offence that is accepted: from ``origin`` (``module:function``), on ``table`` (or one
    reference of it, ``"transactions AS t"``), missing
    ``missing`` ("*": any of them), and, with ``pattern``, only where the innermost query naming the
    table matches that regular expression."""

    origin: str
    table: str
    missing: str
    reason: str
    pattern: str = ""

    def covers(self, origin: str, offence: Offence) -> bool:
        named = offence.table if offence.alias == offence.table else f"{offence.table} AS {offence.alias}"
        return (
            self.origin in (origin, "*")
            and self.table in (offence.table, named, "*")
            and self.missing in (offence.missing, "*")
            and (not self.pattern or re.fullmatch(self.pattern, offence.context) is not None)
        )


#: Keep this short and honest: each entry says why the statement may go across tenants or members.
ALLOWED: tuple[Allowed, ...] = (
    Allowed(
        "*",
        "*",
        "*",
        "SQLite allocates ids as MAX(id) under its writer lock; PostgreSQL (and so Citus) uses the"
        " table's sequence instead, so this statement never reaches a cluster.",
        pattern=r"SELECT COALESCE\(MAX\(id\), 0\)( \+ 1)? FROM \w+",
    ),
    # --- lookups that find the member: each is one indexed read before the operation knows whose row
    # it touches; on the cluster they go to a lookup table (docs/scaling.md, "Lookups").
    *(
        Allowed(
            "loyalty.ledger.reads:owner",
            table,
            "member_id",
            "The owner lookup: a till names a purchase or a redemption by its id alone; this read finds"
            " its member, and every later statement of the operation carries that member.",
        )
        for table in ("transactions", "redemptions")
    ),
    Allowed(
        "loyalty.points.posting:_load",
        "transactions AS t",
        "member_id",
        "Till ids: a receipt id is unique per outlet, not per member (a receipt sent again with another"
        " card is still the first purchase), so the earlier booking is looked up by outlet and id.",
    ),
    Allowed(
        "loyalty.points.transactions:_posting",
        "transactions",
        "member_id",
        "The replay of a receipt booked before reads it by the id the till-id lookup found, whoever's it is.",
    ),
    *(
        Allowed(
            "loyalty.points.redemptions:_earlier",
            table,
            "member_id",
            "Till ids of redemptions, as for receipts: unique per outlet, and a redemption id reused for"
            " another member must be refused (a 409), so it is looked up by outlet and id (its draws too).",
        )
        for table in ("redemptions", "lot_draws")
    ),
    Allowed(
        "loyalty.points.redemptions:_cancel_unit",
        "lot_draws AS d",
        "member_id",
        "A redemption's draws stay with the member who drew them (history is not moved by a merge), so"
        " after a merge they are another member's than the redemption's; the lots they join are carried.",
    ),
    # --- cross-tenant by design: one outbox dispatcher serves every tenant from one queue. Its claims
    # and the by-id updates of what it claimed go to every shard on a cluster: background work in
    # batches, off the till's path (a dispatcher per shard is the step after; docs/scaling.md).
    *(
        Allowed(
            f"loyalty.events.dispatcher:{function}",
            table,
            "tenant_id",
            "The webhook dispatcher works through the outbox of all tenants at once.",
        )
        for function in ("fan_out", "_claim", "_flush")
        for table in ("events", "webhook_deliveries")
    ),
    *(
        Allowed(
            "loyalty.events.backlog:backlog",
            table,
            "tenant_id",
            "The /metrics scrape reads the dispatcher's backlog of all tenants (counts over the backlog's"
            " partial indexes, capped): one operator's figure, off the till's path, at most every 5 s.",
        )
        for table in ("events", "webhook_deliveries")
    ),
    # --- cross-tenant by design: a month partition holds every tenant's rows, so retention checks and
    # clears a whole month at once (loyalty.storage.partitions; maintenance, never on a till's path).
    *(
        Allowed(
            origin,
            table,
            "tenant_id",
            "Retention drops a month partition of all tenants: its guard and clean-up read the month whole.",
        )
        for origin in ("loyalty.storage.partitions:drop", "loyalty.privacy.retention:_drop_events")
        for table in ("transactions", "webhook_deliveries AS d")
    ),
)


# --- recording ---------------------------------------------------------------------------------------


@dataclass
class Seen:
    sql: str
    hot: bool
    origins: set[str] = field(default_factory=set)


_NUMBER = re.compile(r"(?<![\w$?])-?\d+(\.\d+)?")
_STRING = re.compile(r"'(?:[^']|'')*'")
_CAST = re.compile(r"::[A-Z]+(?: WITH(?:OUT)? TIME ZONE)?(?:\[\])?")
_LIST = re.compile(r"(?:\$\d+|\?\d*|N|'\?')(?:\s*,\s*(?:\$\d+|\?\d*|N|'\?'))+")


def normalized(sql: str) -> str:
    """The statement with its literal values, casts and value lists folded: the key that deduplicates."""
    text = _CAST.sub("", _STRING.sub("'?'", sql))
    text = _NUMBER.sub("N", text)
    return " ".join(_LIST.sub("LIST", text).split())


def _frames() -> Iterator[FrameType]:
    """The stack, innermost first, through SQLAlchemy's greenlets to the coroutine that awaits them."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        yield frame
        frame = frame.f_back
    try:
        import greenlet  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - SQLAlchemy's asyncio support requires it
        return
    parent = greenlet.getcurrent().parent
    while parent is not None:
        frame = parent.gr_frame
        while frame is not None:
            yield frame
            frame = frame.f_back
        parent = parent.parent


#: code object -> (origin it gives or None, a hot flow, a migration): one walk costs a dict hit per frame.
_CODES: dict[Any, tuple[str | None, bool, bool]] = {}


def _kind(frame: FrameType) -> tuple[str | None, bool, bool]:
    code = frame.f_code
    found = _CODES.get(code)
    if found is None:
        filename, module = code.co_filename, frame.f_globals.get("__name__", "?")
        product = filename.startswith(PRODUCT) and not filename.startswith(PLUMBING)
        found = _CODES[code] = (
            f"{module}:{code.co_name}" if product else None,
            (module, code.co_name) in HOT_FLOWS,
            filename.startswith(MIGRATIONS),
        )
    return found


def where_from() -> tuple[str | None, bool, bool]:
    """(origin ``module:function`` or None for the tests' own statements, hot, from a migration)."""
    origin: str | None = None
    hot = False
    for frame in _frames():
        here, flow, migration = _kind(frame)
        if migration:
            return None, False, True
        origin = origin or here
        hot = hot or flow
    return origin, hot, False


class Recorder:
    """Every distinct product statement of the session, with where it ran and whether on a hot path."""

    def __init__(self) -> None:
        self.seen: dict[str, Seen] = {}
        self.statements = 0
        self._lock = threading.Lock()

    def record(self, sql: str) -> None:
        if not _DML.match(sql):
            return
        origin, hot, migration = where_from()
        if origin is None or migration:
            return
        key = normalized(sql)
        with self._lock:
            self.statements += 1
            seen = self.seen.get(key)
            if seen is None:
                seen = self.seen[key] = Seen(sql, hot)
            seen.hot = seen.hot or hot
            seen.origins.add(origin)

    def offenders(self) -> list[tuple[Seen, list[tuple[str, Offence]]]]:
        """Each statement with its offences that no allowlist entry covers."""
        out = []
        for seen in list(self.seen.values()):
            try:
                found = offences(seen.sql, hot=seen.hot)
            except sqlglot.errors.SqlglotError as exc:
                out.append((seen, [("?", Offence("?", "?", f"parseable SQL ({exc})".splitlines()[0]))]))
                continue
            left = [
                (origin, o)
                for o in found
                for origin in sorted(seen.origins)
                if not any(a.covers(origin, o) for a in ALLOWED)
            ]
            if left:
                out.append((seen, left))
        return out


def report(offenders: list[tuple[Seen, list[tuple[str, Offence]]]]) -> str:
    lines = [
        f"shard readiness: {len(offenders)} statement(s) lack the tenant or the member (docs/scaling.md)"
    ]
    for seen, found in offenders:
        origins = sorted({origin for origin, _ in found})
        problems = sorted({str(o) for _, o in found})
        sql = " ".join(seen.sql.split())
        lines.append(f"- {', '.join(origins)}{' [hot path]' if seen.hot else ''}: {'; '.join(problems)}")
        lines.append(f"    {sql[:400]}{' ...' if len(sql) > 400 else ''}")
    return "\n".join(lines)


# --- hooks into the drivers --------------------------------------------------------------------------

_ASYNCPG_METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")


def _wrap_asyncpg(recorder: Recorder) -> Callable[[], None]:
    import asyncpg.connection

    cls = asyncpg.connection.Connection
    originals = {name: getattr(cls, name) for name in _ASYNCPG_METHODS}

    def wrapper(original: Any) -> Any:
        async def recorded(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            recorder.record(query)
            return await original(self, query, *args, **kwargs)

        return recorded

    for name, original in originals.items():
        setattr(cls, name, wrapper(original))

    def undo() -> None:
        for name, original in originals.items():
            setattr(cls, name, original)

    return undo


def _wrap_sqlite_writer(recorder: Recorder) -> Callable[[], None]:
    from loyalty.storage.db import SqliteWriter

    original = SqliteWriter._connection

    def connection(self: SqliteWriter, busy_timeout_s: float) -> sqlite3.Connection:
        conn = original(self, busy_timeout_s)
        conn.set_trace_callback(recorder.record)
        return conn

    SqliteWriter._connection = connection  # type: ignore[method-assign]

    def undo() -> None:
        SqliteWriter._connection = original  # type: ignore[method-assign]

    return undo


def _on_engine(recorder: Recorder) -> Callable[..., None]:
    def before_cursor_execute(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        recorder.record(statement)

    return before_cursor_execute


@contextmanager
def recording() -> Iterator[Recorder]:
    """Record every product statement run inside the block (all engines and both raw drivers)."""
    recorder = Recorder()
    listener = _on_engine(recorder)
    event.listen(Engine, "before_cursor_execute", listener)
    undo = [_wrap_asyncpg(recorder), _wrap_sqlite_writer(recorder)]
    try:
        yield recorder
    finally:
        event.remove(Engine, "before_cursor_execute", listener)
        for u in reversed(undo):
            u()


# --- the pytest plugin -------------------------------------------------------------------------------


class Plugin:
    """Records the whole session and fails it, at its end, on any offender not allowed."""

    def __init__(self) -> None:
        self.enabled = os.environ.get("LOYALTY_SHARDCHECK", "1") != "0"
        self._recording = recording()
        if self.enabled:
            self.recorder = self._recording.__enter__()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.enabled:
            return
        self._recording.__exit__(None, None, None)
        offenders = self.recorder.offenders()
        if not offenders:
            return
        text = report(offenders)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "shard readiness", red=True)
            reporter.write_line(text)
        else:
            print(text, file=sys.stderr)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
