"""Storage test plumbing: one event loop for the session, async tests run in it, a fresh tenant per test.

Engines (and asyncpg pools) belong to an event loop, so every storage test and fixture runs in one
``asyncio.Runner`` kept for the session; ``async def`` tests are driven by the hook below, so no
async plugin is needed. Tests share a database per kind and isolate themselves by tenant.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from loyalty.admin import tenants
from loyalty.programs import versions
from loyalty.storage.db import Database

NOW = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
#: When test tenants and their first program version are set up: well before any test purchase.
SETUP = datetime(2024, 1, 1, tzinfo=UTC)

PROGRAM = """\
program: Test Bonus
currency: EUR
timezone: Europe/Berlin
points: {expire_after_months: 2, pending_days: 14, rounding: floor}
tiers:
  qualify_on: points
  window_months: 12
  levels:
    - {name: bronze, min: 0}
    - {name: silver, min: 1000, earn_multiplier: 1.5}
rewards:
  - {code: COFFEE, name: Free coffee, cost: 300}
  - {code: CAKE, name: Cake, cost: 100}
  - {code: LOUNGE, name: Lounge visit, cost: 50, min_tier: silver}
  - {code: FREE-WASH, name: Free wash}
rules:
  - id: base
    for_each: item
    where: item.category != "tobacco"
    earn: {per_currency_unit: 1}
  - id: wash-stamps
    for_each: item
    where: item.sku == "WASH"
    stamp: {card: wash, count: item.quantity, reward_at: 5, reward: FREE-WASH}
"""

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as r:
        yield r


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    r: asyncio.Runner = pyfuncitem._request.getfixturevalue("runner")
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    r.run(pyfuncitem.obj(**args))
    return True


_databases: dict[str, Database] = {}


@pytest.fixture
def db(database_url: str, runner: asyncio.Runner) -> Database:
    """A Database on each kind of server (one engine per URL for the session)."""
    if database_url not in _databases:
        _databases[database_url] = Database.from_url(
            database_url, **({"pool_size": 20, "max_overflow": 40} if "postgresql" in database_url else {})
        )
    return _databases[database_url]


@pytest.fixture(scope="session", autouse=True)
def _dispose(runner: asyncio.Runner) -> Iterator[None]:
    yield
    for database in _databases.values():
        runner.run(database.dispose())
    _databases.clear()


@dataclass(frozen=True)
class World:
    """One tenant with a published program, a partner and an outlet."""

    db: Database
    tenant_id: int
    partner_id: int
    outlet_id: int
    version_id: int


async def make_world(db: Database, program: str = PROGRAM, now: datetime = SETUP) -> World:
    n = next(_counter)
    code = f"t{n}-{id(db) % 10_000}-{datetime.now().timestamp():.6f}"
    tenant = await tenants.create_tenant(db, code=code, name=f"Tenant {n}", card_prefix="60", now=now)
    version = await versions.create_version(db, tenant.id, program, actor="marketer", now=now)
    partner = await tenants.create_partner(
        db, tenant.id, code="bakery", name="Bakery", actor="admin", now=now
    )
    outlet = await tenants.create_outlet(
        db, tenant.id, partner_id=partner.id, code="b1", name="Bakery 1", actor="admin", now=now
    )
    return World(db, tenant.id, partner.id, outlet.id, version.id)


@pytest.fixture
def world(db: Database, runner: asyncio.Runner) -> World:
    return runner.run(make_world(db))


def basket(*lines: tuple[str, int, int] | tuple[str, int, int, str]) -> tuple[Any, ...]:
    """Items from (sku, unit price in cents, quantity[, category])."""
    import rules

    return tuple(
        rules.Item(
            sku=line[0], unit_price=line[1], quantity=line[2], category=line[3] if len(line) > 3 else "food"
        )
        for line in lines
    )  # type: ignore[misc]
