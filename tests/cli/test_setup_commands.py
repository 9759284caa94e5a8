"""`loyalty db upgrade`, `secrets init`, `tenant`, `partner` and `outlet`: the setup an operator runs once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, count, ok, one_line_error


def test_db_upgrade_creates_the_schema_of_a_new_sqlite_file(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db upgrade` migrates a new SQLite file, and running it again changes nothing."""
    path = tmp_path / "new.db"
    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    assert "up to date" in ok(cli("db", "upgrade")).out
    assert count(path, "tenants") == 0
    ok(cli("db", "upgrade"))


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////no/such/dir/x.db",
        "postgresql+asyncpg://postgres@127.0.0.1:9/loyalty",  # nothing listens there
        "postgresql+asyncpg://postgres@no-such-host.invalid/loyalty",
        "postgresql+asyncpg://postgres@127.0.0.1:5432/loyalty_no_such_database",
    ],
    ids=["sqlite-no-folder", "pg-refused", "pg-unknown-host", "pg-missing-database"],
)
def test_db_upgrade_of_an_unreachable_database_fails_in_one_line(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """An unreachable or missing database is one error line and a non-zero exit, not a traceback."""
    monkeypatch.setenv("LOYALTY_DATABASE_URL", url)
    result = cli("db", "upgrade")
    one_line_error(result, "database")
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not Path("/no/such/dir").exists()


def test_commands_on_an_unmigrated_database_say_to_upgrade(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command on an empty database file points the operator to `loyalty db upgrade`."""
    monkeypatch.setenv("LOYALTY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    one_line_error(cli("tenant", "list"), "loyalty db upgrade")


def test_secrets_init_creates_the_file_once(db_file: Path, tmp_path: Path, cli: Cli) -> None:
    """`secrets init` writes a private key file and never overwrites an existing one."""
    target = tmp_path / "secrets.json"
    assert "created" in ok(cli("secrets", "init")).out
    first = target.read_bytes()
    assert json.loads(first)["card_keys"][0]["id"] == 1
    assert target.stat().st_mode & 0o077 == 0
    assert "left unchanged" in ok(cli("secrets", "init")).out
    assert target.read_bytes() == first


def test_tenant_create_and_list(db_file: Path, cli: Cli) -> None:
    """`tenant create` adds a tenant with its program; `tenant list --format json` shows it."""
    assert (
        "tenant acme created"
        in ok(cli("tenant", "create", "acme", "--name", "Acme", "--card-prefix", "42")).out
    )
    rows = json.loads(ok(cli("tenant", "list", "--format", "json")).out)
    assert [(r["code"], r["card_prefix"]) for r in rows] == [("acme", "42")]
    assert count(db_file, "programs") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--card-prefix", "4x"), "card_prefix must be 1 to 8 digits"),
        (("--card-prefix", "123456789"), "card_prefix"),
        ((), "Missing option"),
    ],
)
def test_tenant_create_rejects_bad_input_and_writes_nothing(
    db_file: Path, cli: Cli, args: tuple[str, ...], message: str
) -> None:
    """A bad card prefix or a missing option is one error line and no tenant."""
    one_line_error(cli("tenant", "create", "acme", "--name", "Acme", *args), message)
    assert count(db_file, "tenants") == 0


def test_tenant_create_twice_is_a_conflict(db_file: Path, cli: Cli) -> None:
    """A second tenant with the same code is refused; the first stays the only one."""
    ok(cli("tenant", "create", "acme", "--name", "Acme", "--card-prefix", "42"))
    one_line_error(cli("tenant", "create", "acme", "--name", "Other", "--card-prefix", "43"), "exists")
    assert count(db_file, "tenants") == 1


def test_partner_and_outlet_create_and_list(db_file: Path, cli: Cli) -> None:
    """Partners and outlets are created for the only tenant and listed as a table, CSV or JSON."""
    ok(cli("tenant", "create", "acme", "--name", "Acme", "--card-prefix", "42"))
    ok(cli("partner", "create", "cafe", "--name", "Café"))
    ok(cli("outlet", "create", "cafe-1", "--partner", "cafe", "--name", "Café One", "--tag", "city"))
    partners = json.loads(ok(cli("partner", "list", "--format", "json")).out)
    assert partners == [{"id": partners[0]["id"], "code": "cafe", "name": "Café", "outlets": 1}]
    csv_out = ok(cli("outlet", "list", "--format", "csv")).out.splitlines()
    assert csv_out[0] == "id,code,name,partner,tags" and csv_out[1].endswith(",cafe-1,Café One,cafe,city")
    assert "cafe-1" in ok(cli("outlet", "list")).out


def test_outlet_of_an_unknown_partner_is_refused(db_file: Path, cli: Cli) -> None:
    """An outlet naming a partner that does not exist is one error line and no outlet."""
    ok(cli("tenant", "create", "acme", "--name", "Acme", "--card-prefix", "42"))
    one_line_error(
        cli("outlet", "create", "x-1", "--partner", "nope", "--name", "X"), "partner 'nope' not found"
    )
    assert count(db_file, "outlets") == 0


def test_partner_code_must_be_a_plain_code(db_file: Path, cli: Cli) -> None:
    """A partner code with spaces is refused before the database is touched."""
    ok(cli("tenant", "create", "acme", "--name", "Acme", "--card-prefix", "42"))
    one_line_error(cli("partner", "create", "my cafe", "--name", "Café"), "partner code")
    assert count(db_file, "partners") == 0


def test_tenant_selection_by_option_env_or_the_only_one(
    db_file: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two tenants a command needs --tenant or LOYALTY_TENANT; an unknown code is an error."""
    ok(cli("tenant", "create", "a", "--name", "A", "--card-prefix", "41"))
    ok(cli("partner", "create", "pa", "--name", "PA"))  # the only tenant
    ok(cli("tenant", "create", "b", "--name", "B", "--card-prefix", "42"))
    one_line_error(cli("partner", "list"), "several tenants")
    ok(cli("partner", "create", "pb", "--name", "PB", "--tenant", "b"))
    monkeypatch.setenv("LOYALTY_TENANT", "a")
    assert [p["code"] for p in json.loads(ok(cli("partner", "list", "--format", "json")).out)] == ["pa"]
    one_line_error(cli("partner", "list", "--tenant", "zz"), "tenant 'zz' not found")


def test_no_tenant_yet_says_what_to_do(db_file: Path, cli: Cli) -> None:
    """A tenant-scoped command before any tenant exists says to create one."""
    one_line_error(cli("outlet", "list"), "loyalty tenant create")
