"""The rules engine against its alternatives: a 20-line basket under a 50-rule program.

Four contenders compute the same whole-points total: the compiled engine, the tree-walking reference
interpreter, the ``rule-engine`` package evaluating the same conditions, and the program written by hand
(the named baseline). The session ends with their ratios and the compile times for 50 and 500 rules.
Run with ``make bench``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

import rules
from benchmarks import rules_fixture as fx
from rules.engine import CompiledProgram
from rules.interpret import interpret

EVALUATE = "evaluate: 50 rules x 20 items"
COMPILE = "compile: parse + check + emit + compile(), cache bypassed"

# Targets from issue 3 ("Benchmark").
TREE_WALKER_TARGET = 20.0
RULE_ENGINE_TARGET = 100.0
HAND_WRITTEN_TARGET = 1.5


@dataclass(frozen=True)
class Workload:
    program: rules.CheckedProgram
    compiled: CompiledProgram
    tx: rules.Transaction
    member: rules.Member
    outlet: rules.Outlet
    rule_engine: fx.RuleEngineContender
    expected: int


def _totals(w: Workload, tx: rules.Transaction, member: rules.Member, outlet: rules.Outlet) -> dict[str, int]:
    return {
        "compiled": rules.evaluate(w.compiled, tx, member, outlet).total,
        "tree-walker": interpret(w.program, tx, member, outlet).total,
        "rule-engine": w.rule_engine.total(tx, member, outlet),
        "hand-written": fx.hand_written_total(tx, member, outlet),
    }


@pytest.fixture(scope="module")
def workload() -> Workload:
    program = rules.load_program_data(fx.program_data(50))
    assert len(program.rules) == 50
    tx = fx.basket()
    assert len(tx.items) == 20
    w = Workload(
        program,
        rules.compile_program(program),
        tx,
        fx.MEMBER,
        fx.OUTLET,
        fx.RuleEngineContender(fx.specs(50), fx.TIER_EXTRA),
        expected=0,
    )
    totals = _totals(w, tx, fx.MEMBER, fx.OUTLET)
    assert len(set(totals.values())) == 1, f"the contenders disagree before timing: {totals}"
    return replace(w, expected=totals["compiled"])


@pytest.fixture(scope="module")
def medians(bench_summary: list[Callable[[], list[str]]]) -> dict[str, float]:
    found: dict[str, float] = {}
    bench_summary.append(lambda: _summary(found))
    return found


def _record(benchmark: Any, medians: dict[str, float], name: str) -> None:
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        medians[name] = benchmark.stats.stats.median


def test_contenders_agree_on_random_baskets(workload: Workload) -> None:
    """All four contenders give the same total on random baskets, members, outlets and times."""
    rng = random.Random(20260314)
    for case in range(150):
        tx, member, outlet = fx.random_case(rng)
        totals = _totals(workload, tx, member, outlet)
        assert len(set(totals.values())) == 1, f"case {case}: {totals}"


def test_compiled(benchmark: Any, workload: Workload, medians: dict[str, float]) -> None:
    """The compiled engine: ``rules.evaluate`` with explain=False, Result included."""
    benchmark.group = EVALUATE
    w = workload
    result = benchmark(rules.evaluate, w.compiled, w.tx, w.member, w.outlet)
    assert result.total == w.expected
    _record(benchmark, medians, "compiled")


def test_tree_walker(benchmark: Any, workload: Workload, medians: dict[str, float]) -> None:
    """The reference interpreter walking the checked trees at every evaluation."""
    benchmark.group = EVALUATE
    w = workload
    result = benchmark(interpret, w.program, w.tx, w.member, w.outlet)
    assert result.total == w.expected
    _record(benchmark, medians, "tree-walker")


def test_rule_engine(benchmark: Any, workload: Workload, medians: dict[str, float]) -> None:
    """The rule-engine package: pre-parsed rules, ``Rule.matches`` per item or transaction."""
    benchmark.group = EVALUATE
    w = workload
    assert benchmark(w.rule_engine.total, w.tx, w.member, w.outlet) == w.expected
    _record(benchmark, medians, "rule-engine")


def test_hand_written(benchmark: Any, workload: Workload, medians: dict[str, float]) -> None:
    """The named baseline: this program written by hand in plain Python with Decimal money."""
    benchmark.group = EVALUATE
    w = workload
    assert benchmark(fx.hand_written_total, w.tx, w.member, w.outlet) == w.expected
    _record(benchmark, medians, "hand-written")


@pytest.mark.parametrize("n_rules", [50, 500])
def test_compile(benchmark: Any, n_rules: int, medians: dict[str, float]) -> None:
    """A program from plain data to its callable, bypassing the compile cache."""
    benchmark.group = COMPILE
    data = fx.program_data(n_rules)

    def build() -> CompiledProgram:
        return CompiledProgram(rules.load_program_data(data))

    compiled = benchmark.pedantic(build, rounds=10 if n_rules <= 50 else 5, warmup_rounds=1)
    assert len(compiled.program.rules) == n_rules
    _record(benchmark, medians, f"compile-{n_rules}")


def _summary(m: dict[str, float]) -> list[str]:
    """The ratio table: every contender against a named baseline, with the issue's targets."""
    if not m:
        return []

    def row(label: str, name: str, comparison: str = "") -> str:
        median = f"{m[name] * 1e6:10.1f} µs" if name in m else f"{'not run':>13}"
        return f"  {label:<32}{median}   {comparison}".rstrip()

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    c = m.get("compiled")
    versus: dict[str, str] = {}
    if c is not None and "hand-written" in m:
        ratio = c / m["hand-written"]
        versus["compiled"] = (
            f"compiled / hand-written: {ratio:.2f} (target <= {HAND_WRITTEN_TARGET}) "
            f"{verdict(ratio <= HAND_WRITTEN_TARGET)}"
        )
    for name, target in (("tree-walker", TREE_WALKER_TARGET), ("rule-engine", RULE_ENGINE_TARGET)):
        if c is not None and name in m:
            ratio = m[name] / c
            versus[name] = (
                f"compiled vs {name}: {ratio:.1f}x faster (target >= {target:g}x) {verdict(ratio >= target)}"
            )
    lines = [
        f"Rules engine, {EVALUATE} (pytest-benchmark medians; ratios against the named baselines):",
        row("hand-written Python (baseline)", "hand-written"),
        row("compiled engine", "compiled", versus.get("compiled", "")),
        row("tree-walking interpreter", "tree-walker", versus.get("tree-walker", "")),
        row("rule-engine package", "rule-engine", versus.get("rule-engine", "")),
    ]
    compile_times = [f"{n} rules {m[f'compile-{n}'] * 1e3:.1f} ms" for n in (50, 500) if f"compile-{n}" in m]
    if compile_times:
        lines.append(f"Compile time ({COMPILE.split(': ')[1]}): " + ", ".join(compile_times))
    return lines
