"""Benchmarks: collect ``bench_*.py`` and print each benchmark file's summary after pytest-benchmark's table.

Run with ``make bench``. pytest-benchmark only reports times and ratios to the fastest entry; a benchmark
module that wants ratios against a named baseline appends a callable to the ``bench_summary`` fixture,
and its lines are printed at the end of the session.
"""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

import pytest

Summary = Callable[[], list[str]]
_SUMMARIES = pytest.StashKey[list[Summary]]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench_*.py`` even when the ini's ``python_files`` does not list that pattern."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    config = parent.config
    if parent.session.isinitpath(file_path) or any(
        fnmatch(file_path.name, pattern) for pattern in config.getini("python_files")
    ):
        return None  # pytest's own collector already takes it
    return pytest.Module.from_parent(parent, path=file_path)


@pytest.fixture(scope="session")
def bench_summary(pytestconfig: pytest.Config) -> list[Summary]:
    """Append a callable returning lines; they are printed once the session's results are in."""
    return pytestconfig.stash.setdefault(_SUMMARIES, [])


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for summary in config.stash.get(_SUMMARIES, []):
        lines = summary()
        if lines:
            terminalreporter.write_line("")
            for line in lines:
                terminalreporter.write_line(line)
