"""Request shapes of the API: strict (unknown fields are errors), bounded, money in integer cents.

Responses are the domain layer's frozen dataclasses, serialised as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from loyalty.baskets import Basket, BasketItem
from rules.engine import MAX_ITEMS

Text = Annotated[str, Field(min_length=1, max_length=200)]
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
#: What a till sends after a scan or a typed entry: a card number, a card token, or the card URL.
CardCode = Annotated[str, Field(min_length=1, max_length=300)]
Id = Annotated[int, Field(ge=1, le=2**62)]
#: Largest single manual adjustment: a typo of a few zeros should not mint a fortune.
MAX_ADJUSTMENT = 1_000_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LookupRequest(Strict):
    code: CardCode = Field(description="Scanned card URL or token, or the typed card number.")


class PostTransactionRequest(Strict):
    card: CardCode = Field(description="Scanned card URL or token, or the typed card number.")
    external_id: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="The till's own receipt id; unique per outlet, so a receipt books once."
    )
    occurred_at: AwareDatetime = Field(description="When the purchase happened, with its UTC offset.")
    items: list[BasketItem] = Field(min_length=1, max_length=MAX_ITEMS)
    channel: Code = "till"


class RefundLine(Strict):
    line: Annotated[int, Field(ge=0, le=MAX_ITEMS)]
    quantity: Annotated[int, Field(ge=1, le=100_000)]


class RefundRequest(Strict):
    lines: list[RefundLine] | None = Field(
        default=None,
        max_length=MAX_ITEMS,
        description="Lines and quantities returned; omit to return everything.",
    )
    external_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None


class RedeemRequest(Strict):
    card: CardCode
    reward: Code
    transaction_id: Id | None = None


class ActivateRequest(Strict):
    card: CardCode


class PublishRequest(Strict):
    valid_from: AwareDatetime


class Period(Strict):
    since: AwareDatetime
    until: AwareDatetime


class SimulationRequest(Strict):
    basket: Basket


class PartnerCreate(Strict):
    code: Code
    name: Text


class OutletCreate(Strict):
    partner_id: Id
    code: Code
    name: Text
    tags: list[Code] = Field(default_factory=list, max_length=50)


class KeyCreate(Strict):
    role: Literal["admin", "marketer", "cashier"]
    name: Text
    outlet_id: Id | None = None


class AdjustmentCreate(Strict):
    points: Annotated[int, Field(ge=-MAX_ADJUSTMENT, le=MAX_ADJUSTMENT)]
    reason: Annotated[str, Field(min_length=3, max_length=500)]


class CardBatchCreate(Strict):
    count: Annotated[int, Field(ge=1, le=10_000)]
    outlet_id: Id | None = None


def aware(instant: datetime, name: str) -> datetime:
    """Refuse a naive instant from a query string: which day it means depends on a zone."""
    from api.problems import INVALID, Problem

    if instant.tzinfo is None or instant.utcoffset() is None:
        raise Problem(INVALID, f"{name} needs a UTC offset, e.g. 2026-01-01T00:00:00+01:00")
    return instant
