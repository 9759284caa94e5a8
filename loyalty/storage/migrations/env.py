"""Alembic environment: async engines for both databases, the models' metadata for autogenerate."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from loyalty.storage.db import create_engine
from loyalty.storage.models import UTCDateTime, load_all
from loyalty.storage.partitions import include_object

config = context.config
target_metadata = load_all()


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our UTC type as its plain SQL type so migrations never import the models."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection | None = None, **kwargs: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_item=render_item,  # type: ignore[arg-type]  # alembic types the last argument narrowly
        render_as_batch=True,  # SQLite alters tables by copying them
        include_object=include_object,  # PostgreSQL's partitions are not in the models
        compare_type=True,
        **kwargs,
    )


def _run(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:  # a caller (a test) passed an open connection
        _run(connectable)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
