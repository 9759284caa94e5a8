"""Stage 3: a validated document -> a checked program, every condition typed, every reference resolved.

This is the last stage that can fail on user input. What comes out of it compiles and evaluates
without any further checks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from rules import document as doc
from rules.check import Const, Node, check_expression
from rules.errors import Issue, ProgramError
from rules.hints import did_you_mean
from rules.money import minor_unit
from rules.parse import Located, parse_expression
from rules.schema import BOOL, NUMBER

Kind = Literal["base", "multiplier", "points", "stamp"]


@dataclass(frozen=True, slots=True, eq=False)
class CheckedRule:
    """One rule, ready to emit: its conditions as typed trees and its effect as numbers."""

    index: int
    id: str
    kind: Kind
    per_item: bool
    stacking: str
    when: Node | None
    where: Node | None
    #: per_currency_unit rate, multiplier factor, or fixed points; None for stamps.
    amount: Decimal | None
    stamp_card: str | None
    stamp_count: Node | None
    stamp_reward_at: int | None
    stamp_reward: str | None
    per_member: int | None
    per_day: int | None
    per_transaction: int | None
    budget: int | None
    valid_from: datetime | None
    valid_until: datetime | None
    partners: frozenset[str] | None
    outlets: frozenset[str] | None
    #: The share of members in the rule's control group (None: no control group).
    holdout: float | None = None

    @property
    def limited(self) -> bool:
        return any(x is not None for x in (self.per_member, self.per_day, self.per_transaction))


@dataclass(frozen=True, slots=True, eq=False)
class CheckedProgram:
    document: doc.ProgramDocument
    rules: tuple[CheckedRule, ...]
    zone: ZoneInfo
    #: The currency's minor unit: Decimal("0.01") for EUR.
    minor: Decimal
    #: sha256 of the canonical JSON of the document: the identity of a program version.
    digest: str
    #: (name, condition) of each segment, in document order: the first that holds is a member's.
    segments: tuple[tuple[str, Node], ...] = ()
    #: (rule id, share) of each rule with a control group: what every posting draws a member against,
    #: listed once here so a program without campaigns costs a posting nothing.
    holdouts: tuple[tuple[str, float], ...] = ()


def digest_of(document: doc.ProgramDocument) -> str:
    canonical = json.dumps(document.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_program(document: doc.ProgramDocument, source: doc.Source = doc.EMPTY_SOURCE) -> CheckedProgram:
    """Check every rule of ``document``; raise ProgramError listing every problem found."""
    issues: list[Issue] = []
    zone = ZoneInfo(document.timezone)
    tiers = tuple(level.name for level in document.tiers.levels) if document.tiers else ()
    segment_names = tuple(s.name for s in document.segments)
    rewards = {r.code for r in document.rewards}

    def at(path: tuple[str | int, ...], message: str, hint: str | None = None, key: bool = False) -> None:
        pos = source.where(path, key=key)
        issues.append(
            Issue(
                message,
                doc.format_path(path),
                pos.line if pos else None,
                pos.column if pos else None,
                hint,
                source.line_text(pos.line if pos else None),
            )
        )

    seen: dict[str, int] = {}
    for i, rule in enumerate(document.rules):
        if rule.id in seen:
            at(("rules", i, "id"), f"duplicate rule id {rule.id!r} (also rules[{seen[rule.id]}])")
        seen.setdefault(rule.id, i)
    codes = [r.code for r in document.rewards]
    for i, code in enumerate(codes):
        if code in codes[:i]:
            at(("rewards", i, "code"), f"duplicate reward code {code!r}")
    for i, reward in enumerate(document.rewards):
        if reward.min_tier is not None and reward.min_tier not in tiers:
            at(
                ("rewards", i, "min_tier"),
                f"unknown tier {reward.min_tier!r}",
                did_you_mean(reward.min_tier, tiers),
            )

    def expression(
        text: str, path: tuple[str | int, ...], *, item_scope: bool, want: Any, segment_scope: bool = False
    ) -> Node | None:
        loc = Located(text, doc.format_path(path), source.where(path), source.text)
        tree, found = parse_expression(loc)
        if tree is None:
            issues.extend(found)
            return None
        node, found = check_expression(
            tree,
            loc,
            item_scope=item_scope,
            want=want,
            tiers=tiers,
            segment_scope=segment_scope,
            segments=segment_names,
        )
        issues.extend(found)
        return None if found else node

    checked: list[CheckedRule] = []
    cards: dict[str, tuple[int, int, str]] = {}
    for i, rule in enumerate(document.rules):
        per_item = rule.for_each == "item"
        when = expression(rule.when, ("rules", i, "when"), item_scope=False, want=BOOL) if rule.when else None
        where = (
            expression(rule.where, ("rules", i, "where"), item_scope=True, want=BOOL) if rule.where else None
        )
        count: Node | None = None
        if rule.stamp is not None:
            if isinstance(rule.stamp.count, int):
                if rule.stamp.count < 1:
                    at(("rules", i, "stamp", "count"), "count must be at least 1")
                count = Const(NUMBER, str(rule.stamp.count), Decimal(rule.stamp.count))
            else:
                count = expression(
                    rule.stamp.count, ("rules", i, "stamp", "count"), item_scope=per_item, want=NUMBER
                )
            if rule.stamp.reward not in rewards:
                at(
                    ("rules", i, "stamp", "reward"),
                    f"unknown reward {rule.stamp.reward!r}",
                    did_you_mean(rule.stamp.reward, tuple(rewards))
                    or "add it under rewards (cost may be left out)",
                )
        valid_from = _instant(rule.valid_from, zone)
        valid_until = _instant(rule.valid_until, zone)
        if valid_from and valid_until and valid_until <= valid_from:
            at(("rules", i, "valid_until"), "valid_until must be after valid_from")
        if rule.earn is not None:
            kind: Kind = "base" if rule.earn.kind == "per_currency_unit" else rule.earn.kind  # type: ignore[assignment]
            amount = {
                "base": rule.earn.per_currency_unit,
                "multiplier": rule.earn.multiplier,
                "points": Decimal(rule.earn.points) if rule.earn.points is not None else None,
            }[kind]
        else:
            kind, amount = "stamp", None
        if kind == "multiplier" and rule.stacking == "additive" and amount is not None and amount < 1:
            # Additive extra parts below zero stack: x0 and x0 on one item would give it negative points.
            at(
                ("rules", i, "earn", "multiplier"),
                "an additive multiplier must be at least 1",
                "use stacking: exclusive (or max) for a multiplier that lowers points",
            )
        if kind == "stamp" and rule.budget is not None:
            at(("rules", i, "budget"), "budget caps points, and a stamp rule gives none", "remove the budget")
        if rule.stamp is not None:
            first = cards.setdefault(rule.stamp.card, (i, rule.stamp.reward_at, rule.stamp.reward))
            if first[1:] != (rule.stamp.reward_at, rule.stamp.reward):
                at(
                    ("rules", i, "stamp"),
                    f"stamp card {rule.stamp.card!r} has a different reward_at or "
                    f"reward in rules[{first[0]}]",
                    "one card fills up one way: give this rule its own card",
                )
        lim = rule.limit
        checked.append(
            CheckedRule(
                index=i,
                id=rule.id,
                kind=kind,
                per_item=per_item,
                stacking=rule.stacking,
                when=when,
                where=where,
                amount=amount,
                stamp_card=rule.stamp.card if rule.stamp else None,
                stamp_count=count,
                stamp_reward_at=rule.stamp.reward_at if rule.stamp else None,
                stamp_reward=rule.stamp.reward if rule.stamp else None,
                per_member=lim.per_member if lim else None,
                per_day=lim.per_day if lim else None,
                per_transaction=lim.per_transaction if lim else None,
                budget=rule.budget,
                valid_from=valid_from,
                valid_until=valid_until,
                partners=frozenset(rule.partners) if rule.partners is not None else None,
                outlets=frozenset(rule.outlets) if rule.outlets is not None else None,
                holdout=rule.holdout,
            )
        )
    segments: list[tuple[str, Node]] = []
    for i, segment in enumerate(document.segments):
        if segment.name in segment_names[:i]:
            at(("segments", i, "name"), f"duplicate segment {segment.name!r}")
        node = expression(
            segment.when, ("segments", i, "when"), item_scope=False, want=BOOL, segment_scope=True
        )
        if node is not None:
            segments.append((segment.name, node))
    if issues:
        raise ProgramError(_sorted(issues))
    minor = minor_unit(document.currency)
    holdouts = tuple((r.id, r.holdout) for r in checked if r.holdout is not None)
    return CheckedProgram(
        document, tuple(checked), zone, minor, digest_of(document), tuple(segments), holdouts
    )


def _instant(value: datetime | date | None, zone: ZoneInfo) -> datetime | None:
    """A plain date means the start of that day in the program's timezone."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.combine(value, time(0), tzinfo=zone)


def _sorted(issues: list[Issue]) -> list[Issue]:
    return sorted(issues, key=lambda i: (i.line is None, i.line or 0, i.column or 0))


def load_program(text: str) -> CheckedProgram:
    """Parse, validate and check YAML or JSON text: the one call a caller needs."""
    data, source = doc.parse_text(text)
    try:
        document = doc.load_document(data, source)
    except ProgramError as exc:
        # Report the conditions' problems too, so one pass shows every error of the document.
        raise ProgramError(_sorted([*exc.issues, *_raw_condition_issues(data, source)])) from None
    return check_program(document, source)


def _raw_condition_issues(data: Any, source: doc.Source) -> list[Issue]:
    """Check the conditions of a document that failed validation, as far as its shape allows."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        return []
    tiers: tuple[str, ...] = ()
    levels = (data.get("tiers") or {}).get("levels") if isinstance(data.get("tiers"), dict) else None
    if isinstance(levels, list):
        tiers = tuple(str(lv["name"]) for lv in levels if isinstance(lv, dict) and "name" in lv)
    issues: list[Issue] = []
    for i, rule in enumerate(data["rules"]):
        if not isinstance(rule, dict):
            continue
        item_scope = rule.get("for_each") == "item"
        for key, scope in (("when", False), ("where", True)):
            text = rule.get(key)
            if not isinstance(text, str) or not text.strip():
                continue
            path: tuple[str | int, ...] = ("rules", i, key)
            loc = Located(text, doc.format_path(path), source.where(path), source.text)
            tree, found = parse_expression(loc)
            if tree is not None:
                _, found = check_expression(
                    tree, loc, item_scope=scope and item_scope, want=BOOL, tiers=tiers
                )
            issues.extend(found)
    return issues


def load_program_data(data: Any) -> CheckedProgram:
    """Validate and check an already-parsed document (a dict from JSON or Python)."""
    return check_program(doc.load_document(data))
