"""`loyalty keys create|list|revoke`: API keys for admins, marketers and cashiers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import Cli, count, ok, one_line_error


def test_create_list_and_revoke_keys(shop: Path, cli: Cli) -> None:
    """A created key prints its secret once; the list never shows secrets; a revoked key is marked."""
    done = ok(cli("keys", "create", "--role", "admin", "--name", "ops"))
    secret = done.out.strip()
    assert secret.startswith("lk_") and "shown once" in done.err
    ok(cli("keys", "create", "--role", "cashier", "--name", "till 1", "--outlet", "cafe-1"))
    listed = ok(cli("keys", "list", "--format", "json")).out
    assert secret not in listed
    keys = json.loads(listed)
    assert [(k["role"], k["revoked_at"]) for k in keys] == [("admin", None), ("cashier", None)]
    assert "revoked" in ok(cli("keys", "revoke", str(keys[0]["id"]))).out
    assert json.loads(ok(cli("keys", "list", "--format", "json")).out)[0]["revoked_at"] is not None


def test_bad_keys_are_refused_and_nothing_is_written(shop: Path, cli: Cli) -> None:
    """An unknown role, a cashier without an outlet, an unknown outlet: one line each, no key."""
    one_line_error(cli("keys", "create", "--role", "root", "--name", "x"), "role must be one of")
    one_line_error(cli("keys", "create", "--role", "cashier", "--name", "x"), "needs an outlet")
    one_line_error(
        cli("keys", "create", "--role", "cashier", "--name", "x", "--outlet", "nope"), "outlet 'nope'"
    )
    assert count(shop, "api_keys") == 0


def test_revoking_an_unknown_key_fails(shop: Path, cli: Cli) -> None:
    """Revoking a key id that does not exist is one error line."""
    one_line_error(cli("keys", "revoke", "999"), "no API key 999")
    one_line_error(cli("keys", "revoke", "abc"), "key_id")
