"""The operator CLI for program documents: validate, source, simulate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFFEEHAUS = ROOT / "examples" / "kaffeehaus.yaml"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=60,
    )


def test_validate_accepts_the_demo_program() -> None:
    """`loyalty program validate` exits 0 on the bundled program and names its version."""
    done = run("program", "validate", str(KAFFEEHAUS))
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "5 rules" in done.stdout


def test_validate_reports_a_misspelled_field_with_line_column_and_hint(tmp_path: Path) -> None:
    """A misspelled condition field fails with file:line:col, the message and a did-you-mean hint."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(KAFFEEHAUS.read_text().replace('item.category == "organic"', 'item.categroy == "organic"'))
    done = run("program", "validate", str(bad))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == (
        f"{bad}:31:12: rules[1].where: unknown field item.categroy (did you mean item.category?)"
    )
    assert lines[-1] == f"loyalty: error: {bad}: 1 problem found"


def test_validate_reports_every_problem_one_line_each(tmp_path: Path) -> None:
    """Several problems in one document are all reported, one line each, in document order."""
    bad = tmp_path / "bad.yaml"
    text = KAFFEEHAUS.read_text()
    text = text.replace('weekday(tx.time) == "tue"', "weekday(tx.time) == 2")
    text = text.replace('item.sku == "WASH"', 'item.skus == "WASH"')
    bad.write_text(text)
    done = run("program", "validate", str(bad))
    assert done.returncode == 1
    problems = done.stderr.strip().splitlines()[:-1]
    assert len(problems) == 2
    assert "cannot compare string with number" in problems[0]
    assert "unknown field item.skus" in problems[1] and "did you mean item.sku?" in problems[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("program", "validate", "/no/such/file.yaml"), "no such file"),
        (("program", "validate"), "Missing argument"),
        (("no-such-command",), "No such command"),
    ],
)
def test_bad_invocations_fail_with_one_line(args: tuple[str, ...], message: str) -> None:
    """Bad input gives a single `loyalty: error:` line and a non-zero exit, never a traceback."""
    done = run(*args)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("loyalty: error:")
    assert message in done.stderr


def test_simulate_prints_points_and_explanation(tmp_path: Path) -> None:
    """`loyalty simulate` evaluates a basket file and explains each rule's part of the total."""
    basket = tmp_path / "basket.json"
    basket.write_text(
        json.dumps(
            {
                "occurred_at": "2026-11-24T15:10:00+01:00",
                "member": {"tier": "silver"},
                "items": [{"sku": "LATTE", "category": "coffee", "quantity": 2, "unit_price": 390}],
            }
        )
    )
    done = run("simulate", str(KAFFEEHAUS), str(basket), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # 7.80 EUR x1 base, x3 Tuesday afternoon (exclusive), x1.25 silver = 29.25 -> floor 29
    assert result["total"] == 29
    assert {r["rule"] for r in result["rules"]} == {"base", "tuesday-afternoon"}
    assert any(e["rule"] == "organic-double" and not e["matched"] for e in result["explanation"])


def test_simulate_rejects_a_naive_time_and_unknown_fields(tmp_path: Path) -> None:
    """A basket with a naive datetime or an unknown field is refused in one line."""
    basket = tmp_path / "basket.json"
    basket.write_text(json.dumps({"occurred_at": "2026-11-24T15:10:00", "items": []}))
    done = run("simulate", str(KAFFEEHAUS), str(basket))
    assert done.returncode == 1 and "occurred_at" in done.stderr and "timezone" in done.stderr
    basket.write_text(json.dumps({"occurred_at": "2026-11-24T15:10:00Z", "items": [], "totl": 3}))
    done = run("simulate", str(KAFFEEHAUS), str(basket))
    assert done.returncode == 1 and "totl" in done.stderr


def test_simulate_shows_amounts_in_the_programs_currency(tmp_path: Path) -> None:
    """A yen program's amounts have no decimals, a dinar program's three."""
    basket = tmp_path / "basket.json"
    basket.write_text(
        json.dumps(
            {
                "occurred_at": "2026-11-24T10:10:00+01:00",
                "items": [{"sku": "MATCHA", "category": "tea", "quantity": 1, "unit_price": 1234}],
            }
        )
    )
    for currency, shown in (("JPY", "1,234 JPY"), ("KWD", "1.234 KWD"), ("EUR", "12.34 EUR")):
        program = tmp_path / f"{currency}.yaml"
        program.write_text(KAFFEEHAUS.read_text().replace("currency: EUR", f"currency: {currency}"))
        done = run("simulate", str(program), str(basket))
        assert done.returncode == 0, done.stderr
        assert shown in done.stdout, done.stdout
