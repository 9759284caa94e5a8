"""Calendar arithmetic in the program's time zone: expiry dates and month boundaries.

Expiry is "at the end of the month ``n`` months after earning": stored as the first instant of the
following month (an exclusive bound), so a lot is expired exactly when ``as_of >= expires_at``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo


def add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def month_start(year: int, month: int, zone: ZoneInfo) -> datetime:
    """Local midnight of the first day of the month, as a UTC instant."""
    return datetime(year, month, 1, tzinfo=zone).astimezone(UTC)


def expiry_for(earned_at: datetime, months: int | None, zone: ZoneInfo) -> datetime | None:
    """The instant a lot earned at ``earned_at`` expires (None: the policy never expires points)."""
    if months is None:
        return None
    local = earned_at.astimezone(zone)
    year, month = add_months(local.year, local.month, months + 1)
    return month_start(year, month, zone)


def local_month(instant: datetime, zone: ZoneInfo) -> tuple[int, int]:
    local = instant.astimezone(zone)
    return local.year, local.month


def local_day(instant: datetime, zone: ZoneInfo) -> date:
    return instant.astimezone(zone).date()


def window_start(now: datetime, months: int, zone: ZoneInfo) -> datetime:
    """``now`` minus ``months`` calendar months, local wall time kept (the day clamped to the month)."""
    local = now.astimezone(zone)
    year, month = add_months(local.year, local.month, -months)
    day = min(local.day, _days_in(year, month))
    return local.replace(year=year, month=month, day=day).astimezone(UTC)


def _days_in(year: int, month: int) -> int:
    ny, nm = add_months(year, month, 1)
    return (date(ny, nm, 1) - date(year, month, 1)).days
