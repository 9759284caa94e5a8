"""The typed schema of what conditions may read: value types, context fields and functions.

The checker resolves every name against these tables; the emitter turns each resolved field into the
code template given here. Nothing outside these tables is reachable from a condition.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Type:
    """A value type of the expression language: a scalar, a list of a type, or a record."""

    name: str
    element: Type | None = None

    def __str__(self) -> str:
        return f"list of {self.element}" if self.element is not None else self.name

    @property
    def is_list(self) -> bool:
        return self.element is not None


NUMBER = Type("number")
STRING = Type("string")
BOOL = Type("boolean")
DATETIME = Type("datetime")
DATE = Type("date")
ITEM = Type("item")
#: Produced when a subexpression already has an error, so one mistake is reported once.
ERROR = Type("error")


def list_of(element: Type) -> Type:
    return Type("list", element)


@dataclass(frozen=True, slots=True)
class Field:
    """A readable field: its type and the Python code that reads it inside generated functions."""

    type: Type
    code: str
    doc: str


# Names the generated code binds: ``tx``, ``item``, ``member``, ``outlet``, ``event`` are the inputs of
# rules/context.py; names starting with an underscore are locals computed once per evaluation.
FIELDS: dict[str, dict[str, Field]] = {
    "tx": {
        "time": Field(DATETIME, "tx.time", "when the purchase happened"),
        "total": Field(NUMBER, "_tx_total", "basket total in currency units"),
        "items": Field(list_of(ITEM), "_items", "the basket lines"),
        "channel": Field(STRING, "tx.channel", "till, web, app, ..."),
    },
    "item": {
        "sku": Field(STRING, "item.sku", "stock-keeping unit"),
        "category": Field(STRING, "item.category", "product category"),
        "quantity": Field(NUMBER, "item.quantity", "units on the line"),
        "unit_price": Field(NUMBER, "(item.unit_price * _MINOR)", "price of one unit, currency units"),
        "amount": Field(NUMBER, "(item.unit_price * item.quantity * _MINOR)", "line amount, currency units"),
        "tags": Field(list_of(STRING), "item.tags", "free-form product tags"),
    },
    "member": {
        "id": Field(STRING, "member.id", "member id"),
        "tier": Field(STRING, "_tier", "current tier name ('' without tiers)"),
        "points": Field(NUMBER, "member.points", "available points before this transaction"),
        "visits": Field(NUMBER, "member.visits", "purchases before this one"),
        "days_since_last_visit": Field(NUMBER, "_days_since_last_visit", "whole days; 0 on a first visit"),
        "days_since_enrolled": Field(NUMBER, "_days_since_enrolled", "whole days since enrolment"),
        "tags": Field(list_of(STRING), "member.tags", "free-form member tags"),
        "segment": Field(STRING, "member.segment", "segment of the last segment run ('' before one)"),
    },
    "customer": {
        "purchase_days": Field(NUMBER, "customer.purchase_days", "days with a purchase in the window"),
        "spend": Field(NUMBER, "(customer.spend * _MINOR)", "net spend in the window, currency units"),
        "days_since_purchase": Field(NUMBER, "customer.days_since_purchase", "days since the last purchase"),
        "recency_score": Field(
            NUMBER, "customer.recency_score", "RFM recency quintile, 1-5 (5: most recent)"
        ),
        "frequency_score": Field(NUMBER, "customer.frequency_score", "RFM frequency quintile, 1-5"),
        "monetary_score": Field(NUMBER, "customer.monetary_score", "RFM monetary quintile, 1-5"),
        "rfm": Field(STRING, "customer.rfm", "the three scores as text, e.g. '455'"),
        "interval_days": Field(NUMBER, "customer.interval_days", "own typical days between purchase days"),
        "expected_visit_in_days": Field(
            NUMBER, "customer.expected_visit_in_days", "days until the next visit is due; negative: overdue"
        ),
        "at_risk": Field(BOOL, "customer.at_risk", "silent for longer than their own rhythm allows"),
        "alive": Field(NUMBER, "customer.alive", "BG/NBD probability of still being active, 0-1"),
        "predicted_value": Field(
            NUMBER, "(customer.predicted_value * _MINOR)", "expected spend over the horizon, currency units"
        ),
    },
    "outlet": {
        "id": Field(STRING, "outlet.id", "outlet code"),
        "partner": Field(STRING, "outlet.partner", "partner code"),
        "tags": Field(list_of(STRING), "outlet.tags", "outlet tags (region, format, ...)"),
    },
    "event": {
        "kind": Field(STRING, "event.kind", "purchase, signup, birthday, ..."),
        "name": Field(STRING, "event.name", "free-form event name"),
    },
}

#: Context roots readable only inside ``for_each: item`` rules.
ITEM_ONLY_ROOTS = frozenset({"item"})
#: Context roots readable only by segment conditions (the figures exist at a segment run, not at a till).
SEGMENT_ONLY_ROOTS = frozenset({"customer"})
#: What a segment condition may read: a segment run has no transaction, outlet or event.
SEGMENT_ROOTS = frozenset({"member", "customer"})

#: What ``days_since_last_visit`` reads on a first visit: a newcomer is not "coming back".
NEVER_DAYS = 0


@dataclass(frozen=True, slots=True)
class Function:
    """A callable of the language; ``signatures`` lists the accepted argument types and the result."""

    name: str
    doc: str


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("weekday", "weekday(datetime) -> 'mon'..'sun' in the program's timezone"),
        Function("hour", "hour(datetime) -> 0..23 in the program's timezone"),
        Function("date", "date(datetime) -> local date; date('2026-12-24') -> that date"),
        Function("days_since", "days_since(datetime or date) -> whole days until the evaluation time"),
        Function("count", "count(list) -> length; count(list, value) -> occurrences of value"),
        Function("sum", "sum(list of numbers) -> number"),
        Function("any", "any(list of booleans); any(list, list) -> an element of the first is in the second"),
        Function("min", "min(list of numbers) or min(a, b, ...)"),
        Function("max", "max(list of numbers) or max(a, b, ...)"),
        Function("lower", "lower(string) -> string in lower case"),
    )
}

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
