"""Errors of the domain layer: one root, a shallow hierarchy, one line each.

The API maps these to problem responses in one table; nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class LoyaltyError(Exception):
    """Root of every error the loyalty domain raises."""


class NotFound(LoyaltyError):
    """The thing asked for does not exist for this tenant (another tenant's rows are never found)."""


class Conflict(LoyaltyError):
    """The request contradicts the current state (a published version edited, a used voucher, ...)."""


class InvalidInput(LoyaltyError):
    """The input is malformed or out of range; ``issues`` lists the problems when there are several."""

    def __init__(self, message: str, issues: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.issues = issues


class InsufficientPoints(LoyaltyError):
    """The member's available points do not cover the cost; nothing was written."""

    def __init__(self, message: str, available: int, cost: int) -> None:
        super().__init__(message)
        self.available = available
        self.cost = cost


class NotAllowed(LoyaltyError):
    """The member may not do this now (a reward above their tier, a cancellation on another day)."""
