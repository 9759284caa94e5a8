"""The program document marketers edit: a pydantic model, loaded from YAML or JSON with positions.

Loading never executes anything from the text: YAML goes through ``SafeLoader``, aliases are refused
(a "billion laughs" document cannot blow up), and the size is capped. Every validation problem comes
back as an :class:`~rules.errors.Issue` carrying the path and, where the text has one, the line and
column of the offending value.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rules.errors import Issue, ProgramError
from rules.hints import did_you_mean

#: A program document larger than this is refused before parsing (real ones are a few kB).
MAX_DOCUMENT_BYTES = 512 * 1024
#: Nesting of mappings and lists in a document; a real program needs five or six levels.
MAX_NESTING = 64
#: Rules per program; far above real programs, low enough that compiling stays well under a second.
MAX_RULES = 2_000

#: Most segments a program names: a marketer's handful, each evaluated for every member at a run.
MAX_SEGMENTS = 50
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Expression = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


#: The shortest max_receipt_age_days a program may set: a receipt younger than this is never too old.
MIN_RECEIPT_AGE_DAYS = 1


class PointsPolicy(_Model):
    """How earned points behave once booked."""

    expire_after_months: int | None = Field(default=None, ge=1, le=240)
    pending_days: int = Field(default=0, ge=0, le=365)
    rounding: Literal["floor", "half_up", "ceil"] = "floor"
    #: How late a till may send a receipt (an offline till catching up): an older one is refused.
    #: History is brought in by the importer, which this does not limit.
    max_receipt_age_days: int = Field(default=30, ge=MIN_RECEIPT_AGE_DAYS, le=3650)
    #: Days before a lot expires that the expiry-reminder job tells the member (a marketing event,
    #: sent only to members who consented); None: no reminders.
    expiry_reminder_days: int | None = Field(default=None, ge=1, le=365)


class TierLevel(_Model):
    name: Code
    min: Decimal = Field(ge=0, max_digits=15)
    earn_multiplier: Decimal = Field(default=Decimal(1), ge=0, le=100, max_digits=10)


class Tiers(_Model):
    qualify_on: Literal["points", "spend", "visits"] = "points"
    window_months: int = Field(default=12, ge=1, le=120)
    levels: list[TierLevel] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _ordered(self) -> Tiers:
        if self.levels[0].min != 0:
            raise ValueError("the first tier level must have min: 0 so every member has a tier")
        mins = [level.min for level in self.levels]
        if any(b <= a for a, b in itertools.pairwise(mins)):
            raise ValueError("tier levels must be listed with strictly increasing min")
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be unique")
        return self


class Reward(_Model):
    code: Code
    name: Name
    #: Points it costs; ``None`` for a reward that is only issued as a voucher (from stamps).
    cost: int | None = Field(default=None, ge=1, le=10**9)
    min_tier: Code | None = None


class Earn(_Model):
    """Exactly one way of earning."""

    per_currency_unit: Decimal | None = Field(default=None, ge=0, le=10_000, max_digits=12)
    points: int | None = Field(default=None, ge=0, le=10**7)
    multiplier: Decimal | None = Field(default=None, ge=0, le=100, max_digits=10)

    @model_validator(mode="after")
    def _exactly_one(self) -> Earn:
        given = [k for k in ("per_currency_unit", "points", "multiplier") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("earn needs exactly one of per_currency_unit, points, multiplier")
        return self

    @property
    def kind(self) -> str:
        if self.per_currency_unit is not None:
            return "per_currency_unit"
        return "points" if self.points is not None else "multiplier"


class Stamp(_Model):
    card: Code
    #: An expression giving the number of stamps (``item.quantity``) or a whole number.
    count: Expression | int = 1
    reward_at: int = Field(ge=1, le=10_000)
    reward: Code

    @field_validator("count", mode="before")
    @classmethod
    def _count_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("count must be a whole number or an expression")
        return value


class Limit(_Model):
    """Caps on how often a rule applies (an application is one matched item, or one transaction)."""

    per_member: int | None = Field(default=None, ge=1, le=10**6)
    per_day: int | None = Field(default=None, ge=1, le=10**6)
    per_transaction: int | None = Field(default=None, ge=1, le=10**6)


class Rule(_Model):
    id: Code
    description: str | None = Field(default=None, max_length=2000)
    for_each: Literal["item", "transaction"] = "transaction"
    when: Expression | None = None
    where: Expression | None = None
    earn: Earn | None = None
    stamp: Stamp | None = None
    stacking: Literal["additive", "exclusive", "max"] = "additive"
    limit: Limit | None = None
    #: Points this rule may give over its whole life, across all members.
    budget: int | None = Field(default=None, ge=1, le=10**12)
    valid_from: datetime | date | None = None
    valid_until: datetime | date | None = None
    partners: list[Code] | None = Field(default=None, max_length=1000)
    outlets: list[Code] | None = Field(default=None, max_length=10_000)
    #: The share of members held out as a control group (a campaign): they never get this rule's
    #: effect, and their purchases where it would have applied are recorded, so its lift can be measured.
    holdout: float | None = Field(default=None, gt=0, le=0.5)

    @field_validator("valid_from", "valid_until", mode="before")
    @classmethod
    def _plain_date(cls, value: Any) -> Any:
        # pydantic would read "2026-05-01" (JSON has no date type) as a naive midnight datetime.
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            return date.fromisoformat(value.strip())
        return value

    @model_validator(mode="after")
    def _shape(self) -> Rule:
        if (self.earn is None) == (self.stamp is None):
            raise ValueError("a rule needs exactly one effect: earn or stamp")
        if self.where is not None and self.for_each != "item":
            raise ValueError("where filters items; use it with for_each: item (or use when)")
        # The default may be spelled out (a dumped document does), anything else needs a multiplier.
        if self.stacking != "additive" and (self.earn is None or self.earn.multiplier is None):
            raise ValueError("stacking applies only to multiplier rules")
        for name in ("valid_from", "valid_until"):
            value = getattr(self, name)
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError(f"{name} needs a timezone offset (or give a plain date)")
        return self


class Segment(_Model):
    """A named group of members: the first segment (in document order) whose condition holds for a
    member at a segment run is theirs. Conditions read ``member.*`` and the figures ``customer.*``."""

    name: Code
    description: str | None = Field(default=None, max_length=2000)
    when: Expression


class Privacy(_Model):
    """What the engine keeps of members' baskets."""

    #: Item lines (SKU, category, tags) of purchases older than this many months are purged by the
    #: retention job; the totals, points and refundable quantities stay. None: kept.
    basket_detail_months: int | None = Field(default=None, ge=1, le=240)


class ProgramDocument(_Model):
    """The whole program: policy, tiers, rewards and rules."""

    program: Name
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    timezone: str
    public_base_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://\S+$")
    points: PointsPolicy = PointsPolicy()
    privacy: Privacy = Privacy()
    tiers: Tiers | None = None
    rewards: list[Reward] = Field(default_factory=list, max_length=1000)
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    segments: list[Segment] = Field(default_factory=list, max_length=MAX_SEGMENTS)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r} (use an IANA name such as Europe/Berlin)") from exc
        return value


# --------------------------------------------------------------------------------------------------
# Loading with positions


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    column: int
    #: 0 for plain scalars, 1 when the value text starts after a quote.
    quote: int = 0
    #: True for block scalars (``|``/``>``): the text starts on the next line.
    block: bool = False


@dataclass(frozen=True, slots=True)
class Source:
    """Where each part of the document sits in its text, keyed by path tuples like ("rules", 2, "when")."""

    text: str
    values: dict[tuple[str | int, ...], Position]
    keys: dict[tuple[str | int, ...], Position]

    def line_text(self, line: int | None) -> str | None:
        if line is None:
            return None
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None

    def where(self, path: tuple[str | int, ...], *, key: bool = False) -> Position | None:
        table = self.keys if key else self.values
        # A missing field is reported at the mapping that lacks it (for the root: the document start).
        while True:
            if path in table:
                return table[path]
            if key and path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]


EMPTY_SOURCE = Source("", {}, {})


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases: a program never needs them."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                "while reading the program", None, "anchors and aliases are not allowed", event.start_mark
            )
        # The composer recurses once per level: stop long before Python's recursion limit.
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise yaml.MarkedYAMLError(
                    "while reading the program",
                    None,
                    f"nested more than {MAX_NESTING} levels deep",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _positions(node: yaml.Node) -> Source:
    values: dict[tuple[str | int, ...], Position] = {}
    keys: dict[tuple[str | int, ...], Position] = {}

    def mark(n: yaml.Node) -> Position:
        style = getattr(n, "style", None)
        return Position(
            n.start_mark.line + 1,
            n.start_mark.column + 1,
            quote=1 if style in ("'", '"') else 0,
            block=style in ("|", ">"),
        )

    def walk(n: yaml.Node, path: tuple[str | int, ...]) -> None:
        values[path] = mark(n)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                sub = (*path, str(k.value))
                keys[sub] = mark(k)
                walk(v, sub)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*path, i))

    walk(node, ())
    return Source("", values, keys)


def parse_text(text: str) -> tuple[Any, Source]:
    """Parse YAML or JSON text into plain data and a position table; raise ProgramError on bad syntax."""
    if len(text.encode("utf-8", errors="replace")) > MAX_DOCUMENT_BYTES:
        raise ProgramError([Issue(f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} kB")])
    try:
        loader = _NoAliasLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        m = exc.problem_mark or exc.context_mark
        line = m.line + 1 if m else None
        column = m.column + 1 if m else None
        problem = exc.problem or exc.context or "invalid YAML"
        lines = text.splitlines()
        offending = lines[line - 1] if line and 0 < line <= len(lines) else None
        issue = Issue(f"syntax error: {problem}", line=line, column=column, source_line=offending)
        raise ProgramError([issue]) from exc
    except yaml.YAMLError as exc:
        raise ProgramError([Issue(f"syntax error: {exc}")]) from exc
    if node is None:
        raise ProgramError([Issue("the document is empty")])
    data: Any = None
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text, parse_float=Decimal)
        except ValueError:
            data = None  # not JSON after all: a YAML flow mapping such as {program: X, ...}
    if data is None:
        constructor = yaml.SafeLoader("")
        try:
            data = constructor.construct_document(node)
        except yaml.YAMLError as exc:
            raise ProgramError([Issue(f"syntax error: {exc}")]) from exc
        finally:
            constructor.dispose()
    if _holds_nul(data):
        # Text with NUL cannot be stored (PostgreSQL refuses it) and is never a real program's.
        raise ProgramError([Issue("the document holds a NUL character (\\u0000) in a text")])
    src = _positions(node)
    return data, Source(text, src.values, src.keys)


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _fields_of(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names allowed at ``loc`` (the parent of an unknown key), for "did you mean" hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def format_path(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def issues_from_validation(exc: ValidationError, source: Source) -> list[Issue]:
    issues: list[Issue] = []
    for err in exc.errors(include_url=False):
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "constrained")))
        )
        # Union members show up as extra loc parts ("int", "str"); keep only real document keys.
        loc = tuple(p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS))
        kind = err["type"]
        hint = None
        if kind == "extra_forbidden":
            key = str(loc[-1])
            hint = did_you_mean(key, _fields_of(ProgramDocument, loc[:-1]))
            message = f"unknown field {key!r}"
            pos = source.where(loc, key=True)
        else:
            message = re.sub(r"^Value error, ", "", err["msg"])
            pos = source.where(loc)
        line = pos.line if pos else None
        issues.append(
            Issue(
                message=message,
                path=format_path(loc),
                line=line,
                column=pos.column if pos else None,
                hint=hint,
                source_line=source.line_text(line),
            )
        )
    # One problem can fail several union members; report each (path, message) once.
    unique: dict[tuple[str, str], Issue] = {}
    for issue in issues:
        unique.setdefault((issue.path, issue.message), issue)
    return list(unique.values())


_UNION_TAGS = frozenset({"int", "str", "date", "datetime", "decimal", "Decimal"})


def load_document(data: Any, source: Source = EMPTY_SOURCE) -> ProgramDocument:
    """Validate plain data (from YAML, JSON or Python) into a ProgramDocument, or raise ProgramError."""
    if not isinstance(data, dict):
        raise ProgramError([Issue("the document must be a mapping of program, currency, timezone, ...")])
    try:
        return ProgramDocument.model_validate(data)
    except ValidationError as exc:
        raise ProgramError(issues_from_validation(exc, source)) from exc
