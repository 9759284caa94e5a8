"""The chaos scenarios, bounded (`make soak` runs them long): every count that is not the work
itself — failures, lost, doubled, audit mismatches — must be zero, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import scenarios
from .harness import Row, table

BACKENDS = ("sqlite", "postgresql")


def _check(row: Row) -> None:
    print("\n" + table([row]))
    assert row.operations > 0
    assert row.clean, f"{row}: {row.notes}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_spend_and_double_post_across_two_workers(
    request: pytest.FixtureRequest, backend: str, secrets_file: Path, tmp_path: Path
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    _check(scenarios.double_spend(url, backend, secrets_file, tmp_path / "server.log", members=4, racers=6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_crash_replay_books_every_action_once_with_the_same_answer(
    request: pytest.FixtureRequest, backend: str, secrets_file: Path, tmp_path: Path
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    row = scenarios.crash_replay(
        url, backend, secrets_file, tmp_path / "server.log", members=4, kill_probability=0.2
    )
    _check(row)
    assert row.faults > 0, "no fault fired: the scenario proved nothing"


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_offline_backlog_books_each_receipt_once_whatever_the_order(
    request: pytest.FixtureRequest, backend: str, secrets_file: Path
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    _check(scenarios.offline_backlog(url, backend, secrets_file, receipts=60, members=5))


def test_a_database_outage_gives_503s_then_recovers_with_nothing_lost(
    postgresql_url: str, secrets_file: Path, tmp_path: Path
) -> None:
    row = scenarios.outage(
        postgresql_url, "postgresql", secrets_file, tmp_path / "server.log", seconds=4, outages=2
    )
    _check(row)
