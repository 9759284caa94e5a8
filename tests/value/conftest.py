"""The CDNOW sample ships inside the ``lifetimes`` wheel (MIT licence): the tests read it from the
wheel, fetched once by pip into a cache folder, rather than keeping a copy in this repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

WHEEL = "lifetimes==0.11.3"
CACHE = Path(__file__).resolve().parents[2] / ".cache" / "lifetimes"
FILES = ("cdnow_customers_summary.csv", "cdnow_customers_summary_with_transactions.csv")


def _wheel() -> Path | None:
    found = sorted(CACHE.glob("*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(CACHE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = sorted(CACHE.glob("*.whl"))
    return found[0] if fetched.returncode == 0 and found else None


@pytest.fixture(scope="session")
def cdnow() -> dict[str, str]:
    wheel = _wheel()
    if wheel is None:
        reason = f"cannot fetch the {WHEEL} wheel (it holds the CDNOW sample): no package index reachable"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with zipfile.ZipFile(wheel) as z:
        return {name: z.read(f"lifetimes/datasets/{name}").decode() for name in FILES}
