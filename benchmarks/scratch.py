"""A throwaway PostgreSQL database for a benchmark: created on the server at ``LOYALTY_TEST_PG``
(default the local one, as postgres), dropped afterwards, whatever happens in between."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN_URL = os.environ.get("LOYALTY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


async def admin(sql: str) -> None:
    """Run one statement on the server's admin database."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def unreachable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        asyncio.run(admin("SELECT 1"))
    except Exception as exc:  # any failure to connect: no PostgreSQL for this benchmark
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}: {exc}"
    return None


@contextmanager
def scratch_database(prefix: str = "loyalty_bench") -> Iterator[str]:
    """A new, empty database; yields its SQLAlchemy (asyncpg) URL, and drops it on the way out."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        base, _, _ = PG_ADMIN_URL.rpartition("/")
        yield base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
