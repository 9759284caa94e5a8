"""What an evaluation reads: the transaction, its items, the member, the outlet, the event.

These are plain immutable values. The engine never fetches anything: the storage layer builds them
(balances, usage counters, stamp counts) and passes them in, so an evaluation is a pure function of
its inputs and can be recomputed later from what was recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

_EMPTY: Mapping[str, int] = MappingProxyType({})
_EMPTY_USES: Mapping[str, tuple[int, int]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Item:
    """One basket line. Money is in integer minor units (cents); quantity is a whole number."""

    sku: str
    unit_price: int
    quantity: int = 1
    category: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Transaction:
    """A purchase at an outlet; ``time`` must be timezone-aware."""

    time: datetime
    items: tuple[Item, ...] = ()
    channel: str = "till"


@dataclass(frozen=True, slots=True)
class Member:
    """The member as the engine sees them at the moment of the transaction.

    ``rule_uses`` maps a rule id to (applications ever, applications on the transaction's local day),
    so that ``limit`` can be enforced without the engine touching storage.
    """

    id: str = ""
    tier: str | None = None
    points: int = 0
    visits: int = 0
    last_visit_at: datetime | None = None
    enrolled_at: datetime | None = None
    tags: tuple[str, ...] = ()
    stamps: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    rule_uses: Mapping[str, tuple[int, int]] = field(default_factory=lambda: _EMPTY_USES)
    #: The segment the last segment run put the member in ("" before any run).
    segment: str = ""
    #: Ids of the rules whose control group the member is in (:func:`rules.campaigns.holdout_of`).
    holdout: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Customer:
    """A member's figures from their purchases, as the segment job computed them (read only by
    segment conditions). Money is in integer minor units; days may be fractional."""

    purchase_days: int = 0
    #: Net spend over the job's window.
    spend: int = 0
    days_since_purchase: float = 0.0
    #: RFM quintiles within the tenant, 1-5 (0: no purchase in the window).
    recency_score: int = 0
    frequency_score: int = 0
    monetary_score: int = 0
    #: The member's own typical days between purchase days (0 until they have a rhythm).
    interval_days: float = 0.0
    #: Days until their next visit is due by that rhythm; negative when overdue (0 without a rhythm).
    expected_visit_in_days: float = 0.0
    at_risk: bool = False
    #: BG/NBD's chance that they are still active (1 when the tenant could not be fitted).
    alive: float = 1.0
    #: Expected spend over the job's horizon (0 when the tenant could not be fitted).
    predicted_value: int = 0

    @property
    def rfm(self) -> str:
        return f"{self.recency_score}{self.frequency_score}{self.monetary_score}"


@dataclass(frozen=True, slots=True)
class Outlet:
    """Where the transaction happened; ``partner`` is the partner business's code."""

    id: str = ""
    partner: str = ""
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """What kind of thing happened: a ``purchase`` (the default), ``signup``, ``birthday``, ..."""

    kind: str = "purchase"
    name: str = ""
