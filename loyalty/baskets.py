"""A basket as a till or a marketer sends it (JSON), validated and turned into engine inputs.

The same shape serves ``loyalty simulate`` and the API: money in integer cents, an aware ``occurred_at``,
bounded sizes, and no unknown fields, so a typo is an error rather than silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rules.context import Event, Item, Member, Outlet, Transaction
from rules.engine import MAX_ITEMS, MAX_QUANTITY, MAX_UNIT_PRICE

Code = Annotated[str, Field(min_length=1, max_length=64)]
Tag = Annotated[str, Field(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BasketItem(_Strict):
    sku: Code
    category: Annotated[str, Field(max_length=64)] = ""
    quantity: int = Field(default=1, ge=1, le=MAX_QUANTITY)
    unit_price: int = Field(ge=0, le=MAX_UNIT_PRICE, description="price of one unit in minor units (cents)")
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class BasketMember(_Strict):
    """What the engine should assume about the member (for simulations without a stored member)."""

    id: Annotated[str, Field(max_length=64)] = "simulated"
    tier: Code | None = None
    points: int = Field(default=0, ge=0)
    visits: int = Field(default=0, ge=0)
    last_visit_at: AwareDatetime | None = None
    enrolled_at: AwareDatetime | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    stamps: dict[Code, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=50)


class BasketOutlet(_Strict):
    id: Annotated[str, Field(max_length=64)] = ""
    partner: Annotated[str, Field(max_length=64)] = ""
    tags: list[Tag] = Field(default_factory=list, max_length=50)


class Basket(_Strict):
    occurred_at: AwareDatetime
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
