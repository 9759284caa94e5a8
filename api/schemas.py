"""Request shapes of the API: strict (unknown fields are errors), bounded, money in integer cents.

Responses are the domain layer's frozen dataclasses, serialised as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from litestar.params import PathParameter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.problems import INVALID, Problem
from loyalty.members import membership
from loyalty.points import posting, redemptions, refunds
from loyalty.points.baskets import MAX_YEAR, MIN_YEAR, Basket, BasketItem, Count, Instant
from rules.engine import MAX_ITEMS

Text = Annotated[str, Field(min_length=1, max_length=200)]
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
#: What a till sends after a scan or a typed entry: a card number, a card token, or the card URL.
CardCode = Annotated[str, Field(min_length=1, max_length=300)]
#: Row ids are 64-bit; larger numbers name nothing (and overflow the drivers).
MAX_ID = 2**62
Id = Annotated[Count, Field(ge=1, le=MAX_ID)]
#: An id in a path: the same bounds, so /members/99999999999999999999 is a 4xx, never a driver error.
PathId = Annotated[int, PathParameter(ge=1, le=MAX_ID)]
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
    occurred_at: Instant = Field(description="When the purchase happened, with its UTC offset.")
    items: list[BasketItem] = Field(min_length=1, max_length=MAX_ITEMS)
    channel: Code = "till"


class RefundLine(Strict):
    line: Annotated[Count, Field(ge=0, le=MAX_ITEMS)]
    quantity: Annotated[Count, Field(ge=1, le=100_000)]


class RefundRequest(Strict):
    lines: list[RefundLine] | None = Field(
        default=None,
        max_length=MAX_ITEMS,
        description="Lines and quantities returned; omit to return everything.",
    )
    external_id: Annotated[str, Field(min_length=1, max_length=100)] | None = None

    @model_validator(mode="after")
    def _each_line_once(self) -> RefundRequest:
        if self.lines is not None and len({line.line for line in self.lines}) != len(self.lines):
            raise ValueError("each line may appear once in a refund")
        return self


class RedeemRequest(Strict):
    card: CardCode
    reward: Code
    transaction_id: Id | None = None
    external_id: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None,
        description="The till's own id for this redemption: unique per outlet, so it books once.",
    )


class ActivateRequest(Strict):
    card: CardCode


class PublishRequest(Strict):
    valid_from: Instant


class Period(Strict):
    since: Instant
    until: Instant

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.until <= self.since:
            raise ValueError("until must be after since")
        return self


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
    points: Annotated[Count, Field(ge=-MAX_ADJUSTMENT, le=MAX_ADJUSTMENT)]
    reason: Annotated[str, Field(min_length=3, max_length=500)]


class CardBatchCreate(Strict):
    count: Annotated[Count, Field(ge=1, le=10_000)]
    outlet_id: Id | None = None


def instant(name: str, value: datetime) -> datetime:
    """A moment from a query parameter: aware and plausible."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise Problem(INVALID, f"{name} needs a UTC offset, e.g. 2026-01-01T00:00:00+01:00")
    if not MIN_YEAR < value.year < MAX_YEAR:
        raise Problem(INVALID, f"{name} must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return value


def period(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """A reporting period from query parameters: aware, plausible, and ending after it starts."""
    instant("since", since)
    instant("until", until)
    if until <= since:
        raise Problem(INVALID, "until must be after since")
    return since, until


# --- what the till writes answer (the bodies their retries replay, documented) ----------------------


@dataclass(frozen=True, slots=True)
class PostingAnswer:
    """A booked purchase and the member's figures right after it."""

    transaction: posting.Posting
    balance: membership.MemberView

    @classmethod
    def of(cls, done: posting.Posted) -> PostingAnswer:
        return cls(done.posting, done.member)


@dataclass(frozen=True, slots=True)
class RefundAnswer:
    refund: refunds.RefundResult
    balance: membership.MemberView

    @classmethod
    def of(cls, done: refunds.Refunded) -> RefundAnswer:
        return cls(done.refund, done.member)


@dataclass(frozen=True, slots=True)
class RedemptionAnswer:
    redemption: redemptions.RedemptionResult
    balance: membership.MemberView

    @classmethod
    def of(cls, done: redemptions.Redeemed) -> RedemptionAnswer:
        return cls(done.redemption, done.member)


@dataclass(frozen=True, slots=True)
class ActivationAnswer:
    """The card bound and its (new) member."""

    card: str
    member: membership.MemberView
