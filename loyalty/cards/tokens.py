"""Signed card tokens: the short, URL-safe code in a card's QR that names a tenant and a card.

A token is the unpadded base64url text of a small binary layout::

    version (1 byte) | key id | tenant id | card id | MAC (16 bytes)

The three ids are unsigned LEB128 varints (1 byte below 128, 3 bytes below about two million), so a
typical token is 30 characters and no token is longer than ``MAX_TOKEN_LENGTH``. The MAC is
HMAC-SHA256 over a fixed context string and every byte before it, truncated to 128 bits, under the
tenant's signing key named by the key id. Keys rotate: the ring signs with its one active key and
still verifies with retiring keys until their ``not_after`` instant; a revoked key verifies nothing.

Verification decodes the layout to learn which key to use, but trusts nothing in it until
``hmac.compare_digest`` has accepted the MAC; every failure, on any input, is an ``InvalidToken``.
Nothing here reads a clock or a database: the caller passes ``now`` and the tenant's ``KeyRing``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import NotRequired, TypedDict

from loyalty.cards.errors import InvalidToken, NoSigningKey, TokenFailure

__all__ = [
    "MAC_LENGTH",
    "MAX_ID",
    "MAX_TOKEN_LENGTH",
    "MIN_SECRET_LENGTH",
    "MIN_TOKEN_LENGTH",
    "TOKEN_VERSION",
    "CardToken",
    "KeyRing",
    "KeySpec",
    "KeyState",
    "SigningKey",
    "TokenHeader",
    "generate_secret",
    "peek_token",
    "sign_token",
    "verify_token",
]

#: Format version, the first byte of every token; a new layout gets a new number.
TOKEN_VERSION = 1
#: Bytes of HMAC-SHA256 kept in a token: 128 bits, as much as a forger must guess, and no more
#: characters in the QR than that needs.
MAC_LENGTH = 16
#: Largest tenant, card or key id a token carries: a PostgreSQL BIGINT.
MAX_ID = 2**63 - 1
#: Bytes of a varint holding ``MAX_ID`` (7 bits per byte).
_MAX_VARINT_BYTES = 9
#: Shortest secret a key may have (HMAC keys below 128 bits are guessable); ``generate_secret``
#: makes 256 bits.
MIN_SECRET_LENGTH = 16
_SECRET_BYTES = 32

_MIN_RAW = 1 + 3 * 1 + MAC_LENGTH
_MAX_RAW = 1 + 3 * _MAX_VARINT_BYTES + MAC_LENGTH
#: Characters of the shortest and the longest token (unpadded base64url of the raw bytes).
MIN_TOKEN_LENGTH = -(-_MIN_RAW * 4 // 3)
MAX_TOKEN_LENGTH = -(-_MAX_RAW * 4 // 3)

# Domain separation: a tenant secret that ever MACs something else can never produce a card token.
_MAC_CONTEXT = b"loyalty card token\x00"
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")


class KeyState(StrEnum):
    """Where a signing key is in its life: signing, verifying only, or dead."""

    ACTIVE = "active"
    RETIRING = "retiring"
    REVOKED = "revoked"


def _require_aware(instant: datetime, what: str) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware")


def _require_id(value: int, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ID:
        raise ValueError(f"{what} must be an integer from 0 to {MAX_ID}, not {value!r}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One tenant signing key. ``not_after`` (exclusive) ends its use, whatever its state."""

    key_id: int
    secret: bytes = field(repr=False)
    state: KeyState = KeyState.ACTIVE
    not_after: datetime | None = None

    def __post_init__(self) -> None:
        _require_id(self.key_id, "key id")
        if not isinstance(self.secret, bytes) or len(self.secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"key {self.key_id}: a secret is at least {MIN_SECRET_LENGTH} bytes")
        object.__setattr__(self, "state", KeyState(self.state))
        if self.not_after is not None:
            _require_aware(self.not_after, f"key {self.key_id}: not_after")

    def verifies_at(self, now: datetime) -> bool:
        """Whether a token signed with this key is accepted at ``now``."""
        return self.state is not KeyState.REVOKED and (self.not_after is None or now < self.not_after)


class KeySpec(TypedDict):
    """One key as plain data, the way storage hands it over."""

    secret: bytes
    state: NotRequired[str]
    not_after: NotRequired[datetime | None]


class KeyRing:
    """The signing keys of one tenant: at most one active key signs; every unexpired,
    unrevoked key verifies."""

    __slots__ = ("_keys", "tenant_id")

    def __init__(self, tenant_id: int, keys: Iterable[SigningKey]) -> None:
        _require_id(tenant_id, "tenant id")
        self.tenant_id = tenant_id
        self._keys: dict[int, SigningKey] = {}
        for key in keys:
            if key.key_id in self._keys:
                raise ValueError(f"tenant {tenant_id}: key id {key.key_id} appears twice")
            self._keys[key.key_id] = key
        active = [k.key_id for k in self._keys.values() if k.state is KeyState.ACTIVE]
        if len(active) > 1:
            raise ValueError(f"tenant {tenant_id}: more than one active key ({active}); retire all but one")

    @classmethod
    def from_data(cls, tenant_id: int, keys: Mapping[int, KeySpec]) -> KeyRing:
        """Build a ring from ``{key_id: {"secret": b"...", "state": "retiring", "not_after": ...}}``."""
        return cls(
            tenant_id,
            (
                SigningKey(
                    key_id,
                    spec["secret"],
                    KeyState(spec.get("state", KeyState.ACTIVE)),
                    spec.get("not_after"),
                )
                for key_id, spec in keys.items()
            ),
        )

    def __iter__(self) -> Iterator[SigningKey]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(tenant_id={self.tenant_id}, keys={list(self._keys.values())!r})"

    def get(self, key_id: int) -> SigningKey | None:
        return self._keys.get(key_id)

    def signing_key(self, now: datetime) -> SigningKey:
        """The active key, if it is still usable at ``now``; otherwise ``NoSigningKey``."""
        _require_aware(now, "now")
        for key in self._keys.values():
            if key.state is KeyState.ACTIVE and key.verifies_at(now):
                return key
        raise NoSigningKey(f"tenant {self.tenant_id} has no active signing key")

    def rotated(self, new_key: SigningKey, *, retire_at: datetime | None) -> KeyRing:
        """The ring after a rotation: ``new_key`` signs, and the key that signed until now keeps
        verifying until ``retire_at`` (``None``: until it is revoked)."""
        if new_key.state is not KeyState.ACTIVE:
            raise ValueError("the new key of a rotation must be active")
        if retire_at is not None:
            _require_aware(retire_at, "retire_at")
        kept = [
            replace(k, state=KeyState.RETIRING, not_after=retire_at) if k.state is KeyState.ACTIVE else k
            for k in self._keys.values()
        ]
        return KeyRing(self.tenant_id, [*kept, new_key])

    def revoked(self, key_id: int) -> KeyRing:
        """The ring with ``key_id`` revoked: tokens signed with it stop verifying at once."""
        if key_id not in self._keys:
            raise KeyError(key_id)
        return KeyRing(
            self.tenant_id,
            (replace(k, state=KeyState.REVOKED) if k.key_id == key_id else k for k in self._keys.values()),
        )


@dataclass(frozen=True, slots=True)
class TokenHeader:
    """What a token claims before its MAC is checked: enough to pick the tenant's key ring, and
    nothing to act on."""

    version: int
    key_id: int
    tenant_id: int


@dataclass(frozen=True, slots=True)
class CardToken:
    """A verified token: the tenant and card it names, and the key that signed it."""

    tenant_id: int
    card_id: int
    key_id: int


def generate_secret() -> bytes:
    """A fresh 256-bit signing secret, for setup and rotation; store it, never commit it."""
    return secrets.token_bytes(_SECRET_BYTES)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a canonical varint at ``pos``; return it and the position after it."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise InvalidToken(TokenFailure.MALFORMED)
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            # A zero last byte after others is an overlong spelling: one value, one encoding.
            if i > 0 and byte == 0:
                raise InvalidToken(TokenFailure.MALFORMED)
            if value > MAX_ID:
                raise InvalidToken(TokenFailure.MALFORMED)
            return value, pos + i + 1
    raise InvalidToken(TokenFailure.MALFORMED)


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.digest(secret, _MAC_CONTEXT + body, hashlib.sha256)[:MAC_LENGTH]


def sign_token(keyring: KeyRing, card_id: int, *, now: datetime) -> str:
    """The token for ``card_id`` of the ring's tenant, signed with the key active at ``now``."""
    _require_id(card_id, "card id")
    key = keyring.signing_key(now)
    body = bytes([TOKEN_VERSION]) + _varint(key.key_id) + _varint(keyring.tenant_id) + _varint(card_id)
    return base64.urlsafe_b64encode(body + _mac(key.secret, body)).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class _Layout:
    header: TokenHeader
    card_id: int
    body: bytes
    mac: bytes


def _decode(token: object) -> _Layout:
    """Split a token into its fields, or raise ``InvalidToken``; checks shape, never authenticity."""
    if (
        not isinstance(token, str)
        or not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH
        or _TOKEN_CHARS.fullmatch(token) is None
    ):
        raise InvalidToken(TokenFailure.MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken(TokenFailure.MALFORMED) from None
    # Base64 leaves spare bits in the last character; insist they are zero so that each token has
    # exactly one spelling (a card can then be looked up or deduplicated by its token text).
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise InvalidToken(TokenFailure.MALFORMED)
    if len(raw) < _MIN_RAW:
        raise InvalidToken(TokenFailure.MALFORMED)
    body, mac = raw[:-MAC_LENGTH], raw[-MAC_LENGTH:]
    if body[0] != TOKEN_VERSION:
        raise InvalidToken(TokenFailure.UNSUPPORTED_VERSION)
    key_id, pos = _read_varint(body, 1)
    tenant_id, pos = _read_varint(body, pos)
    card_id, pos = _read_varint(body, pos)
    if pos != len(body):
        raise InvalidToken(TokenFailure.MALFORMED)
    return _Layout(TokenHeader(body[0], key_id, tenant_id), card_id, body, mac)


def peek_token(token: object) -> TokenHeader:
    """The unverified header of a token, to choose which tenant's key ring to load.

    Nothing in it is authenticated: use it to find keys, never to find or show data.
    """
    return _decode(token).header


def verify_token(
    token: object, keyring: KeyRing, *, now: datetime, tenant_id: int | None = None
) -> CardToken:
    """Check ``token`` against the tenant's ``keyring`` at ``now`` and return what it names.

    ``tenant_id``, when given, is the tenant the caller acts for (a till's API key, say): a token
    of any other tenant is refused. Every refusal is an ``InvalidToken`` with a ``reason``.
    """
    _require_aware(now, "now")
    layout = _decode(token)
    claimed = layout.header
    # Refusals may use the unverified fields; acceptance waits for the MAC.
    if claimed.tenant_id != keyring.tenant_id or (tenant_id is not None and claimed.tenant_id != tenant_id):
        raise InvalidToken(TokenFailure.WRONG_TENANT)
    key = keyring.get(claimed.key_id)
    if key is None:
        raise InvalidToken(TokenFailure.UNKNOWN_KEY)
    if key.state is KeyState.REVOKED:
        raise InvalidToken(TokenFailure.REVOKED_KEY)
    if not key.verifies_at(now):
        raise InvalidToken(TokenFailure.EXPIRED_KEY)
    if not hmac.compare_digest(layout.mac, _mac(key.secret, layout.body)):
        raise InvalidToken(TokenFailure.BAD_SIGNATURE)
    return CardToken(tenant_id=claimed.tenant_id, card_id=layout.card_id, key_id=key.key_id)
