"""Control groups: which members a campaign (a rule with a ``holdout`` share) holds out.

The assignment is a pure function of the rule's id and the member's id: the same member always lands
in the same group of the same campaign, on every till, in every process, in a backtest and in the lift
report, with nothing stored. A SHA-256 of both, read as a number in [0, 1), below the share: control.
Renaming the rule starts a new campaign with a fresh draw.
"""

from __future__ import annotations

import hashlib

from rules.program import CheckedProgram

_SCALE = float(2**64)


def draw(rule_id: str, member_id: str) -> float:
    """The member's uniform draw in [0, 1) for this campaign."""
    digest = hashlib.sha256(f"holdout|{rule_id}|{member_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_control(rule_id: str, member_id: str, share: float) -> bool:
    """True when the member is in the campaign's control group (a ``share`` of all members)."""
    return draw(rule_id, member_id) < share


def holdout_of(program: CheckedProgram, member_id: str) -> frozenset[str]:
    """The ids of the program's rules whose control group the member is in."""
    if not program.holdouts:
        return frozenset()
    return frozenset(rule for rule, share in program.holdouts if in_control(rule, member_id, share))
