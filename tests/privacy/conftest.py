"""Members' data tests run on SQLite and PostgreSQL in the storage tests' event loop: their hook and
fixtures are used here as they are (tests/ is on sys.path as the rootdir of the conftests)."""

from __future__ import annotations

from tests.cli.conftest import cli, migrated_template  # noqa: F401
from tests.storage.conftest import _dispose, db, pytest_pyfunc_call, runner, world  # noqa: F401
