"""Fault points for the chaos scenarios (``tests/scenarios``): named places in the write path where
a test may have the process die, the way FoundationDB's simulation injects faults.

Off unless ``LOYALTY_FAULTS`` names them, as ``point=probability`` pairs separated by commas (e.g.
``ledger.after_commit=0.1``), with ``LOYALTY_FAULTS_SEED`` for a repeatable run. An armed point
kills its process with SIGKILL, as a crash or the OOM killer would: no ``finally`` runs, no answer
is sent. A production process never sets the variable, and an unarmed point costs one dict lookup.

Points:
* ``ledger.before_write`` — an operation is about to write; nothing of it is in the database.
* ``ledger.before_commit`` — its rows are written in an open transaction (SQLite, and PostgreSQL's
  locked path); the crash rolls them back.
* ``ledger.after_commit`` — its transaction committed; the till has not had the answer.
"""

from __future__ import annotations

import os
import random
import signal

_ARMED: dict[str, float] = {}
for _pair in filter(None, os.environ.get("LOYALTY_FAULTS", "").split(",")):
    _name, _, _p = _pair.partition("=")
    _ARMED[_name.strip()] = float(_p or 1)
_random = random.Random(int(os.environ.get("LOYALTY_FAULTS_SEED", "0")) ^ os.getpid())


def point(name: str) -> None:
    """Die here with the armed probability (never, unless LOYALTY_FAULTS arms ``name``)."""
    p = _ARMED.get(name)
    if p is not None and _random.random() < p:
        os.kill(os.getpid(), signal.SIGKILL)
