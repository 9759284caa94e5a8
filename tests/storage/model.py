"""An independent model of the ledger: what every balance must be, computed from the operations alone.

The state machine in ``test_ledger_properties.py`` drives the real services and this model side by
side and compares them after every step, the way TigerBeetle's auditor checks every reply of its state
machine. The model knows nothing of the database or of ``loyalty``: it holds each member's lots,
stamps, vouchers, debt and tier in plain Python and prices the test program (``conftest.PROGRAM``)
by hand. A posting that books nothing, a draw from the wrong lot or a refund that forgets a stamp
shows up as a difference, even when the database is consistent with itself.

The program it prices (``conftest.PROGRAM``): one point per euro on every line not in ``tobacco``,
rounded down once per purchase; silver (1,000 points in a rolling 12 months) earns x1.5; points stay
pending 14 days and expire at the end of the second month after earning (Europe/Berlin); every
``WASH`` unit is a stamp, five stamps make a FREE-WASH voucher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from zoneinfo import ZoneInfo

ZONE = ZoneInfo("Europe/Berlin")
PENDING_DAYS = 14
EXPIRE_AFTER_MONTHS = 2
WINDOW_MONTHS = 12
#: (name, threshold in points, earn multiplier), lowest first.
LADDER = (("bronze", 0, Decimal(1)), ("silver", 1000, Decimal("1.5")))
REWARDS = {"COFFEE": (300, None), "CAKE": (100, None), "LOUNGE": (50, "silver")}
STAMPS_PER_VOUCHER = 5


class ModelRefusal(Exception):
    """The model says the service must refuse this operation (and write nothing)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def expiry(earned_at: datetime) -> datetime:
    """First instant of the month after the second month following ``earned_at``'s local month."""
    local = earned_at.astimezone(ZONE)
    index = local.year * 12 + local.month - 1 + EXPIRE_AFTER_MONTHS + 1
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=ZONE).astimezone(UTC)


def window_start(now: datetime) -> datetime:
    local = now.astimezone(ZONE)
    year = local.year - WINDOW_MONTHS // 12
    day = local.day
    while True:
        try:
            return local.replace(year=year, day=day).astimezone(UTC)
        except ValueError:  # 29 February in a common year
            day -= 1


def local_day(at: datetime) -> date:
    return at.astimezone(ZONE).date()


@dataclass
class Lot:
    key: tuple[str, int]  # ("tx", transaction id) or ("adj", adjustment id)
    order: int  # creation order: ties in expiry are drawn oldest first
    earned: int
    remaining: int
    state: str
    pending_until: datetime
    expires_at: datetime
    expired: int = 0


@dataclass
class Purchase:
    id: int
    member: int
    occurred_at: datetime
    #: (sku, unit price, quantity, points of the line)
    lines: list[tuple[str, int, int, int]]
    points: int
    refunded: list[int]
    points_refunded: int = 0


@dataclass
class Redemption:
    id: int
    member: int
    cost: int
    at: datetime
    draws: list[tuple[Lot, int]]
    cancelled: bool = False


@dataclass
class MemberModel:
    id: int
    tier: str | None = None
    debt: int = 0
    visits: int = 0
    last_visit_at: datetime | None = None
    stamps: int = 0
    vouchers: list[str] = field(default_factory=list)  # status per voucher, in issue order
    lots: list[Lot] = field(default_factory=list)

    @property
    def available(self) -> int:
        return sum(lot.remaining for lot in self.lots if lot.state == "available")

    @property
    def pending(self) -> int:
        return sum(lot.remaining for lot in self.lots if lot.state == "pending")


class LedgerModel:
    """Every member's books, kept by hand."""

    def __init__(self) -> None:
        self.members: dict[int, MemberModel] = {}
        self.purchases: dict[int, Purchase] = {}
        self.redemptions: dict[int, Redemption] = {}
        self._order = 0

    # --- helpers -------------------------------------------------------------------------------

    def add_member(self, member_id: int) -> None:
        self.members[member_id] = MemberModel(member_id)

    def _lot(
        self,
        m: MemberModel,
        key: tuple[str, int],
        points: int,
        state: str,
        at: datetime,
        booked: datetime | None = None,
    ) -> Lot:
        """A lot earned ``at``; its return window runs from when it was ``booked`` (a late receipt
        does not skip it)."""
        self._order += 1
        pending_until = max(at, booked or at) + timedelta(days=PENDING_DAYS)
        lot = Lot(key, self._order, points, points, state, pending_until, expiry(at))
        if state == "available":
            lot.pending_until = at
        m.lots.append(lot)
        return lot

    @staticmethod
    def _draw(m: MemberModel, amount: int) -> list[tuple[Lot, int]]:
        """Nearest expiry first, oldest lot first among equals."""
        draws = []
        for lot in sorted(
            (x for x in m.lots if x.state == "available" and x.remaining > 0),
            key=lambda x: (x.expires_at, x.order),
        ):
            if amount == 0:
                break
            take = min(amount, lot.remaining)
            lot.remaining -= take
            amount -= take
            draws.append((lot, take))
        assert amount == 0, "the model drew more than the member holds"
        return draws

    def _settle(self, m: MemberModel) -> None:
        pay = min(m.debt, m.available)
        if pay > 0:
            self._draw(m, pay)
            m.debt -= pay

    @staticmethod
    def _multiplier(tier: str | None) -> Decimal:
        for name, _, factor in LADDER:
            if name == tier:
                return factor
        return LADDER[0][2]

    def qualifying(self, member_id: int, now: datetime) -> int:
        since = window_start(now)
        return sum(
            p.points - p.points_refunded
            for p in self.purchases.values()
            if p.member == member_id and since < p.occurred_at <= now
        )

    @staticmethod
    def level(value: int) -> str:
        chosen = LADDER[0][0]
        for name, threshold, _ in LADDER:
            if value >= threshold:
                chosen = name
        return chosen

    # --- operations ----------------------------------------------------------------------------

    def price(self, member_id: int, lines: list[tuple[str, int, int, str]]) -> tuple[int, list[int]]:
        """Points of a basket for the member as they are now: total and per line (largest remainder)."""
        factor = self._multiplier(self.members[member_id].tier)
        exact = [
            Decimal(price * qty) / 100 * factor if category != "tobacco" else Decimal(0)
            for _, price, qty, category in lines
        ]
        total = int(sum(exact, Decimal(0)).to_integral_value(rounding=ROUND_FLOOR))
        floors = [int(e.to_integral_value(rounding=ROUND_FLOOR)) for e in exact]
        order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
        for i in order[: max(0, total - sum(floors))]:
            floors[i] += 1
        return total, floors

    def post(
        self,
        tx_id: int,
        member_id: int,
        lines: list[tuple[str, int, int, str]],
        occurred_at: datetime,
        now: datetime,
    ) -> int:
        m = self.members[member_id]
        points, per_line = self.price(member_id, lines)
        self.purchases[tx_id] = Purchase(
            tx_id,
            member_id,
            occurred_at,
            [(sku, price, qty, pts) for (sku, price, qty, _), pts in zip(lines, per_line, strict=True)],
            points,
            [0] * len(lines),
        )
        m.visits += 1
        m.last_visit_at = occurred_at if m.last_visit_at is None else max(m.last_visit_at, occurred_at)
        if points > 0:
            pending = max(occurred_at, now) + timedelta(days=PENDING_DAYS) > now
            self._lot(m, ("tx", tx_id), points, "pending" if pending else "available", occurred_at, now)
            if not pending:
                self._settle(m)
        # Upgrades happen at once; a member without a tier gets the level they qualify for.
        target = self.level(self.qualifying(member_id, now))
        names = [name for name, _, _ in LADDER]
        if m.tier is None or names.index(target) > names.index(m.tier):
            m.tier = target
        washes = sum(qty for sku, _, qty, _ in lines if sku == "WASH")
        if washes:
            total = m.stamps + washes
            m.vouchers += ["issued"] * (total // STAMPS_PER_VOUCHER)
            m.stamps = total % STAMPS_PER_VOUCHER
        return points

    def refund(self, tx_id: int, lines: dict[int, int] | None) -> tuple[int, int]:
        """(points reversed, of which debt). Raises ModelRefusal('invalid') for an impossible refund."""
        p = self.purchases[tx_id]
        m = self.members[p.member]
        wanted = (
            {i: line[2] - p.refunded[i] for i, line in enumerate(p.lines) if line[2] > p.refunded[i]}
            if lines is None
            else dict(lines)
        )
        if not wanted or any(
            i >= len(p.lines) or p.refunded[i] + q > p.lines[i][2] for i, q in wanted.items()
        ):
            raise ModelRefusal("invalid")
        points = 0
        for i, q in wanted.items():
            line_points, qty = p.lines[i][3], p.lines[i][2]
            points += line_points * (p.refunded[i] + q) // qty - line_points * p.refunded[i] // qty
            p.refunded[i] += q
        if all(p.refunded[i] == line[2] for i, line in enumerate(p.lines)):
            points = p.points - p.points_refunded
        p.points_refunded += points
        left = points
        own = next((lot for lot in m.lots if lot.key == ("tx", tx_id)), None)
        if own is not None:
            take = min(left, own.remaining)
            own.remaining -= take
            left -= take
            # Points of this purchase that expired unspent were never spent: nothing to take back.
            gone = min(left, own.expired)
            own.expired -= gone
            left -= gone
        take = min(left, m.available)
        if take:
            self._draw(m, take)
            left -= take
        m.debt += left
        washes = sum(q for i, q in wanted.items() if p.lines[i][0] == "WASH")
        if washes:
            stamps = m.stamps
            for v in range(len(m.vouchers) - 1, -1, -1):  # unused vouchers go back first, newest first
                if stamps >= washes:
                    break
                if m.vouchers[v] == "issued":
                    m.vouchers[v] = "revoked"
                    stamps += STAMPS_PER_VOUCHER
            m.stamps = max(0, stamps - washes)
        return points, left

    def redeem(self, redemption_id: int, member_id: int, reward: str, now: datetime) -> list[tuple[Lot, int]]:
        m = self.members[member_id]
        cost, min_tier = REWARDS[reward]
        names = [name for name, _, _ in LADDER]
        mine = m.tier or names[0]
        if min_tier is not None and names.index(mine) < names.index(min_tier):
            raise ModelRefusal("not_allowed")
        if m.available < cost:
            raise ModelRefusal("insufficient")
        draws = self._draw(m, cost)
        self.redemptions[redemption_id] = Redemption(redemption_id, member_id, cost, now, draws)
        return draws

    def cancel(self, redemption_id: int, now: datetime) -> None:
        r = self.redemptions[redemption_id]
        if r.cancelled:
            raise ModelRefusal("conflict")
        if local_day(now) != local_day(r.at) or now < r.at:
            raise ModelRefusal("not_allowed")
        if any(lot.state == "expired" for lot, _ in r.draws):
            raise ModelRefusal("conflict")
        r.cancelled = True
        for lot, amount in r.draws:
            lot.remaining += amount
        self._settle(self.members[r.member])

    def adjust(self, adjustment_id: int, member_id: int, points: int, now: datetime) -> None:
        m = self.members[member_id]
        if points > 0:
            self._lot(m, ("adj", adjustment_id), points, "available", now)
            self._settle(m)
        else:
            if m.available < -points:
                raise ModelRefusal("insufficient")
            self._draw(m, -points)

    def release(self, now: datetime) -> None:
        for m in self.members.values():
            for lot in m.lots:
                if lot.state == "pending" and lot.pending_until <= now:
                    lot.state = "available"
        for m in self.members.values():
            self._settle(m)

    def expire(self, now: datetime) -> None:
        for m in self.members.values():
            for lot in m.lots:
                if lot.state in ("pending", "available") and lot.expires_at <= now:
                    lot.expired += lot.remaining
                    lot.remaining = 0
                    lot.state = "expired"

    def evaluate_tiers(self, now: datetime) -> None:
        for m in self.members.values():
            m.tier = self.level(self.qualifying(m.id, now))
