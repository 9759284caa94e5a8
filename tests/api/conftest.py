"""API fixtures: two tenants with a published program, outlets, cards and a key for every role.

The app runs in Litestar's TestClient (its own event loop and its own database engine); the world is
built beforehand through the domain services in a separate event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from api.app import create_app
from loyalty.admin import access, tenants
from loyalty.cards.qr import card_url
from loyalty.cards.secrets import Secrets, init_secrets, load_secrets
from loyalty.cards.tokens import sign_token
from loyalty.members import lookup, membership
from loyalty.programs import versions
from loyalty.storage.db import Database
from tests.conftest import PGBOUNCER_URL, require_pgbouncer, through_pgbouncer

ROOT = Path(__file__).resolve().parents[2]
#: The example program and one campaign (a rule with a control group) that a new member never meets:
#: every endpoint has something to answer for, and no other test's points change.
PROGRAM = (
    (ROOT / "examples" / "kaffeehaus.yaml").read_text()
    + """\
  - id: welcome-back
    description: 50 points on the first purchase after a year away; one member in ten is held out
    when: member.days_since_last_visit > 365
    earn: {points: 50}
    limit: {per_member: 1}
    holdout: 0.1
"""
)
BASE_URL = "https://bonus.example.com"


@dataclass
class Tenant:
    """One tenant as the tests see it."""

    id: int
    outlet_id: int
    other_outlet_id: int
    keys: dict[str, str]
    other_cashier: str
    #: Printed numbers of blank cards; the first one is activated (``member_id``).
    cards: list[str]
    card_ids: dict[str, int]
    member_id: int
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, role: str = "cashier", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}", **extra}

    @property
    def card(self) -> str:
        return self.cards[0]

    @property
    def token(self) -> str:
        return self.tokens[self.card]


async def build_tenant(
    url: str,
    secrets: Secrets,
    code: str,
    card_prefix: str = "6012",
    valid_from: datetime | None = None,
    program: str = PROGRAM,
) -> Tenant:
    """A tenant with ``program`` (default the example) published (valid from ``valid_from``, default now)."""
    db = Database.from_url(url)
    now = datetime.now(UTC)
    try:
        t = await tenants.create_tenant(
            db, code=code, name=f"Tenant {code}", card_prefix=card_prefix, now=now
        )
        draft = await versions.save_draft(db, t.id, program, actor="test", now=now)
        since = valid_from or now
        await versions.publish(db, t.id, draft.id, actor="test", now=since, valid_from=since)
        partner = await tenants.create_partner(db, t.id, code="cafe", name="Café", actor="test", now=now)
        outlet = await tenants.create_outlet(
            db, t.id, partner_id=partner.id, code="cafe-1", name="Café 1", actor="test", now=now
        )
        other = await tenants.create_outlet(
            db, t.id, partner_id=partner.id, code="cafe-2", name="Café 2", actor="test", now=now
        )
        keys = {}
        for role in ("admin", "marketer"):
            keys[role] = (
                await access.create_key(db, t.id, role=role, name=role, actor="test", now=now)
            ).secret
        keys["cashier"] = (
            await access.create_key(
                db, t.id, role="cashier", name="till", actor="test", now=now, outlet_id=outlet.id
            )
        ).secret
        other_cashier = (
            await access.create_key(
                db, t.id, role="cashier", name="till 2", actor="test", now=now, outlet_id=other.id
            )
        ).secret
        cards = await membership.issue_cards(db, t.id, 4, actor="test", now=now, outlet_id=outlet.id)
        ids = await lookup.card_ids(db, t.id, cards)
        member = await membership.resolve_card(db, t.id, cards[0], now=now)
        ring = secrets.ring(t.id)
        tokens = {n: sign_token(ring, ids[n], now=now) for n in cards}
        return Tenant(t.id, outlet.id, other.id, keys, other_cashier, cards, ids, member.id, tokens)
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def postgresql_url(postgresql_url: str) -> str:
    """The suite's PostgreSQL database; through PgBouncer in transaction pooling when
    LOYALTY_TEST_PGBOUNCER names one (``make test`` does), so every PostgreSQL case of the API runs
    with the pooler settings, as a deployment behind one would. The database is still created and
    migrated directly (the fixture this one overrides)."""
    if not PGBOUNCER_URL:
        return postgresql_url
    require_pgbouncer(PGBOUNCER_URL)
    return through_pgbouncer(postgresql_url, PGBOUNCER_URL)


@pytest.fixture(scope="session")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Secrets:
    return load_secrets(init_secrets(tmp_path_factory.mktemp("secrets") / "secrets.json"))


_counter = iter(range(1, 10**6))
#: This module is imported twice in one run: by pytest for tests/api, and as ``tests.api.conftest`` by
#: the folders that reuse its app (tests/accounts, tests/events). Each import counts from 1, so the
#: tenant codes also carry the import's own mark, or two would create tenant "a1" in one database.
_IMPORT = uuid.uuid4().hex[:6]


@dataclass
class Api:
    client: TestClient[Any]
    a: Tenant
    b: Tenant
    url: str


@pytest.fixture
def api(database_url: str, secrets: Secrets) -> Iterator[Api]:
    """A running app on one database, with two fresh tenants A and B."""
    n = next(_counter)
    a = asyncio.run(build_tenant(database_url, secrets, f"a{n}-{_IMPORT}"))
    # Another card prefix: B's printed numbers must never also be valid numbers of A.
    b = asyncio.run(build_tenant(database_url, secrets, f"b{n}-{_IMPORT}", card_prefix="6099"))
    app = create_app(database_url=database_url, secrets=secrets, key_cache_seconds=0, rate_limit=10_000)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, a, b, database_url)


def scan_url(token: str) -> str:
    return card_url(BASE_URL, token)
