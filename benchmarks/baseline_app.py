"""The two baselines ``load_till.py`` measures next to the till, served with the same uvicorn options.

* ``GET /ping``: a bare Litestar JSON endpoint (what the framework and the server cost per request).
* ``POST /baskets``: decodes the till's basket with the same model (``api.schemas.PostTransactionRequest``)
  and does ONE raw asyncpg INSERT into a scratch table (what the smallest durable write costs).

Run as a uvicorn factory, ``benchmarks.baseline_app:create_app``; the scratch table's database is
``BENCH_BASELINE_DSN`` (a plain ``postgresql://`` DSN) and the table must exist (``SCRATCH_DDL``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar, Request, get, post
from litestar.params import JSONBody

from api.schemas import PostTransactionRequest

#: Connections per worker: the size of SQLAlchemy's default pool the till app gets (5 + 10 overflow).
POOL_SIZE = 15

SCRATCH_DDL = """
CREATE TABLE IF NOT EXISTS bench_baskets (
    id bigserial PRIMARY KEY,
    card text NOT NULL,
    external_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    amount bigint NOT NULL,
    lines integer NOT NULL
)
"""
_INSERT = (
    "INSERT INTO bench_baskets (card, external_id, occurred_at, amount, lines) VALUES ($1, $2, $3, $4, $5)"
    " RETURNING id"
)


@get("/ping", sync_to_thread=False)
def ping() -> dict[str, str]:
    return {"status": "ok"}


@post("/baskets", status_code=201)
async def post_basket(
    request: Request[Any, Any, Any], data: JSONBody[PostTransactionRequest]
) -> dict[str, int]:
    pool: asyncpg.Pool = request.app.state.pool
    amount = sum(i.unit_price * i.quantity for i in data.items)
    row_id = await pool.fetchval(
        _INSERT, data.card, data.external_id, data.occurred_at, amount, len(data.items)
    )
    return {"id": row_id, "amount": amount}


def create_app() -> Litestar:
    dsn = os.environ["BENCH_BASELINE_DSN"]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=POOL_SIZE)
        try:
            yield
        finally:
            await app.state.pool.close()

    return Litestar(route_handlers=[ping, post_basket], lifespan=[lifespan])
