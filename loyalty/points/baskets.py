"""A basket as a till or a marketer sends it (JSON), validated and turned into engine inputs.

The same shape serves ``loyalty simulate`` and the API: money in integer cents, an aware ``occurred_at``,
bounded sizes, and no unknown fields, so a typo is an error rather than silently ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

from rules.context import Event, Item, Member, Outlet, Transaction
from rules.engine import MAX_ITEMS, MAX_QUANTITY, MAX_UNIT_PRICE

#: Instants a client may send: far outside this a date is a typo, and near year 1 or 9999 converting it
#: to UTC or to the program's zone overflows.
MIN_YEAR, MAX_YEAR = 1970, 2200


def _plausible(instant: datetime) -> datetime:
    year = instant.astimezone(UTC).year if MIN_YEAR < instant.year < MAX_YEAR else instant.year
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return instant


#: An aware instant within the plausible years.
Instant = Annotated[AwareDatetime, AfterValidator(_plausible)]


def _whole_number(value: object) -> object:
    # A check of its own: Litestar validates in lax mode, which overrides a field's strict=True.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be a whole number (not a string, decimal or boolean)")
    return value


#: Integers are integers: "450" or true is refused rather than coerced (pydantic's lax mode would).
Count = Annotated[int, BeforeValidator(_whole_number)]
Code = Annotated[str, Field(min_length=1, max_length=64)]
Tag = Annotated[str, Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BasketItem(_Strict):
    sku: Code
    category: Annotated[str, Field(max_length=64)] = ""
    quantity: Count = Field(default=1, ge=1, le=MAX_QUANTITY)
    unit_price: Count = Field(ge=0, le=MAX_UNIT_PRICE, description="price of one unit in minor units (cents)")
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class BasketMember(_Strict):
    """What the engine should assume about the member (for simulations without a stored member)."""

    id: Annotated[str, Field(max_length=64)] = "simulated"
    tier: Code | None = None
    points: Count = Field(default=0, ge=0, le=10**12)
    visits: Count = Field(default=0, ge=0, le=10**9)
    last_visit_at: Instant | None = None
    enrolled_at: Instant | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    stamps: dict[Code, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=50)


class BasketOutlet(_Strict):
    id: Annotated[str, Field(max_length=64)] = ""
    partner: Annotated[str, Field(max_length=64)] = ""
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class Basket(_Strict):
    occurred_at: Instant
    items: list[BasketItem] = Field(max_length=MAX_ITEMS)
    channel: Code = "till"
    event: Code = "purchase"
    member: BasketMember = BasketMember()
    outlet: BasketOutlet = BasketOutlet()

    def transaction(self) -> Transaction:
        return Transaction(
            time=self.occurred_at,
            items=tuple(Item(i.sku, i.unit_price, i.quantity, i.category, tuple(i.tags)) for i in self.items),
            channel=self.channel,
        )

    def engine_member(self) -> Member:
        m = self.member
        return Member(
            id=m.id,
            tier=m.tier,
            points=m.points,
            visits=m.visits,
            last_visit_at=m.last_visit_at,
            enrolled_at=m.enrolled_at,
            tags=tuple(m.tags),
            stamps=dict(m.stamps),
        )

    def engine_outlet(self) -> Outlet:
        return Outlet(self.outlet.id, self.outlet.partner, tuple(self.outlet.tags))

    def engine_event(self) -> Event:
        return Event(kind=self.event)


def when(value: datetime) -> str:
    """How a timestamp is shown to people: local ISO time with offset, to the minute."""
    return value.isoformat(timespec="minutes")
