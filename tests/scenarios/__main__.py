"""`make soak`: the chaos scenarios long, on a fresh SQLite file and a fresh PostgreSQL database,
ending with the table (scenario, operations, faults injected, failures, lost, doubled, audit
mismatches). Exits 1 unless every row is clean. PostgreSQL is restarted for real in the outage
scenario (``--no-restart`` to skip that on a shared server)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import tempfile
from pathlib import Path

from loyalty.cards.secrets import init_secrets
from loyalty.storage.db import upgrade
from tests.conftest import PG_ADMIN_URL, _async_url, _pg_admin

from . import scenarios
from .harness import Row, table


def main() -> int:
    # The in-process app of the backlog scenario configures the root logger at INFO (Litestar's
    # default): the till requests' own lines would drown the table.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every scenario's size")
    parser.add_argument("--no-restart", action="store_true", help="never restart PostgreSQL")
    args = parser.parse_args()
    n = lambda base: max(1, int(base * args.scale))  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="loyalty-soak-"))
    secrets_file = init_secrets(work / "secrets.json")
    sqlite_url = f"sqlite+aiosqlite:///{work / 'soak.db'}"
    upgrade(sqlite_url)
    name = f"loyalty_soak_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    pg_url = _async_url(PG_ADMIN_URL, name)
    rows: list[Row] = []
    try:
        upgrade(pg_url)
        for db, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
            log = work / f"{db}.log"
            rows.append(scenarios.double_spend(url, db, secrets_file, log, members=n(20), racers=10))
            print(table(rows[-1:]), flush=True)
            rows.append(
                scenarios.crash_replay(url, db, secrets_file, log, members=n(40), kill_probability=0.1)
            )
            print(table(rows[-1:]), flush=True)
            rows.append(scenarios.offline_backlog(url, db, secrets_file, receipts=n(1000), members=n(50)))
            print(table(rows[-1:]), flush=True)
        log = work / "outage.log"
        rows.append(scenarios.outage(pg_url, "postgresql", secrets_file, log, seconds=n(30), outages=3))
        print(table(rows[-1:]), flush=True)
        if not args.no_restart:
            rows.append(
                scenarios.outage(
                    pg_url, "postgresql", secrets_file, log, seconds=n(30), outages=2, restart=True
                )
            )
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print("\nsoak: the trust scenarios\n" + table(rows))
    for row in rows:
        for note in row.notes:
            print(f"  {row.scenario} [{row.database}]: {note}")
    return 0 if all(r.clean for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
