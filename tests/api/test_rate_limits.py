"""Rate limits per verified API key (per address before the key is verified): a 429 problem with
Retry-After, and other keys unaffected."""

from __future__ import annotations

import asyncio

from litestar.testing import TestClient

from api.app import create_app

from .conftest import build_tenant


def test_a_key_over_its_limit_gets_429_with_retry_after(sqlite_url: str, secrets) -> None:  # type: ignore[no-untyped-def]
    """Past the per-second limit a key gets 429 problem JSON with Retry-After; another key still works."""
    t = asyncio.run(build_tenant(sqlite_url, secrets, "rl"))
    app = create_app(database_url=sqlite_url, secrets=secrets, rate_limit=2, key_cache_seconds=30)
    with TestClient(app) as client:
        # The first request counts against the address (the key is not verified yet), the next
        # two against the key's own budget of 2 per second; then the key is limited. Sent until
        # the 429 comes, so that a slow machine (requests spread over more than a second) cannot
        # make the test miss it.
        answers = []
        for _ in range(60):
            answers.append(client.post("/v1/till/lookup", json={"code": t.card}, headers=t.headers()))
            if answers[-1].status_code == 429:
                break
        statuses = [a.status_code for a in answers]
        assert statuses[:3] == [200] * 3 and statuses[-1] == 429 and set(statuses[:-1]) == {200}, statuses
        limited = answers[-1]
        assert limited.headers["content-type"] == "application/problem+json"
        assert int(limited.headers["retry-after"]) >= 0
        assert limited.json()["type"].endswith("rate-limited")
        other = client.get("/v1/admin/reports/liability", headers=t.headers("admin"))
        assert other.status_code == 200
