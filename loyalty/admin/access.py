"""API keys and idempotency records: who may call, and what a retried till request already did.

Keys are high-entropy random secrets, so a fast hash (SHA-256) is the right store: there is nothing
to brute-force. The key's public part carries its row id, so verifying costs one primary-key lookup
and a constant-time compare. The secret is returned once, at creation, and never stored.

Idempotency follows the IETF Idempotency-Key draft: a retry with the same body gets the stored
response, with another body a mismatch error, and while the first is still running an in-progress
error. Records are kept at least ``IDEMPOTENCY_TTL``.

A ledger write records its answer in its own database transaction (:class:`Answer`): the record and
the write commit together or not at all, so a retry after a commit always replays the answer, and a
retry after a crash before the commit runs the request afresh. Other writes claim the key first
(:func:`claim`) and store the answer after their transaction (:func:`complete`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from loyalty.errors import Conflict, InvalidInput, LoyaltyError, NotFound
from loyalty.storage.db import Database
from loyalty.storage.models import Base, Id, Outlet, _in

if TYPE_CHECKING:
    from loyalty.ledger.book import Booking
    from loyalty.ledger.store import Unit

T = TypeVar("T")

ROLES = ("admin", "marketer", "cashier")
#: Prefix of every key, so a leaked key is recognisable by secret scanners.
KEY_PREFIX = "lk"
#: Retries are answered from the stored response for at least this long (the draft asks for 24 h).
IDEMPOTENCY_TTL = timedelta(hours=48)
#: A running claim older than this is considered abandoned (its worker died) and may be retried.
IDEMPOTENCY_LEASE = timedelta(seconds=60)
#: Longest Idempotency-Key value accepted.
MAX_IDEMPOTENCY_KEY = 255


class ApiKey(Base):
    """An API key of one tenant: a role and, for cashiers, the outlet it acts for."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Id, ForeignKey("tenants.id"))
    role: Mapped[str] = mapped_column(String(16))
    outlet_id: Mapped[int | None] = mapped_column(Id, ForeignKey("outlets.id"))
    name: Mapped[str]
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by: Mapped[str]
    revoked_at: Mapped[datetime | None]
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role"),
        CheckConstraint("(role = 'cashier') = (outlet_id IS NOT NULL)", name="cashier_has_outlet"),
        Index(None, "tenant_id", "role"),
    )


class IdempotencyRecord(Base):
    """The first response to a (key, Idempotency-Key) pair, replayed to retries."""

    __tablename__ = "idempotency_records"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Id, ForeignKey("tenants.id"))
    api_key_id: Mapped[int] = mapped_column(Id, ForeignKey("api_keys.id"))
    key: Mapped[str] = mapped_column(String(MAX_IDEMPOTENCY_KEY))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    response: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("api_key_id", "key"),
        Index(None, "expires_at"),
    )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    tenant_id: int
    role: str
    outlet_id: int | None
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A created key; ``secret`` is the full bearer token, shown this once."""

    info: KeyInfo
    secret: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.tenant_id, row.role, row.outlet_id, row.name, row.created_at, row.revoked_at)


async def create_key(
    db: Database,
    tenant_id: int,
    *,
    role: str,
    name: str,
    actor: str,
    now: datetime,
    outlet_id: int | None = None,
) -> NewKey:
    """Create a key; a cashier key needs an outlet of the same tenant, other roles must not have one."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
    if (role == "cashier") != (outlet_id is not None):
        raise InvalidInput("a cashier key needs an outlet; admin and marketer keys act for the whole tenant")
    secret = secrets.token_urlsafe(32)
    async with db.write() as session:
        if outlet_id is not None:
            found = await session.scalar(
                select(Outlet.id).where(Outlet.tenant_id == tenant_id, Outlet.id == outlet_id)
            )
            if found is None:
                raise NotFound(f"no outlet {outlet_id}")
        row = ApiKey(
            tenant_id=tenant_id,
            role=role,
            outlet_id=outlet_id,
            name=name,
            secret_hash=_hash(secret),
            created_at=now,
            created_by=actor,
            revoked_at=None,
        )
        session.add(row)
        await session.flush()
        return NewKey(_info(row), f"{KEY_PREFIX}_{row.id}_{secret}")


def parse_token(token: str) -> tuple[int, str] | None:
    """Split ``lk_<id>_<secret>``; None if it cannot be one of our keys (no database work then)."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not key_id.isdigit() or len(key_id) > 18 or not 20 <= len(secret) <= 100:
        return None
    return int(key_id), secret


async def verify_key(db: Database, token: str) -> KeyInfo | None:
    """The key's info if ``token`` is a live key, else None (unknown, wrong secret, revoked)."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    async with db.read() as session:
        row = await session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _hash(secret)):
        return None
    return _info(row)


async def list_keys(db: Database, tenant_id: int) -> list[KeyInfo]:
    async with db.read() as session:
        rows = await session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.id))
        return [_info(r) for r in rows]


async def revoke_key(db: Database, tenant_id: int, key_id: int, *, now: datetime) -> KeyInfo:
    async with db.write() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id))
        if row is None:
            raise NotFound(f"no API key {key_id}")
        if row.revoked_at is None:
            row.revoked_at = now
            await session.flush()
        return _info(row)


# --------------------------------------------------------------------------------------------------
# Idempotency


@dataclass(frozen=True, slots=True)
class Replay:
    """A stored answer to give again."""

    status_code: int
    body: str


class IdempotencyInProgress(Conflict):
    """The first request with this Idempotency-Key is still running."""


class IdempotencyMismatch(InvalidInput):
    """This Idempotency-Key was already used with a different request."""


class AlreadyAnswered(LoyaltyError):
    """The request with this Idempotency-Key was answered before: ``replay`` is that answer."""

    def __init__(self, replay: Replay) -> None:
        super().__init__("this request was answered before")
        self.replay = replay


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")


@dataclass(slots=True)
class Answer:
    """A till request's Idempotency-Key and how to render its answer, for the write to record in its
    own transaction. ``render`` turns the operation's result into (status code, body)."""

    tenant_id: int
    api_key_id: int
    key: str
    fingerprint: str
    now: datetime
    render: Callable[[Any], tuple[int, str]]
    #: The answer (status code, body) once an operation's write stored it: set only after that write,
    #: so an attempt that failed (and was retried, or answered otherwise) never leaves one behind.
    recorded: tuple[int, str] | None = field(default=None)

    def __post_init__(self) -> None:
        _check_key(self.key)

    def row(self, result: Any) -> dict[str, Any]:
        """The idempotency record holding the answer to ``result``."""
        status_code, body = self.render(result)
        return {
            "tenant_id": self.tenant_id,
            "api_key_id": self.api_key_id,
            "key": self.key,
            "request_hash": self.fingerprint,
            "status_code": status_code,
            "response": body,
            "created_at": self.now,
            "expires_at": self.now + IDEMPOTENCY_TTL,
        }

    def stored(self, row: dict[str, Any]) -> None:
        """The write holding ``row`` (from :meth:`row`) has been applied."""
        self.recorded = (row["status_code"], row["response"])

    def judge(self, found: Sequence[Any] | None, now: datetime) -> bool:
        """Decide on the record found for this key (request hash, status, body, created, expires):
        raise the answer to give instead of running, or return True when a dead record must go
        (expired, or a claim abandoned by a worker that died) before this request may record its own."""
        if found is None or found[0] is None:
            return False
        request_hash, status_code, body, created_at, expires_at = found
        if expires_at < now:
            return True
        if request_hash != self.fingerprint:
            raise IdempotencyMismatch("this Idempotency-Key was already used with a different request")
        if status_code is not None and body is not None:
            raise AlreadyAnswered(Replay(int(status_code), str(body)))
        if created_at + IDEMPOTENCY_LEASE < now:
            return True
        raise IdempotencyInProgress("a request with this Idempotency-Key is still running; retry shortly")


_RECORD = (
    "SELECT request_hash, status_code, response, created_at, expires_at FROM idempotency_records"
    " WHERE tenant_id = $1 AND api_key_id = $2 AND key = $3"
)
#: Only the very record that was judged dead (one written meanwhile by another request stays).
_FORGET = (
    "DELETE FROM idempotency_records WHERE tenant_id = $1 AND api_key_id = $2 AND key = $3"
    " AND created_at = $4 AND status_code IS NOT DISTINCT FROM $5"
)


async def apply_answered(unit: Unit, booking: Booking, answer: Answer | None, result: T) -> T:
    """Apply a ledger operation's booking with its answer to the till (when the till sent a key) as
    one more row of the same write: the answer exists exactly when the write happened."""
    record = answer.row(result) if answer is not None else None
    if record is not None:
        booking.insert("idempotency_records", record)
    await unit.apply(booking)
    if answer is not None and record is not None:
        answer.stored(record)
    return result


async def check_answer(unit: Unit, answer: Answer) -> None:
    """Before a ledger write: replay, refuse, or clear the way for this request's own record."""
    row = await unit.fetchrow(_RECORD, answer.tenant_id, answer.api_key_id, answer.key)
    found = None if row is None else (row[0], row[1], row[2], unit.instant(row[3]), unit.instant(row[4]))
    await clear_dead(unit, answer, found)


async def clear_dead(unit: Unit, answer: Answer, found: Sequence[Any] | None) -> None:
    """Judge the record found for the answer's key (see :meth:`Answer.judge`) and remove it if dead."""
    if answer.judge(found, answer.now):
        assert found is not None
        await unit.execute(_FORGET, answer.tenant_id, answer.api_key_id, answer.key, found[3], found[1])


async def _recorded(db: Database, answer: Answer) -> Sequence[Any] | None:
    """The record of the answer's key, as :meth:`Answer.judge` takes it, or None."""
    async with db.read() as session:
        row = (
            await session.execute(
                select(
                    IdempotencyRecord.request_hash,
                    IdempotencyRecord.status_code,
                    IdempotencyRecord.response,
                    IdempotencyRecord.created_at,
                    IdempotencyRecord.expires_at,
                ).where(
                    IdempotencyRecord.tenant_id == answer.tenant_id,
                    IdempotencyRecord.api_key_id == answer.api_key_id,
                    IdempotencyRecord.key == answer.key,
                )
            )
        ).first()
    return row


async def answered_meanwhile(db: Database, answer: Answer) -> None:
    """A write found its key recorded by a concurrent request: raise what to answer instead (the
    recorded answer, a mismatch, or still in progress)."""
    row = await _recorded(db, answer)
    answer.judge(row, answer.now)
    raise IdempotencyInProgress("a request with this Idempotency-Key is still running; retry shortly")


async def record_answer(db: Database, answer: Answer, status_code: int, body: str) -> None:
    """Store an answer given outside a ledger write (a refusal, whose write was rolled back, or a
    receipt read back) for retries; a record already there stays."""
    async with db.write() as session:
        await session.execute(
            _insert_if_new(db.dialect).values(
                tenant_id=answer.tenant_id,
                api_key_id=answer.api_key_id,
                key=answer.key,
                request_hash=answer.fingerprint,
                status_code=status_code,
                response=body,
                created_at=answer.now,
                expires_at=answer.now + IDEMPOTENCY_TTL,
            )
        )


def _insert_if_new(dialect: str) -> Any:
    table = cast(Table, IdempotencyRecord.__table__)
    insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return insert.on_conflict_do_nothing(index_elements=["api_key_id", "key"])


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


async def prior_answer(db: Database, answer: Answer) -> None:
    """Before a write that is idempotent by nature (binding a blank card): raise the answer recorded
    for this key (or a mismatch) if there is one; return when the request should run."""
    row = await _recorded(db, answer)
    # Only a finished answer counts: the write may run again, and doing so changes nothing.
    if row is not None and row[1] is not None:
        answer.judge(row, answer.now)


async def purge_expired(db: Database, now: datetime) -> int:
    async with db.write() as session:
        result = await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


__all__ = [
    "AlreadyAnswered",
    "Answer",
    "ApiKey",
    "IdempotencyRecord",
    "KeyInfo",
    "NewKey",
    "Replay",
    "create_key",
    "list_keys",
    "prior_answer",
    "purge_expired",
    "revoke_key",
    "verify_key",
]
