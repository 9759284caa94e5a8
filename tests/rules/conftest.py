"""Shared builders for the rules tests: small programs written as YAML, as marketers write them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import rules

DEMO = Path(__file__).parents[2] / "examples" / "kaffeehaus.yaml"

HEADER = """\
program: Test
currency: EUR
timezone: Europe/Berlin
points: {{rounding: {rounding}}}
{tiers}rewards:
  - {{code: COFFEE, name: Free coffee, cost: 300}}
  - {{code: FREE-WASH, name: Free wash}}
rules:
"""

TIERS = """\
tiers:
  levels:
    - {name: bronze, min: 0}
    - {name: silver, min: 1000, earn_multiplier: 1.25}
    - {name: gold, min: 5000, earn_multiplier: 1.5}
"""


def program_text(rules_yaml: str, *, rounding: str = "floor", tiers: bool = False) -> str:
    """A whole document around ``rules_yaml``: a YAML list of rules, pieces of it indented any way."""
    lines, dash = [], 0
    for line in rules_yaml.splitlines():
        text = line.lstrip()
        if not text:
            continue
        indent = len(line) - len(text)
        if text.startswith("- "):
            dash = indent
        lines.append("  " + " " * max(0, indent - dash) + text)
    return HEADER.format(rounding=rounding, tiers=TIERS if tiers else "") + "\n".join(lines) + "\n"


@pytest.fixture
def make_program() -> Callable[..., rules.CheckedProgram]:
    """Build a checked program from a YAML list of rules."""

    def make(rules_yaml: str, *, rounding: str = "floor", tiers: bool = False) -> rules.CheckedProgram:
        return rules.load_program(program_text(rules_yaml, rounding=rounding, tiers=tiers))

    return make


@pytest.fixture(scope="session")
def demo() -> rules.CheckedProgram:
    """The bundled demo program, examples/kaffeehaus.yaml."""
    return rules.load_program(DEMO.read_text(encoding="utf-8"))
