"""Errors of the cards package: one root (under the domain's, loyalty.errors) and one class per
thing a caller can get wrong."""

from __future__ import annotations

from enum import StrEnum

from loyalty.errors import InvalidInput, LoyaltyError, NotFound


class CardError(LoyaltyError):
    """Root of every error the cards package raises."""


class InvalidCardNumber(CardError, InvalidInput, ValueError):
    """A typed card number is malformed or its check digit does not match."""


class TokenFailure(StrEnum):
    """Why a card token was refused; stable codes the API may put in a problem body."""

    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    WRONG_TENANT = "wrong_tenant"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    EXPIRED_KEY = "expired_key"
    BAD_SIGNATURE = "bad_signature"


_MESSAGES = {
    TokenFailure.MALFORMED: "this is not a card code",
    TokenFailure.UNSUPPORTED_VERSION: "this card code has an unknown format version",
    TokenFailure.WRONG_TENANT: "this card belongs to another program",
    TokenFailure.UNKNOWN_KEY: "this card code was signed with an unknown key",
    TokenFailure.REVOKED_KEY: "this card code was signed with a revoked key",
    TokenFailure.EXPIRED_KEY: "this card code was signed with a key that has expired",
    TokenFailure.BAD_SIGNATURE: "this card code is forged or damaged",
}


class InvalidToken(CardError, NotFound):
    """A card token is malformed, forged, foreign or signed with a key that no longer verifies."""

    def __init__(self, reason: TokenFailure) -> None:
        self.reason = reason
        super().__init__(_MESSAGES[reason])


class NoSigningKey(CardError):
    """The key ring holds no active key usable at the given instant, so nothing can be signed."""
