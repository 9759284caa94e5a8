"""`loyalty serve`: uvicorn with the API app factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Cli, count, ok, one_line_error


def test_serve_migrates_a_new_sqlite_file_and_starts_the_factory(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new SQLite file is migrated first; uvicorn gets the app factory by name, host, port and workers."""
    import uvicorn

    path = tmp_path / "fresh.db"
    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.setenv("LOYALTY_SECRETS_FILE", str(tmp_path / "secrets.json"))
    ok(cli("secrets", "init"))
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    ok(cli("serve", "--port", "8123", "--workers", "2"))
    assert len(calls) == 1 and calls[0][0] == "api.app:create_app", calls
    options = calls[0][1]
    assert {k: options[k] for k in ("factory", "host", "port", "workers")} == {
        "factory": True,
        "host": "127.0.0.1",
        "port": 8123,
        "workers": 2,
    }
    # A bounded graceful shutdown, our own access line instead of uvicorn's, JSON logs in every process.
    assert options["timeout_graceful_shutdown"] == 30 and options["access_log"] is False
    assert options["log_config"]["formatters"]["loyalty"]["()"] == "api.logs.Formatter"
    assert count(path, "tenants") == 0  # the schema exists


def test_serve_refuses_bad_options_and_a_missing_secrets_file(
    db_file: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad port or worker count, or no secrets file: one error line and no server."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start"))
    one_line_error(cli("serve", "--port", "70000"), "--port")
    one_line_error(cli("serve", "--workers", "0"), "--workers")
    one_line_error(cli("serve"), "secrets init")


def test_every_command_has_help(cli: Cli) -> None:
    """Each command and group answers --help with its usage."""
    for args in (
        ("db", "upgrade"),
        ("secrets", "init"),
        ("tenant", "create"),
        ("keys", "create"),
        ("keys", "list"),
        ("keys", "revoke"),
        ("partner", "create"),
        ("outlet", "list"),
        ("program", "publish"),
        ("backtest",),
        ("import", "transactions"),
        ("jobs", "run"),
        ("cards", "batch"),
        ("report", "liability"),
        ("report", "monthly"),
        ("report", "partners"),
        ("serve",),
        ("demo",),
        ("simulate",),
    ):
        done = ok(cli(*args, "--help"))
        assert "Usage" in done.out, args
