"""Migrations: they build the schema on empty databases, and agree with the models."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from loyalty.storage import partitions
from loyalty.storage.db import create_engine, upgrade
from loyalty.storage.models import load_all


async def _diff_and_tables(url: str) -> tuple[list[object], set[str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def compare(sync_conn):  # type: ignore[no-untyped-def]
                opts = {"compare_type": True, "include_object": partitions.include_object}
                context = MigrationContext.configure(sync_conn, opts=opts)
                return compare_metadata(context, load_all()), set(inspect(sync_conn).get_table_names())

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("empty_database_url", ["sqlite", "postgresql"], indirect=True)
def test_upgrade_on_empty_database_matches_models(empty_database_url: str) -> None:
    """`alembic upgrade head` builds every table on an empty database and autogenerate finds no difference."""
    upgrade(empty_database_url)
    diff, tables = asyncio.run(_diff_and_tables(empty_database_url))
    assert set(load_all().tables) <= tables
    assert diff == []


def test_upgrade_runs_from_any_directory(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The migrations are found through the package, whatever the working directory."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    upgrade(url)  # a second run is a no-op
    assert "alembic_version" in asyncio.run(_diff_and_tables(url))[1]
