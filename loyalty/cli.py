"""The ``loyalty`` command: everything an operator runs, one command per service.

Bad input gives one line on stderr (``loyalty: error: ...``, or ``FILE:LINE:COL: ...`` per problem in a
program document) and a non-zero exit; nothing is written.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

import rules
from loyalty.baskets import Basket, BasketItem, BasketMember, BasketOutlet

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Loyalty engine: programs, members, cards, jobs and reports.")
program_app = typer.Typer(no_args_is_help=True, help="Validate and inspect program documents.")
app.add_typer(program_app, name="program")

# Wide enough for explanations when the output is a file or a pipe (rich would assume 80 columns).
out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class CliError(Exception):
    """A one-line message for the operator; exit status 1."""


def _read(path: Path, what: str, limit: int = 8 * 1024 * 1024) -> str:
    try:
        if path.stat().st_size > limit:
            raise CliError(f"{path}: {what} is larger than {limit // 1024 // 1024} MB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, expected a {what}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: {what} is not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None


def _load_program(path: Path) -> rules.CheckedProgram:
    """Load and check a program file; print every problem (one line each) and exit 1 if invalid."""
    try:
        return rules.load_program(_read(path, "program document"))
    except rules.ProgramError as exc:
        for issue in exc.issues:
            err.print(issue.format(str(path)), markup=False, soft_wrap=True)
        raise CliError(f"{path}: {len(exc.issues)} problem{'s' if len(exc.issues) != 1 else ''} found") from None


@program_app.command("validate")
def program_validate(
    file: Annotated[Path, typer.Argument(help="Program document (YAML or JSON).")],
) -> None:
    """Check a program document: syntax, fields, conditions, references. Exit 1 on any problem."""
    program = _load_program(file)
    doc = program.document
    tiers = len(doc.tiers.levels) if doc.tiers else 0
    out.print(f"{file}: ok — {doc.program}: {len(doc.rules)} rules, {len(doc.rewards)} rewards, "
              f"{tiers} tiers (version {program.digest[:12]})", markup=False)


@program_app.command("source")
def program_source(file: Annotated[Path, typer.Argument(help="Program document (YAML or JSON).")]) -> None:
    """Print the Python source the program compiles to (for review and debugging)."""
    out.print(rules.compile_program(_load_program(file)).source, markup=False)


@app.command()
def simulate(
    program_file: Annotated[Path, typer.Argument(help="Program document (YAML or JSON).")],
    basket_file: Annotated[Path, typer.Argument(help="Basket JSON: occurred_at, items, member, outlet.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate one basket against a program and print the points with the rule-by-rule explanation."""
    program = _load_program(program_file)
    text = _read(basket_file, "basket")
    try:
        basket = Basket.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "basket"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CliError(f"{basket_file}: {where}: {first['msg']}{more}") from None
    result = _evaluate(program, basket)
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
    else:
        _show(program, basket, result)


def _evaluate(program: rules.CheckedProgram, basket: Basket) -> rules.Result:
    try:
        return rules.evaluate(program, basket.transaction(), basket.engine_member(), basket.engine_outlet(),
                              basket.engine_event(), explain=True)
    except rules.EvaluationError as exc:
        raise CliError(str(exc)) from None


def _show(program: rules.CheckedProgram, basket: Basket, result: rules.Result) -> None:
    local = basket.occurred_at.astimezone(program.zone)
    out.print(f"[bold]{local:%a %Y-%m-%d %H:%M} {program.document.timezone}[/] — "
              f"member tier {result.tier or '-'}, {len(basket.items)} items")
    items = Table(show_edge=False, box=None, pad_edge=False)
    for col, justify in (("item", "left"), ("category", "left"), ("qty", "right"), ("amount", "right"),
                         ("points", "right")):
        items.add_column(col, justify=justify)  # type: ignore[arg-type]
    for line, pts in zip(basket.items, result.items, strict=True):
        items.add_row(line.sku, line.category, str(line.quantity), _money(line.unit_price * line.quantity),
                      str(pts.points))
    out.print(items)
    table = Table(show_edge=False, box=None, pad_edge=False, title_justify="left")
    table.add_column("rule")
    table.add_column("result")
    table.add_column("points", justify="right")
    table.add_column("because")
    for e in result.explanation:
        if e.kind == "stamp":
            figure = f"+{result.stamps.get(_card_of(program, e.rule), 0)} stamps" if e.matched else ""
        else:
            figure = _points(e.points) if e.matched else ""
        status = f"applied ×{e.applications}" if e.matched else "—"
        table.add_row(e.rule, status, figure, _because(e))
    if result.tier_points:
        table.add_row(f"tier {result.tier}", f"×{result.tier_multiplier.normalize():f}", _points(result.tier_points), "")
    out.print(table)
    unlocked = f"; vouchers: {', '.join(result.rewards_unlocked)}" if result.rewards_unlocked else ""
    out.print(f"[bold]total {result.total} points[/] (exact {result.exact.normalize():f}, rounded "
              f"{program.document.points.rounding}){unlocked}")


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _points(value: object) -> str:
    from decimal import Decimal

    assert isinstance(value, Decimal)
    return f"{value.quantize(Decimal('0.01')).normalize():f}"


def _card_of(program: rules.CheckedProgram, rule_id: str) -> str:
    return next((r.stamp_card or "" for r in program.rules if r.id == rule_id), "")


def _because(e: rules.engine.RuleExplanation) -> str:
    if not e.matched:
        if e.decided_by:
            return f"{e.decided_by} — false"
        statuses = sorted({d.status for d in e.items if d.status != "applied"})
        return "; ".join(statuses) or "no item matched"
    if e.decided_by:
        return e.decided_by
    matched = [d for d in e.items if d.status == "applied"]
    return (matched[0].decided_by or "") if matched else ""


@app.command()
def demo() -> None:
    """Evaluate the bundled demo program on sample baskets and explain each result."""
    path = EXAMPLES / "kaffeehaus.yaml"
    program = _load_program(path)
    out.print(f"[bold]{program.document.program}[/] — {path.name}, version {program.digest[:12]}, "
              f"{len(program.rules)} rules\n")
    zone = ZoneInfo(program.document.timezone)
    for title, basket in _demo_baskets(zone):
        out.rule(title)
        _show(program, basket, _evaluate(program, basket))
        out.print()


def _demo_baskets(zone: ZoneInfo) -> list[tuple[str, Basket]]:
    monday = datetime(2026, 11, 23, 9, 30, tzinfo=zone)
    tuesday = datetime(2026, 11, 24, 15, 10, tzinfo=zone)
    breakfast = [
        BasketItem(sku="LATTE", category="coffee", quantity=2, unit_price=390),
        BasketItem(sku="BIO-ROLL", category="organic", quantity=3, unit_price=85),
        BasketItem(sku="CIGS", category="tobacco", quantity=1, unit_price=850),
    ]
    return [
        ("Monday breakfast, bronze member", Basket(occurred_at=monday, items=breakfast)),
        ("The same basket on a Tuesday afternoon, silver member (exclusive ×3, tier ×1.25)",
         Basket(occurred_at=tuesday, items=breakfast, member=BasketMember(tier="silver"))),
        ("A gold member back after four months (win-back +200, never multiplied)",
         Basket(occurred_at=monday, member=BasketMember(tier="gold", last_visit_at=monday - timedelta(days=120)),
                items=[BasketItem(sku="CAKE", category="bakery", unit_price=420)])),
        ("Two car washes on a card holding 9 stamps (a free-wash voucher)",
         Basket(occurred_at=monday, outlet=BasketOutlet(id="wash-1", partner="carwash"),
                member=BasketMember(stamps={"wash": 9}),
                items=[BasketItem(sku="WASH", category="carwash", quantity=2, unit_price=1290)])),
    ]


def main() -> None:
    """Console entry point: one-line errors, never a traceback for bad input."""
    try:
        status = app(standalone_mode=False)
    except CliError as exc:
        err.print(f"loyalty: error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("loyalty: aborted", markup=False)
        sys.exit(130)
    except TyperException as exc:  # usage errors: unknown option, missing argument, ...
        err.print(f"loyalty: error: {exc.format_message()}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    # Without standalone mode, an Exit raised inside a command comes back as its status.
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
