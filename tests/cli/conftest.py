"""Run the `loyalty` command in-process against a throwaway SQLite file, and look into that file."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.app import main

ROOT = Path(__file__).resolve().parents[2]
COALITION = ROOT / "examples" / "coalition.yaml"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


Cli = Callable[..., Run]


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from loyalty.storage.db import upgrade

    path = tmp_path_factory.mktemp("template") / "loyalty.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def db_file(tmp_path: Path, migrated_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated, empty database of its own (LOYALTY_DATABASE_URL points at it), and a secrets path."""
    path = tmp_path / "loyalty.db"
    shutil.copy(migrated_template, path)
    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.setenv("LOYALTY_SECRETS_FILE", str(tmp_path / "secrets.json"))
    monkeypatch.delenv("LOYALTY_TENANT", raising=False)
    return path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """Run ``loyalty ARGS`` in this process; returns the exit status and what it printed."""

    def run(*args: str | Path) -> Run:
        monkeypatch.setattr(sys, "argv", ["loyalty", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def ok(result: Run) -> Run:
    assert result.code == 0, result.err
    return result


def one_line_error(result: Run, *fragments: str) -> None:
    """The bad-input contract: non-zero exit, one `loyalty: error:` line on stderr (the last line)."""
    assert result.code != 0
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("loyalty: error:"), result.err
    for fragment in fragments:
        assert fragment in last, last


def count(db: Path, table: str, where: str = "1=1") -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}").fetchone()[0])


@pytest.fixture
def shop(db_file: Path, cli: Cli) -> Iterator[Path]:
    """A tenant `demo` (card prefix 7301) with the coalition program published, partners cafe, bakery and
    carwash, and outlets cafe-1, bakery-1, wash-1, and a secrets file."""
    ok(cli("secrets", "init"))
    ok(cli("tenant", "create", "demo", "--name", "Demo", "--card-prefix", "7301"))
    ok(cli("program", "publish", COALITION, "--valid-from", "2024-01-01", "--backdate"))
    for partner, outlet in (("cafe", "cafe-1"), ("bakery", "bakery-1"), ("carwash", "wash-1")):
        ok(cli("partner", "create", partner, "--name", partner.title()))
        ok(cli("outlet", "create", outlet, "--partner", partner, "--name", outlet.title()))
    yield db_file
