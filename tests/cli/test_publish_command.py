"""`loyalty program publish FILE --valid-from`: a checked document becomes an immutable version."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import COALITION, Cli, count, ok, one_line_error


def test_publish_a_version_from_a_future_date(db_file: Path, cli: Cli) -> None:
    """A valid document is published as version 1 from the given day, midnight in the program's zone."""
    ok(cli("tenant", "create", "acme", "--name", "Acme", "--card-prefix", "42"))
    done = ok(cli("program", "publish", COALITION, "--valid-from", "2099-01-01"))
    assert "published as version 1" in done.out and "2098-12-31T23:00:00+00:00" in done.out
    assert count(db_file, "program_versions", "status = 'published'") == 1


def test_publish_refuses_the_past_without_backdate_and_backdate_after_history(
    db_file: Path, cli: Cli
) -> None:
    """A past --valid-from is refused; --backdate is allowed only while the tenant has no transactions."""
    ok(cli("tenant", "create", "acme", "--name", "Acme", "--card-prefix", "42"))
    one_line_error(
        cli("program", "publish", COALITION, "--valid-from", "2020-01-01"), "must not be in the past"
    )
    assert count(db_file, "program_versions") == 0
    ok(cli("program", "publish", COALITION, "--valid-from", "2020-01-01", "--backdate"))
    one_line_error(
        cli("program", "publish", COALITION, "--valid-from", "2020-01-01", "--backdate"),
        "must be after the latest",
    )


def test_publish_rejects_an_invalid_document_and_writes_nothing(
    db_file: Path, tmp_path: Path, cli: Cli
) -> None:
    """An invalid document prints its problems (file:line:col) and no version is stored."""
    ok(cli("tenant", "create", "acme", "--name", "Acme", "--card-prefix", "42"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(COALITION.read_text().replace("member.visits >= 3", "member.visit >= 3"))
    done = cli("program", "publish", bad)
    one_line_error(done, "1 problem found")
    assert f"{bad}:" in done.err and "did you mean member.visits?" in done.err
    one_line_error(cli("program", "publish", COALITION, "--valid-from", "soon"), "--valid-from")
    assert count(db_file, "program_versions") == 0


def test_the_coalition_example_is_valid(cli: Cli) -> None:
    """examples/coalition.yaml, the demo's program, passes `program validate`."""
    assert "ok — Stadtbonus" in ok(cli("program", "validate", COALITION)).out
