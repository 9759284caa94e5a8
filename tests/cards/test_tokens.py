"""Card tokens: signed, short, URL-safe; every bad token is an InvalidToken, never a crash."""

from __future__ import annotations

import base64
import contextlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loyalty.cards.errors import InvalidToken, NoSigningKey, TokenFailure
from loyalty.cards.tokens import (
    MAX_ID,
    MAX_TOKEN_LENGTH,
    MIN_TOKEN_LENGTH,
    KeyRing,
    KeyState,
    SigningKey,
    generate_secret,
    peek_token,
    sign_token,
    verify_token,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET_1 = bytes(range(32))
SECRET_2 = bytes(range(32, 64))
RING = KeyRing(7, [SigningKey(1, SECRET_1)])
TOKEN = sign_token(RING, 123_456, now=NOW)
URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _refused(token: object, ring: KeyRing = RING, **kwargs: object) -> TokenFailure:
    with pytest.raises(InvalidToken) as caught:
        verify_token(token, ring, now=kwargs.pop("now", NOW), **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def test_a_signed_token_verifies_to_its_tenant_and_card() -> None:
    """Verifying a fresh token gives back the tenant, the card and the key that signed it."""
    card = verify_token(TOKEN, RING, now=NOW, tenant_id=7)
    assert (card.tenant_id, card.card_id, card.key_id) == (7, 123_456, 1)


def test_a_typical_token_is_30_url_safe_characters() -> None:
    """A token for a small tenant and a card id below two million is 30 characters of base64url."""
    assert len(TOKEN) == 30 and URL_SAFE.fullmatch(TOKEN)


@given(
    tenant=st.integers(0, MAX_ID),
    card=st.integers(0, MAX_ID),
    key_id=st.integers(0, MAX_ID),
)
def test_any_ids_round_trip_in_a_short_url_safe_token(tenant: int, card: int, key_id: int) -> None:
    """Every id up to a BIGINT survives signing and verifying, in a URL-safe token of bounded length."""
    ring = KeyRing(tenant, [SigningKey(key_id, SECRET_1)])
    token = sign_token(ring, card, now=NOW)
    assert URL_SAFE.fullmatch(token) and MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH
    assert verify_token(token, ring, now=NOW) == verify_token(token, ring, now=NOW, tenant_id=tenant)
    assert verify_token(token, ring, now=NOW).card_id == card


def test_the_longest_token_is_max_token_length() -> None:
    """Ids at their maximum make a token of exactly MAX_TOKEN_LENGTH characters."""
    ring = KeyRing(MAX_ID, [SigningKey(MAX_ID, SECRET_1)])
    assert len(sign_token(ring, MAX_ID, now=NOW)) == MAX_TOKEN_LENGTH


def test_changing_any_character_is_refused() -> None:
    """Replacing any single character of a token by any other URL-safe character is refused."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, original in enumerate(TOKEN):
        for ch in alphabet:
            if ch != original:
                _refused(TOKEN[:i] + ch + TOKEN[i + 1 :])


def test_truncated_and_extended_tokens_are_refused() -> None:
    """Every proper prefix of a token, and a token with characters appended, is refused."""
    for end in range(len(TOKEN)):
        _refused(TOKEN[:end])
    for extra in ("A", "AA", "AAAA", "=", "==", "/", " "):
        _refused(TOKEN + extra)


def test_a_forged_card_id_is_refused_as_bad_signature() -> None:
    """Re-encoding a token with another card id and the old MAC fails the signature check."""
    raw = _raw(TOKEN)
    forged = raw[:3] + bytes([raw[3] ^ 1]) + raw[4:]
    assert _refused(_text(forged)) is TokenFailure.BAD_SIGNATURE


def test_spare_base64_bits_must_be_zero() -> None:
    """A second spelling of the same bytes (non-zero spare bits in the last character) is refused."""
    raw = _raw(TOKEN)
    assert len(raw) * 8 % 6  # this token's last character has spare bits
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(TOKEN[-1])
    respelled = TOKEN[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]
    assert respelled != TOKEN and _raw(respelled) == raw
    assert _refused(respelled) is TokenFailure.MALFORMED


def test_overlong_varints_are_malformed() -> None:
    """An id spelled with a redundant continuation byte is refused before the MAC is looked at."""
    raw = _raw(TOKEN)
    overlong = raw[:1] + bytes([raw[1] | 0x80, 0x00]) + raw[2:]
    assert _refused(_text(overlong)) is TokenFailure.MALFORMED


def test_an_unknown_version_is_refused() -> None:
    """A token whose first byte is not a known format version is refused as such."""
    raw = _raw(TOKEN)
    assert _refused(_text(b"\x02" + raw[1:])) is TokenFailure.UNSUPPORTED_VERSION


def test_a_token_of_another_tenant_is_refused() -> None:
    """A caller acting for another tenant, or holding another tenant's ring, gets WRONG_TENANT."""
    assert _refused(TOKEN, tenant_id=8) is TokenFailure.WRONG_TENANT
    other = KeyRing(8, [SigningKey(1, SECRET_1)])  # even with the very same secret
    assert _refused(TOKEN, other) is TokenFailure.WRONG_TENANT


def test_a_token_claiming_another_tenant_fails_its_keys() -> None:
    """Relabelling a token with tenant 8 fails tenant 8's key of the same id."""
    raw = _raw(TOKEN)
    relabelled = raw[:2] + bytes([8]) + raw[3:]
    other = KeyRing(8, [SigningKey(1, SECRET_2)])
    assert _refused(_text(relabelled), other) is TokenFailure.BAD_SIGNATURE


def test_an_unknown_key_is_refused() -> None:
    """A token naming a key id the ring does not hold is refused."""
    ring = KeyRing(7, [SigningKey(2, SECRET_2)])
    assert _refused(TOKEN, ring) is TokenFailure.UNKNOWN_KEY


def test_rotation_keeps_old_tokens_until_not_after() -> None:
    """After a rotation new tokens use the new key, and old ones verify until the retiring key's not_after."""
    retire_at = NOW + timedelta(days=30)
    ring = RING.rotated(SigningKey(2, SECRET_2), retire_at=retire_at)
    assert ring.get(1) == SigningKey(1, SECRET_1, KeyState.RETIRING, retire_at)
    fresh = sign_token(ring, 123_456, now=NOW)
    assert verify_token(fresh, ring, now=NOW).key_id == 2
    assert verify_token(TOKEN, ring, now=NOW).key_id == 1
    assert verify_token(TOKEN, ring, now=retire_at - timedelta(microseconds=1)).card_id == 123_456
    assert _refused(TOKEN, ring, now=retire_at) is TokenFailure.EXPIRED_KEY
    assert verify_token(fresh, ring, now=retire_at + timedelta(days=3650)).key_id == 2


def test_a_retiring_key_without_not_after_verifies_but_never_signs() -> None:
    """A retiring key with no end date keeps verifying; with no active key, nothing can be signed."""
    ring = KeyRing(7, [SigningKey(1, SECRET_1, KeyState.RETIRING)])
    assert verify_token(TOKEN, ring, now=NOW + timedelta(days=10_000)).key_id == 1
    with pytest.raises(NoSigningKey):
        sign_token(ring, 1, now=NOW)


def test_a_revoked_key_verifies_nothing() -> None:
    """Once its key is revoked, a genuine token is refused, during any rotation window."""
    ring = RING.rotated(SigningKey(2, SECRET_2), retire_at=NOW + timedelta(days=30)).revoked(1)
    assert _refused(TOKEN, ring) is TokenFailure.REVOKED_KEY
    assert _refused(TOKEN, RING.revoked(1)) is TokenFailure.REVOKED_KEY
    with pytest.raises(NoSigningKey):
        sign_token(RING.revoked(1), 1, now=NOW)


def test_an_active_key_past_not_after_stops_signing() -> None:
    """An active key with an end date neither signs nor verifies from that instant on."""
    ring = KeyRing(7, [SigningKey(1, SECRET_1, not_after=NOW)])
    with pytest.raises(NoSigningKey):
        sign_token(ring, 1, now=NOW)
    assert _refused(TOKEN, ring) is TokenFailure.EXPIRED_KEY


def test_a_ring_from_plain_data_matches_one_from_keys() -> None:
    """KeyRing.from_data builds the same keys as the constructor from storage's plain values."""
    until = NOW + timedelta(days=1)
    ring = KeyRing.from_data(
        7,
        {
            1: {"secret": SECRET_1, "state": "retiring", "not_after": until},
            2: {"secret": SECRET_2},
            3: {"secret": generate_secret(), "state": "revoked"},
        },
    )
    assert ring.get(1) == SigningKey(1, SECRET_1, KeyState.RETIRING, until)
    assert ring.signing_key(NOW) == SigningKey(2, SECRET_2)
    assert ring.get(3) is not None and ring.get(3).state is KeyState.REVOKED  # type: ignore[union-attr]
    assert verify_token(TOKEN, ring, now=NOW).key_id == 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: KeyRing(7, [SigningKey(1, SECRET_1), SigningKey(2, SECRET_2)]), "more than one active"),
        (lambda: KeyRing(7, [SigningKey(1, SECRET_1), SigningKey(1, SECRET_2, KeyState.REVOKED)]), "twice"),
        (lambda: SigningKey(1, b"short"), "at least 16 bytes"),
        (lambda: SigningKey(-1, SECRET_1), "key id"),
        (lambda: SigningKey(1, SECRET_1, not_after=datetime(2026, 1, 1)), "timezone-aware"),
        (lambda: KeyRing.from_data(7, {1: {"secret": SECRET_1, "state": "paused"}}), "paused"),
        (lambda: sign_token(RING, 1, now=datetime(2026, 1, 1)), "timezone-aware"),
        (lambda: sign_token(RING, MAX_ID + 1, now=NOW), "card id"),
        (lambda: verify_token(TOKEN, RING, now=datetime(2026, 1, 1)), "timezone-aware"),
    ],
)
def test_misuse_is_a_value_error(build: object, message: str) -> None:
    """Two active keys, a duplicate or short key, a naive instant or an id out of range is a ValueError."""
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_secrets_are_fresh_and_never_shown() -> None:
    """Generated secrets are 32 random bytes, and no repr of a key or ring shows a secret."""
    first, second = generate_secret(), generate_secret()
    assert len(first) == 32 and first != second
    ring = KeyRing(7, [SigningKey(1, first)])
    assert first.hex() not in repr(ring) and repr(first) not in repr(ring)
    assert "secret" not in repr(ring.get(1))


def test_peek_reads_the_unverified_header() -> None:
    """peek_token names the tenant and key to load without any key, and refuses garbage the same way."""
    header = peek_token(TOKEN)
    assert (header.version, header.key_id, header.tenant_id) == (1, 1, 7)
    with pytest.raises(InvalidToken):
        peek_token("not a token")


@pytest.mark.parametrize(
    "token", [None, 42, b"AQEHwMQHeGtl0OXvI_5zWCNPf-cyEw", "", " " + TOKEN, TOKEN + "\n"]
)
def test_non_tokens_are_malformed(token: object) -> None:
    """Non-strings, empty text and tokens with whitespace are refused as malformed."""
    assert _refused(token) is TokenFailure.MALFORMED


@given(st.text(max_size=100))
def test_fuzz_arbitrary_text_raises_only_invalid_token(text: str) -> None:
    """Arbitrary text never verifies and never raises anything but InvalidToken."""
    with pytest.raises(InvalidToken):
        verify_token(text, RING, now=NOW)


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=64))
def test_fuzz_url_safe_text_raises_only_invalid_token(text: str) -> None:
    """Text of the token alphabet, of any length, never verifies and raises only InvalidToken."""
    with pytest.raises(InvalidToken):
        verify_token(text, RING, now=NOW)


@given(st.binary(min_size=0, max_size=50), st.sampled_from([b"", b"\x01", b"\x01\x01", b"\x01\x01\x07"]))
def test_fuzz_decodable_bytes_raise_only_invalid_token(tail: bytes, head: bytes) -> None:
    """Well-encoded bytes with a plausible header reach the varint and MAC checks; only InvalidToken."""
    with pytest.raises(InvalidToken):
        verify_token(_text(head + tail), RING, now=NOW)
    with contextlib.suppress(InvalidToken):
        peek_token(_text(head + tail))
