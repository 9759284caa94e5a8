"""The one "did you mean ...?" of the engine: every unknown name (field, function, tier, reward,
document key) is answered with the closest known one, if any is close enough."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: How alike a name must be to be offered (difflib's ratio).
CUTOFF = 0.6


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str | None:
    """``did you mean <prefix><closest>?`` for the choice closest to ``word``, or None."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=CUTOFF)
    return f"did you mean {prefix}{close[0]}?" if close else None
