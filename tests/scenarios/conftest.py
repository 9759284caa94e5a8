"""Scenario fixtures: a secrets file the servers read, and a log folder for their output."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalty.cards.secrets import init_secrets


@pytest.fixture(scope="session")
def secrets_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_secrets(tmp_path_factory.mktemp("scenario-secrets") / "secrets.json")
