"""The browser pages: the till, the customer's card page, the marketer's editor and the dashboard.

The till, editor and dashboard are static shells whose scripts call the JSON API with the key the user
typed (kept in the browser's localStorage), so a page itself never holds a secret and needs no login.
The customer page is rendered here from the same services as the JSON customer endpoints: the card's
signed token is the credential, and a forged or unknown one gets a friendly 404 page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import partial
from pathlib import Path
from typing import Any

from litestar import Controller, get
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.auth import PUBLIC
from api.context import CardKeys, Db, Now
from loyalty.cards.errors import CardError
from loyalty.cards.secrets import Secrets
from loyalty.errors import LoyaltyError, NotAllowed
from loyalty.members import lookup, membership
from loyalty.points import balances
from loyalty.programs import versions
from loyalty.storage.db import Database
from rules.money import format_money

HERE = Path(__file__).resolve().parent
TEMPLATES = TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)
STATIC = create_static_files_router(
    path="/static", directories=[HERE / "static"], include_in_schema=False, opt={PUBLIC: True}
)

#: Longest card token the customer page tries to read (the JSON customer endpoints use the same bound).
MAX_TOKEN = 120
#: History rows the customer page shows; older ones are in the JSON history endpoint.
HISTORY_ROWS = 10

#: Pages load only their own scripts and styles and talk only to this origin: an injected script
#: could otherwise read the API key a till keeps in localStorage.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
#: The customer page shows one member's figures: never cached by a proxy or kept as a shared copy.
PRIVATE_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}

_CAUSES = {
    "earn": "Purchase",
    "refund": "Return",
    "redemption": "Reward",
    "redemption_cancel": "Reward cancelled",
    "expiry": "Expired",
    "adjustment": "Correction",
    "release": "Points now spendable",
    "debt_payment": "Paid off",
}


@dataclass(frozen=True, slots=True)
class Movement:
    label: str
    at: datetime
    #: The change of the member's total (available + pending - debt); 0 for a release.
    change: int
    note: str


def _movements(page: balances.HistoryPage, zone: tzinfo) -> list[Movement]:
    out = []
    for row in page.rows:
        change = row.available + row.pending - row.debt
        if row.cause == "release":
            note = f"{row.available} points can now be spent"
        elif row.pending and not row.available:
            note = "pending until the return window closes" if row.pending > 0 else ""
        else:
            note = ""
        out.append(Movement(_CAUSES.get(row.cause, row.cause), row.at.astimezone(zone), change, note))
    return out


def _month_name(month: str) -> str:
    year, number = month.split("-")
    return datetime(int(year), int(number), 1).strftime("%B %Y")


async def _card_context(db: Database, secrets: Secrets, now: datetime, token: str) -> dict[str, Any]:
    if len(token) > MAX_TOKEN:
        raise NotAllowed("this is not a card code")
    tenant_id, card_id = lookup.verify_customer_token(token, secrets, now=now)
    member_id = await membership.holder_id(db, tenant_id, membership.CardRef(card_id=card_id))
    program = (await versions.current(db, tenant_id, now)).program
    balance = await balances.balance(db, tenant_id, member_id, now=now)
    history = await balances.history(db, tenant_id, member_id, limit=HISTORY_ROWS)
    rewards = {r.code: r.name for r in program.document.rewards}
    tier = balance.tier
    share = 1.0
    if tier is not None and tier.next_threshold:
        share = min(1.0, tier.value / tier.next_threshold)
    return {
        "program": program.document.program,
        "balance": balance,
        "tier_share": share,
        "tier_unit": {"points": "points", "spend": "spent", "visits": "visits"}.get(
            tier.qualify_on if tier else "", ""
        ),
        "expiring": [(_month_name(e.month), e.points) for e in balance.expiring if e.points > 0],
        "reward_names": rewards,
        "vouchers": sorted(
            Counter(rewards.get(v.reward_code, v.reward_code) for v in balance.vouchers).items()
        ),
        "history": _movements(history, program.zone),
        "currency": program.document.currency,
        "money": partial(format_money, currency=program.document.currency),
    }


class WebController(Controller):
    """HTML pages; their data comes from the JSON API (or, for the card page, the same services)."""

    include_in_schema = False
    #: The pages ask for a key in the browser; the card page's credential is its token.
    opt = {PUBLIC: True}

    @get("/", name="web:index")
    async def index(self) -> Template:
        return Template("index.html", context={"page": "index"}, headers=SECURITY_HEADERS)

    @get("/till", name="web:till")
    async def till(self) -> Template:
        return Template("till.html", context={"page": "till"}, headers=SECURITY_HEADERS)

    @get("/editor", name="web:editor")
    async def editor(self) -> Template:
        return Template("editor.html", context={"page": "editor"}, headers=SECURITY_HEADERS)

    @get("/dashboard", name="web:dashboard")
    async def dashboard(self) -> Template:
        return Template("dashboard.html", context={"page": "dashboard"}, headers=SECURITY_HEADERS)

    @get("/campaigns", name="web:campaigns")
    async def campaigns(self) -> Template:
        return Template("campaigns.html", context={"page": "campaigns"}, headers=SECURITY_HEADERS)

    @get("/c/{token:str}", name="web:card")
    async def card(self, db: Db, now: Now, secrets: CardKeys, token: FromPath[str]) -> Template:
        """The page a phone opens from the card's QR code."""
        try:
            context = await _card_context(db, secrets, now, token)
        except (CardError, LoyaltyError) as exc:
            # Only our own, user-facing messages are shown; a bad token never says why it failed.
            reason = str(exc) if isinstance(exc, LoyaltyError) and "card" in str(exc) else None
            return Template(
                "card_error.html", context={"reason": reason}, status_code=404, headers=PRIVATE_HEADERS
            )
        return Template("card.html", context=context, headers=PRIVATE_HEADERS)
