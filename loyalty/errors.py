"""Errors of the domain layer: one root, grouped by what the caller can do about them.

    LoyaltyError                    every error the domain (cards included) raises on purpose
    ├── ClientError                 the request cannot be done as asked: the caller may fix it
    │   ├── NotFound                nothing of that id for this tenant (404)
    │   │   └── cards.InvalidToken
    │   ├── InvalidInput            malformed or out of range (422)
    │   │   └── cards.InvalidCardNumber, access.IdempotencyMismatch, ledger.BalanceLimit, ...
    │   └── Conflict                contradicts the current state (409)
    │       ├── InsufficientPoints, NotAllowed
    │       └── access.IdempotencyInProgress, posting.AlreadyPosted
    └── (the rest)                  the server's own trouble (a missing signing key): never a 4xx

The API maps each class to problem JSON by the class (the most specific one wins); anything that is
not a ClientError is a 500, so a bug inside the domain is never reported as the client's fault.
Nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class LoyaltyError(Exception):
    """Root of every error the loyalty domain raises."""


class ClientError(LoyaltyError):
    """The request cannot be done as asked; the caller can change something and try again."""


class NotFound(ClientError):
    """The thing asked for does not exist for this tenant (another tenant's rows are never found)."""


class Conflict(ClientError):
    """The request contradicts the current state (a published version edited, a used voucher, ...)."""


class InvalidInput(ClientError):
    """The input is malformed or out of range; ``issues`` lists the problems when there are several."""

    def __init__(self, message: str, issues: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.issues = issues


class InsufficientPoints(Conflict):
    """The member's available points do not cover the cost; nothing was written."""

    def __init__(self, message: str, available: int, cost: int) -> None:
        super().__init__(message)
        self.available = available
        self.cost = cost


class NotAllowed(Conflict):
    """The member may not do this now (a reward above their tier, a cancellation on another day)."""
