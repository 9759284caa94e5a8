"""Database fixtures shared by the test suite: a migrated SQLite file and a throwaway PostgreSQL database.

``database_url`` is parametrized over both databases. PostgreSQL is reached at
``LOYALTY_TEST_PG`` (default: the local server, user postgres, trust auth); each session creates its
own ``loyalty_test_<hex>`` database and drops it afterwards. Without a reachable server the
PostgreSQL cases skip with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("LOYALTY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_unreachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except Exception as exc:  # any failure to connect means: no PostgreSQL for these tests
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}: {exc}"
    return None


def require_postgresql() -> None:
    """Skip (or, with CI=true, fail) when PostgreSQL is unreachable."""
    reason = _pg_unreachable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


#: A PgBouncer (transaction pooling) in front of that server. ``make test`` starts one
#: (deploy/pgbouncer/start.sh) and names it here: the API suite's PostgreSQL cases then run through it.
PGBOUNCER_URL = os.environ.get("LOYALTY_TEST_PGBOUNCER", "")
#: Where tests/storage/test_pgbouncer.py looks when none is named (start.sh's first port).
DEFAULT_PGBOUNCER_URL = "postgresql://postgres@127.0.0.1:6432/postgres"


def require_pgbouncer(url: str) -> None:
    """Skip (or, with CI=true, fail) when no PgBouncer at ``url`` reaches PostgreSQL."""

    async def ping() -> None:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5, statement_cache_size=0)
        try:
            await conn.execute("SELECT 1")
        finally:
            await conn.close()

    try:
        asyncio.run(ping())
    except Exception as exc:  # any failure to connect means: no pooler for these tests
        reason = f"PgBouncer not reachable at {url} (make pgbouncer; deploy/pgbouncer/start.sh): {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the PgBouncer tests must run)", pytrace=False)
        pytest.skip(reason)


def through_pgbouncer(url: str, pgbouncer: str) -> str:
    """The test database of ``url`` reached through the PgBouncer at ``pgbouncer``, marked so that
    the service uses its pooler settings (``?pooler=pgbouncer``)."""
    from sqlalchemy import make_url

    name = make_url(url).database
    pooled = make_url(pgbouncer).set(
        drivername="postgresql+asyncpg", database=name, query={"pooler": "pgbouncer"}
    )
    return pooled.render_as_string(hide_password=False)


REDIS_TEST_URL = os.environ.get("LOYALTY_TEST_REDIS", "redis://127.0.0.1:6379/0")


def require_redis() -> str:
    """The Redis for tests (``LOYALTY_TEST_REDIS``, default the local server); skip (or, with
    CI=true, fail) when it does not answer. Tests keep to a namespace of their own in it."""
    import redis

    try:
        with redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except Exception as exc:  # any failure to connect means: no Redis for these tests
        reason = f"Redis not reachable at {REDIS_TEST_URL}: {type(exc).__name__}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the Redis tests must run)", pytrace=False)
        pytest.skip(reason)
    return REDIS_TEST_URL


def _async_url(admin: str, name: str) -> str:
    base, _, _ = admin.rpartition("/")
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + name


@contextmanager
def throwaway_postgresql() -> Iterator[str]:
    """A new, empty ``loyalty_test_<hex>`` database on the test server (skipped, or failed under
    CI=true, without one); yields its async URL and drops it afterwards, whatever happened."""
    require_postgresql()
    name = f"loyalty_test_{secrets.token_hex(6)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield _async_url(PG_ADMIN_URL, name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from loyalty.storage.db import upgrade

    path: Path = tmp_path_factory.mktemp("sqlite") / "loyalty.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    from loyalty.storage.db import upgrade

    with throwaway_postgresql() as url:
        upgrade(url)
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of each kind (shared by the session: tests isolate by tenant)."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database (no tables) of the kind given by indirect parametrization."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    with throwaway_postgresql() as url:
        yield url


def pytest_configure(config: pytest.Config) -> None:
    """Record every statement of the session for the shard-readiness check (tests/shardcheck.py)."""
    import shardcheck  # tests/ is on sys.path: it holds this conftest

    config.pluginmanager.register(shardcheck.Plugin(), "shardcheck")
