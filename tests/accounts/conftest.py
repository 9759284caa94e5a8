"""The accounts tests reuse the storage tests' plumbing (one event loop, a fresh tenant per test, on
SQLite and PostgreSQL) and the API tests' app with two tenants; nothing of their own to set up."""

from __future__ import annotations

from tests.api.conftest import api, secrets
from tests.cli.conftest import cli, db_file, migrated_template, shop
from tests.storage.conftest import _dispose, db, pytest_pyfunc_call, runner, world

__all__ = [
    "_dispose",
    "api",
    "cli",
    "db",
    "db_file",
    "migrated_template",
    "pytest_pyfunc_call",
    "runner",
    "secrets",
    "shop",
    "world",
]
