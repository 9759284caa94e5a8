"""The storage model: typed SQLAlchemy tables for tenants, programs, members, cards and the points ledger.

Design notes (why, not what):

* Every row carries ``tenant_id``; the hot rows (members, cards, transactions, items, lots, draws,
  ledger entries, redemptions, vouchers, stamp cards) also carry ``member_id`` and are indexed and
  foreign-keyed by ``(tenant_id, member_id)`` so the schema can later be distributed by member.
* The ledger is append-only double entry: :class:`LedgerEntry` rows are only ever inserted; the
  balance columns on :class:`Member` are a projection that always equals the sum of its entries
  (``debt`` holds what the member owes, the negated balance of the ``member_debt`` account).
  Entries that share ``(cause, ref_id)`` form one balanced set that sums to zero.
* A point lot's ``remaining`` equals ``earned`` minus its draws minus ``expired``; draws are append-only
  too (a cancelled redemption adds a negative draw), so the history of a lot can be replayed.
* CHECK constraints hold what must never happen, whatever code writes the rows.
* Instants are stored in UTC and always come back timezone-aware (SQLite keeps no zone).
* These classes describe the logical schema, which SQLite has exactly. On PostgreSQL, transactions,
  their items, ledger entries and events are partitioned by month (migration 0007): their keys
  include the month, a few keys into them are dropped and the till's receipt is kept unique by a side
  table; :mod:`loyalty.storage.partitions` lists every difference (Alembic's comparison skips them).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; naive values are refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: every instant must be timezone-aware")
        value = value.astimezone(UTC)
        # SQLite has no zone type; UTC text compares in instant order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Ids are 64-bit on PostgreSQL; SQLite needs INTEGER for an auto-incrementing rowid key.
Id = BigInteger().with_variant(Integer(), "sqlite")
#: Points and money (minor units) never fit a float; 64-bit integers hold any realistic sum.
Amount = BigInteger()

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Closed vocabularies, stored as short strings and held by CHECK constraints (portable and easy to migrate).
VERSION_STATES = ("draft", "published")
CARD_STATES = ("blank", "active", "blocked")
LOT_STATES = ("pending", "available", "expired")
#: Member-side accounts carry what the member holds; program-side accounts are their counterparts.
ACCOUNTS = (
    "member_available",
    "member_pending",
    "member_debt",
    "program_issued",
    "program_redeemed",
    "program_expired",
    "program_adjusted",
)
#: Why an entry or a draw was written. ``debt_payment`` names draws only: the ledger entries of a debt
#: payment belong to the set of the operation that brought the points (an earning, a release, ...).
CAUSES = (
    "earn",
    "release",
    "refund",
    "redemption",
    "redemption_cancel",
    "expiry",
    "adjustment",
    "debt_payment",
)
REDEMPTION_STATES = ("active", "cancelled")
#: ``revoked``: the purchase whose stamps filled the card was returned before the voucher was used.
VOUCHER_STATES = ("issued", "used", "revoked")
JOB_KINDS = ("release", "expiry", "tiers")
#: ``erased``: personal data removed on request, the books kept; ``merged``: closed into another member.
MEMBER_STATES = ("active", "erased", "merged")
ENDPOINT_STATES = ("active", "disabled")
#: ``dead``: retries gave up (the dead-letter state); an operator may redeliver it.
DELIVERY_STATES = ("pending", "delivered", "dead")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        int: Amount,
        str: String(200),
        datetime: UTCDateTime(),
        date: Date(),
        dict[str, Any]: JSON().with_variant(JSONB(), "postgresql"),
        list[str]: JSON().with_variant(JSONB(), "postgresql"),
    }


def _tenant() -> Mapped[int]:
    return mapped_column(Id, ForeignKey("tenants.id"), index=False)


def _member_fk(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["tenant_id", "member_id"],
        ["members.tenant_id", "members.id"],
        name=f"fk_{table}_tenant_id_member_id_members",
    )


class Tenant(Base):
    """A business running a loyalty program."""

    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str]
    #: Digits that start every card number printed for this tenant.
    card_prefix: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime]
    __table_args__ = (CheckConstraint("length(card_prefix) BETWEEN 1 AND 8", name="card_prefix"),)


class Program(Base):
    """The tenant's program; its content lives in versions."""

    __tablename__ = "programs"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    name: Mapped[str]
    created_at: Mapped[datetime]
    # One program per tenant (DESIGN: "a business runs a program"); the table leaves room for more.
    __table_args__ = (UniqueConstraint("tenant_id"),)


class ProgramVersion(Base):
    """A version of the program document. Drafts change; published versions never do."""

    __tablename__ = "program_versions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    program_id: Mapped[int] = mapped_column(Id, ForeignKey("programs.id"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    document: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str]
    published_at: Mapped[datetime | None]
    published_by: Mapped[str | None]
    __table_args__ = (
        UniqueConstraint("program_id", "number"),
        CheckConstraint(_in("status", VERSION_STATES), name="status"),
        CheckConstraint(
            "status = 'draft' OR (valid_from IS NOT NULL AND published_at IS NOT NULL)",
            name="published_has_valid_from",
        ),
        Index(None, "tenant_id", "program_id", "status", "valid_from"),
    )


class Partner(Base):
    """A partner business whose outlets take part in the program."""

    __tablename__ = "partners"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str]
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)


class Outlet(Base):
    """A shop or till location of a partner."""

    __tablename__ = "outlets"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    partner_id: Mapped[int] = mapped_column(Id, ForeignKey("partners.id"))
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str]
    tags: Mapped[list[str]]
    __table_args__ = (UniqueConstraint("tenant_id", "code"),)


class Member(Base):
    """A member and the projection of their accounts (kept equal to the sum of their ledger entries)."""

    __tablename__ = "members"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    tier: Mapped[str | None] = mapped_column(String(64))
    tier_since: Mapped[datetime | None]
    available: Mapped[int] = mapped_column(default=0)
    pending: Mapped[int] = mapped_column(default=0)
    debt: Mapped[int] = mapped_column(default=0)
    visits: Mapped[int] = mapped_column(default=0)
    last_visit_at: Mapped[datetime | None]
    enrolled_at: Mapped[datetime]
    tags: Mapped[list[str]]
    #: Moves on with every change of the member's balances, lots, stamps or tier: a write that read
    #: the member without a lock goes through only if the revision is still the one it read.
    revision: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    #: The segment the last segment run put the member in ("" before any); rules read it.
    segment: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: Marketing consent as last recorded (its history is in ``consents``): marketing events (expiry
    #: reminders, segment changes) are emitted only for members who consented.
    marketing_consent: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    state: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    #: When the member was erased or merged; ``merged_into``: the member that holds their account now.
    closed_at: Mapped[datetime | None]
    merged_into: Mapped[int | None] = mapped_column(Id)
    __table_args__ = (
        UniqueConstraint("tenant_id", "id"),
        CheckConstraint(_in("state", MEMBER_STATES), name="state"),
        CheckConstraint("(state = 'merged') = (merged_into IS NOT NULL)", name="merged_into"),
        CheckConstraint("available >= 0", name="available_not_negative"),
        CheckConstraint("pending >= 0", name="pending_not_negative"),
        CheckConstraint("debt >= 0", name="debt_not_negative"),
        CheckConstraint("visits >= 0", name="visits_not_negative"),
    )


class Card(Base):
    """A printed card: blank until first use, then bound to one member."""

    __tablename__ = "cards"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int | None] = mapped_column(Id)
    number: Mapped[str] = mapped_column(String(32))
    serial: Mapped[int]
    state: Mapped[str] = mapped_column(String(16))
    outlet_id: Mapped[int | None] = mapped_column(Id, ForeignKey("outlets.id"))
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("tenant_id", "number"),
        _member_fk("cards"),
        Index(None, "tenant_id", "member_id"),
        CheckConstraint(_in("state", CARD_STATES), name="state"),
        CheckConstraint("state <> 'blank' OR member_id IS NULL", name="blank_has_no_member"),
        CheckConstraint("state <> 'active' OR member_id IS NOT NULL", name="active_has_member"),
    )


class CardBatch(Base):
    """An order of blank cards for printing: the serials ``first_serial`` .. ``first_serial + count - 1``."""

    __tablename__ = "card_batches"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    outlet_id: Mapped[int | None] = mapped_column(Id, ForeignKey("outlets.id"))
    first_serial: Mapped[int]
    count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    created_by: Mapped[str]
    __table_args__ = (
        UniqueConstraint("tenant_id", "first_serial"),
        CheckConstraint("count > 0", name="count_positive"),
    )


class Transaction(Base):
    """A posted purchase: what the till sent, what it earned, and the program version that priced it."""

    __tablename__ = "transactions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    outlet_id: Mapped[int] = mapped_column(Id, ForeignKey("outlets.id"))
    #: The till's own receipt id: unique per outlet, so a receipt books once however often it is sent.
    external_id: Mapped[str] = mapped_column(String(100))
    channel: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime]
    posted_at: Mapped[datetime]
    program_version_id: Mapped[int] = mapped_column(Id, ForeignKey("program_versions.id"))
    amount: Mapped[int]
    points: Mapped[int]
    amount_refunded: Mapped[int] = mapped_column(default=0)
    points_refunded: Mapped[int] = mapped_column(default=0)
    #: rules.Result.as_dict() with the explanation: enough to explain and recompute the result.
    evaluation: Mapped[dict[str, Any]]
    #: When the item lines lost what the books do not need (an erasure, or the retention job): the
    #: purchase can no longer be re-evaluated, only checked against its recorded points.
    detail_purged_at: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("tenant_id", "outlet_id", "external_id"),
        UniqueConstraint("tenant_id", "member_id", "id"),
        _member_fk("transactions"),
        Index(None, "tenant_id", "member_id", "occurred_at"),
        Index(None, "tenant_id", "occurred_at"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        CheckConstraint("points >= 0", name="points_not_negative"),
        CheckConstraint("amount_refunded BETWEEN 0 AND amount", name="amount_refunded_within"),
        CheckConstraint("points_refunded BETWEEN 0 AND points", name="points_refunded_within"),
    )


class TransactionItem(Base):
    """One basket line with the points it earned and how much of it was returned."""

    __tablename__ = "transaction_items"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    transaction_id: Mapped[int] = mapped_column(Id, ForeignKey("transactions.id"))
    line: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64))
    tags: Mapped[list[str]]
    unit_price: Mapped[int]
    quantity: Mapped[int]
    points: Mapped[int]
    refunded_quantity: Mapped[int] = mapped_column(default=0)
    __table_args__ = (
        UniqueConstraint("transaction_id", "line"),
        Index(None, "tenant_id", "member_id"),
        CheckConstraint("unit_price >= 0 AND quantity >= 0", name="line_not_negative"),
        CheckConstraint("refunded_quantity BETWEEN 0 AND quantity", name="refund_within_quantity"),
    )


class PointLot(Base):
    """Points earned together, spent and expired together: what makes expiry exact."""

    __tablename__ = "point_lots"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    transaction_id: Mapped[int | None] = mapped_column(Id, ForeignKey("transactions.id"))
    adjustment_id: Mapped[int | None] = mapped_column(Id, ForeignKey("adjustments.id"))
    state: Mapped[str] = mapped_column(String(16))
    earned: Mapped[int]
    remaining: Mapped[int]
    expired: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    pending_until: Mapped[datetime]
    #: The end of the month the policy names, in the program's time zone; None: never expires.
    expires_at: Mapped[datetime | None]
    __table_args__ = (
        _member_fk("point_lots"),
        Index(None, "tenant_id", "member_id", "state", "expires_at"),
        Index(None, "tenant_id", "state", "expires_at"),
        Index(None, "tenant_id", "state", "pending_until"),
        Index(None, "transaction_id"),
        CheckConstraint(_in("state", LOT_STATES), name="state"),
        CheckConstraint("earned > 0", name="earned_positive"),
        CheckConstraint("remaining >= 0 AND expired >= 0", name="not_negative"),
        CheckConstraint("remaining + expired <= earned", name="within_earned"),
        CheckConstraint("state <> 'expired' OR remaining = 0", name="expired_is_empty"),
    )


class LotDraw(Base):
    """Points taken from a lot (or, negative, given back to it) and why."""

    __tablename__ = "lot_draws"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    lot_id: Mapped[int] = mapped_column(Id, ForeignKey("point_lots.id"))
    amount: Mapped[int]
    cause: Mapped[str] = mapped_column(String(32))
    ref_id: Mapped[int] = mapped_column(Id)
    created_at: Mapped[datetime]
    __table_args__ = (
        Index(None, "tenant_id", "member_id"),
        Index(None, "lot_id"),
        Index(None, "cause", "ref_id"),
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        CheckConstraint(_in("cause", CAUSES), name="cause"),
    )


class LedgerEntry(Base):
    """One signed movement on one account; the entries of one (cause, ref_id) sum to zero."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    account: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int]
    cause: Mapped[str] = mapped_column(String(32))
    #: Id of the transaction, refund, redemption, adjustment or job run the cause names.
    ref_id: Mapped[int] = mapped_column(Id)
    created_at: Mapped[datetime]
    __table_args__ = (
        _member_fk("ledger_entries"),
        Index(None, "tenant_id", "member_id", "id"),
        Index(None, "tenant_id", "created_at"),
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        CheckConstraint(_in("account", ACCOUNTS), name="account"),
        CheckConstraint(_in("cause", CAUSES), name="cause"),
    )


class Refund(Base):
    """A return of some or all items of a transaction."""

    __tablename__ = "refunds"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    transaction_id: Mapped[int] = mapped_column(Id, ForeignKey("transactions.id"))
    external_id: Mapped[str | None] = mapped_column(String(100))
    points: Mapped[int]
    amount: Mapped[int]
    #: Of ``points``: taken back from lots, and left as debt because they had been spent.
    debt: Mapped[int]
    created_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("tenant_id", "transaction_id", "external_id"),
        _member_fk("refunds"),
        CheckConstraint("points >= 0 AND amount >= 0 AND debt BETWEEN 0 AND points", name="amounts"),
    )


class RefundItem(Base):
    """How many units of one line a refund returned and the points that reversed."""

    __tablename__ = "refund_items"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    refund_id: Mapped[int] = mapped_column(Id, ForeignKey("refunds.id"))
    line: Mapped[int] = mapped_column(Integer)
    quantity: Mapped[int]
    points: Mapped[int]
    __table_args__ = (
        UniqueConstraint("refund_id", "line"),
        CheckConstraint("quantity > 0 AND points >= 0", name="amounts"),
    )


class Adjustment(Base):
    """A manual correction by an admin, always with a reason and the actor."""

    __tablename__ = "adjustments"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    points: Mapped[int]
    reason: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str]
    created_at: Mapped[datetime]
    __table_args__ = (
        _member_fk("adjustments"),
        CheckConstraint("points <> 0", name="points_not_zero"),
        CheckConstraint("length(reason) > 0 AND length(actor) > 0", name="reason_and_actor"),
    )


class Redemption(Base):
    """A reward taken: for points (``cost``) or for a voucher (cost 0)."""

    __tablename__ = "redemptions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    reward_code: Mapped[str] = mapped_column(String(64))
    cost: Mapped[int]
    status: Mapped[str] = mapped_column(String(16))
    outlet_id: Mapped[int | None] = mapped_column(Id, ForeignKey("outlets.id"))
    transaction_id: Mapped[int | None] = mapped_column(Id, ForeignKey("transactions.id"))
    voucher_id: Mapped[int | None] = mapped_column(Id, ForeignKey("vouchers.id"))
    #: The till's own id for this redemption (or one derived from its Idempotency-Key): a retry books
    #: once even after the idempotency record has expired.
    external_id: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("tenant_id", "outlet_id", "external_id"),
        _member_fk("redemptions"),
        Index(None, "tenant_id", "member_id"),
        CheckConstraint("cost >= 0", name="cost_not_negative"),
        CheckConstraint(_in("status", REDEMPTION_STATES), name="status"),
        CheckConstraint("(status = 'cancelled') = (cancelled_at IS NOT NULL)", name="cancelled_at"),
    )


class Voucher(Base):
    """A reward issued by a full stamp card, used at most once."""

    __tablename__ = "vouchers"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    reward_code: Mapped[str] = mapped_column(String(64))
    card: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    transaction_id: Mapped[int] = mapped_column(Id, ForeignKey("transactions.id"))
    issued_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    __table_args__ = (
        _member_fk("vouchers"),
        Index(None, "tenant_id", "member_id", "status"),
        CheckConstraint(_in("status", VOUCHER_STATES), name="status"),
        CheckConstraint("(status = 'used') = (used_at IS NOT NULL)", name="used_at"),
    )


class StampCard(Base):
    """Stamps a member holds on one card kind (full cards have already turned into vouchers)."""

    __tablename__ = "stamp_cards"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    card: Mapped[str] = mapped_column(String(64))
    stamps: Mapped[int]
    updated_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("tenant_id", "member_id", "card"),
        _member_fk("stamp_cards"),
        CheckConstraint("stamps >= 0", name="stamps_not_negative"),
    )


class RuleUse(Base):
    """How often a limited rule applied to a member, ever."""

    __tablename__ = "rule_uses"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    rule_id: Mapped[str] = mapped_column(String(64))
    uses: Mapped[int]
    __table_args__ = (
        UniqueConstraint("tenant_id", "member_id", "rule_id"),
        _member_fk("rule_uses"),
        CheckConstraint("uses >= 0", name="not_negative"),
    )


class RuleDayUse(Base):
    """How often a limited rule applied to a member on one day (the program's local day): a receipt
    posted late for an earlier day counts on that day, not on the last one."""

    __tablename__ = "rule_day_uses"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    rule_id: Mapped[str] = mapped_column(String(64))
    day: Mapped[date]
    uses: Mapped[int]
    __table_args__ = (
        UniqueConstraint("tenant_id", "member_id", "rule_id", "day"),
        _member_fk("rule_day_uses"),
        CheckConstraint("uses >= 0", name="not_negative"),
    )


class RuleBudget(Base):
    """Points a budgeted rule has given, across all members (a rule's id spans versions)."""

    __tablename__ = "rule_budgets"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    program_id: Mapped[int] = mapped_column(Id, ForeignKey("programs.id"))
    rule_id: Mapped[str] = mapped_column(String(64))
    points_used: Mapped[int]
    __table_args__ = (UniqueConstraint("tenant_id", "program_id", "rule_id"),)


class TierChange(Base):
    """One change of a member's tier: upgrades on earning, downgrades only at evaluation."""

    __tablename__ = "tier_history"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    from_tier: Mapped[str | None] = mapped_column(String(64))
    to_tier: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    #: The qualifying figure (points, minor units of spend, or visits) that decided the change.
    qualifying: Mapped[int]
    at: Mapped[datetime]
    __table_args__ = (_member_fk("tier_history"), Index(None, "tenant_id", "member_id", "at"))


class JobRun(Base):
    """One run of a batch job; ledger entries of release and expiry name it as their cause."""

    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    kind: Mapped[str] = mapped_column(String(16))
    as_of: Mapped[datetime]
    lots: Mapped[int] = mapped_column(default=0)
    points: Mapped[int] = mapped_column(default=0)
    members: Mapped[int] = mapped_column(default=0)
    __table_args__ = (CheckConstraint(_in("kind", JOB_KINDS), name="kind"),)


class MemberFigures(Base):
    """A member's customer figures as the last segment run computed them (one row per purchasing
    member, replaced at each run)."""

    __tablename__ = "member_figures"
    tenant_id: Mapped[int] = mapped_column(Id, ForeignKey("tenants.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(Id, primary_key=True)
    computed_at: Mapped[datetime]
    purchase_days: Mapped[int]
    first_purchase_at: Mapped[datetime]
    last_purchase_at: Mapped[datetime]
    spend: Mapped[int]
    recency_score: Mapped[int]
    frequency_score: Mapped[int]
    monetary_score: Mapped[int]
    interval_days: Mapped[float | None] = mapped_column(Float)
    expected_visit_in_days: Mapped[float | None] = mapped_column(Float)
    at_risk: Mapped[bool]
    alive: Mapped[float | None] = mapped_column(Float)
    predicted_value: Mapped[int | None]
    segment: Mapped[str] = mapped_column(String(64))
    __table_args__ = (
        _member_fk("member_figures"),
        Index(None, "tenant_id", "segment"),
    )


class SegmentRun(Base):
    """One segment run: when, how many members, how many moved, and each segment's size after it
    (the dashboard's segment sizes over time)."""

    __tablename__ = "segment_runs"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    at: Mapped[datetime]
    members: Mapped[int]
    moves: Mapped[int]
    fitted: Mapped[bool]
    #: Segment name -> members ("" for members in no segment).
    sizes: Mapped[dict[str, Any]]
    __table_args__ = (Index(None, "tenant_id", "at"),)


class SegmentMove(Base):
    """A member's move from one segment to another at a segment run: the segments' history."""

    __tablename__ = "segment_moves"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    at: Mapped[datetime]
    from_segment: Mapped[str] = mapped_column(String(64))
    to_segment: Mapped[str] = mapped_column(String(64))
    __table_args__ = (
        _member_fk("segment_moves"),
        Index(None, "tenant_id", "at"),
        Index(None, "tenant_id", "member_id", "at"),
    )


class Consent(Base):
    """A recorded change of a member's marketing consent: what, when, and from where."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    marketing: Mapped[bool]
    at: Mapped[datetime]
    #: Where the member gave or withdrew it (``till``, ``app``, ``web``, ``import``, ...).
    source: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str]
    __table_args__ = (_member_fk("consents"), Index(None, "tenant_id", "member_id", "at"))


class Event(Base):
    """An event for other systems (the outbox): written in the same transaction as the change it
    tells of, so there is no event without its change and no change without its event. The
    dispatcher fans each out into one delivery per subscribed endpoint, then marks it dispatched."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    member_id: Mapped[int] = mapped_column(Id)
    #: ``purchase.posted``, ``tier.changed``, ... (see ``loyalty.storage.outbox.CATALOGUE``).
    type: Mapped[str] = mapped_column(String(64))
    #: The version of the type's schema that ``data`` follows.
    version: Mapped[int] = mapped_column(Integer)
    occurred_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]
    dispatched: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    __table_args__ = (
        _member_fk("events"),
        # Each index is paid by every posting (an event per purchase): only the member's (export,
        # erasure, reminders) and the dispatcher's. A tenant-wide time index cost a till post ~0.3 ms
        # of PostgreSQL's CPU (load_till) and nothing reads by it.
        Index(None, "tenant_id", "member_id", "id"),
        # What the dispatcher has not fanned out yet: a small index however long the history.
        Index(
            "ix_events_undispatched",
            "id",
            postgresql_where=text("NOT dispatched"),
            sqlite_where=text("NOT dispatched"),
        ),
    )


class WebhookEndpoint(Base):
    """Where a tenant wants its events: a URL, the event types it takes (all when empty), and the
    signing secret (Standard Webhooks ``whsec_...``); after a rotation the previous secret signs too
    until ``previous_until``, so a receiver can switch without losing a message."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]]
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_until: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    created_by: Mapped[str]
    updated_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("tenant_id", "id"),
        CheckConstraint(_in("state", ENDPOINT_STATES), name="state"),
    )


class WebhookDelivery(Base):
    """One event on its way to one endpoint: pending until the endpoint answers 2xx, dead after the
    retries gave up. Per endpoint and member, only the oldest pending delivery is attempted, so a
    member's events arrive in order."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    endpoint_id: Mapped[int] = mapped_column(Id, ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[int] = mapped_column(Id, ForeignKey("events.id"))
    member_id: Mapped[int] = mapped_column(Id)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: When it is due next; a dispatcher that takes it moves this past its lease, so a dispatcher
    #: killed mid-delivery leaves it due again (at-least-once).
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None]
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        CheckConstraint(_in("state", DELIVERY_STATES), name="state"),
        Index(None, "tenant_id", "endpoint_id", "id"),
        Index(None, "tenant_id", "member_id"),
        Index(
            "ix_webhook_deliveries_pending",
            "endpoint_id",
            "member_id",
            "event_id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
    )


class WebhookAttempt(Base):
    """One try of a delivery: when, the HTTP status (None: no answer), how long, and what failed."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    delivery_id: Mapped[int] = mapped_column(Id, ForeignKey("webhook_deliveries.id"))
    at: Mapped[datetime]
    status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    __table_args__ = (Index(None, "delivery_id"), Index(None, "tenant_id", "at"))


class AuditEntry(Base):
    """A change made by a marketer or an admin: who, what, when."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    actor: Mapped[str]
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    at: Mapped[datetime]
    __table_args__ = (Index(None, "tenant_id", "at"),)


#: Every module that declares tables on :class:`Base` (API keys and idempotency records live with the
#: access code that uses them). Migrations and the schema check load them all.
MODEL_MODULES = ("loyalty.storage.models", "loyalty.admin.access")


def load_all() -> MetaData:
    """Import every module with tables and return the complete metadata."""
    import importlib

    for name in MODEL_MODULES:
        importlib.import_module(name)
    return Base.metadata
