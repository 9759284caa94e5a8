"""The ``loyalty`` command: everything an operator runs, one command per service.

Bad input gives one line on stderr (``loyalty: error: ...``, or ``FILE:LINE:COL: ...`` per problem in a
program document) and a non-zero exit; nothing is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from typer.exceptions import TyperException

import rules
from cli.accounts import account_app
from cli.common import (
    ACTOR,
    CliError,
    Format,
    FormatOption,
    TenantOption,
    clock,
    currency_of,
    emit_rows,
    err,
    instant_of,
    open_database,
    out,
    read_text,
    run,
    tenant_of,
    zone_of,
)
from cli.members import member_app
from cli.partitions import register as register_partitions
from cli.webhooks import dispatch, start_in_thread, webhooks_app
from loyalty.admin import tenants
from loyalty.cards.errors import CardError
from loyalty.errors import LoyaltyError, NotFound
from loyalty.members import membership
from loyalty.ops import jobs, reports
from loyalty.points import transactions
from loyalty.points.baskets import Basket
from loyalty.programs import versions
from loyalty.storage.db import Database, outage
from loyalty.storage.models import Card, Tenant
from loyalty.storage.private import write_private
from loyalty.value import campaigns, figures, segments
from rules.hints import did_you_mean
from rules.money import format_money

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Loyalty engine: programs, members, cards, jobs and reports.",
)
program_app = typer.Typer(no_args_is_help=True, help="Validate and inspect program documents.")
app.add_typer(program_app, name="program")


def _load_program(path: Path) -> rules.CheckedProgram:
    """Load and check a program file; print every problem (one line each) and exit 1 if invalid."""
    try:
        return rules.load_program(read_text(path, "program document"))
    except rules.ProgramError as exc:
        for issue in exc.issues:
            err.print(issue.format(str(path)), markup=False, soft_wrap=True)
        raise CliError(
            f"{path}: {len(exc.issues)} problem{'s' if len(exc.issues) != 1 else ''} found"
        ) from None


@program_app.command("validate")
def program_validate(
    file: Annotated[Path, typer.Argument(help="Program document (YAML or JSON).")],
) -> None:
    """Check a program document: syntax, fields, conditions, references. Exit 1 on any problem."""
    program = _load_program(file)
    doc = program.document
    tiers = len(doc.tiers.levels) if doc.tiers else 0
    out.print(
        f"{file}: ok — {doc.program}: {len(doc.rules)} rules, {len(doc.rewards)} rewards, "
        f"{tiers} tiers (version {program.digest[:12]})",
        markup=False,
    )


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
    text = read_text(basket_file, "basket")
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
        return rules.evaluate(
            program,
            basket.transaction(),
            basket.engine_member(),
            basket.engine_outlet(),
            basket.engine_event(),
            explain=True,
        )
    except rules.EvaluationError as exc:
        raise CliError(str(exc)) from None


def _show(program: rules.CheckedProgram, basket: Basket, result: rules.Result) -> None:
    local = basket.occurred_at.astimezone(program.zone)
    out.print(
        f"[bold]{local:%a %Y-%m-%d %H:%M} {program.document.timezone}[/] — "
        f"member tier {result.tier or '-'}, {len(basket.items)} items"
    )
    items = Table(show_edge=False, box=None, pad_edge=False)
    for col, justify in (
        ("item", "left"),
        ("category", "left"),
        ("qty", "right"),
        ("amount", "right"),
        ("points", "right"),
    ):
        items.add_column(col, justify=justify)  # type: ignore[arg-type]
    for line, pts in zip(basket.items, result.items, strict=True):
        items.add_row(
            line.sku,
            line.category,
            str(line.quantity),
            _money(line.unit_price * line.quantity, program.document.currency),
            str(pts.points),
        )
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
        table.add_row(
            f"tier {result.tier}", f"×{result.tier_multiplier.normalize():f}", _points(result.tier_points), ""
        )
    out.print(table)
    unlocked = f"; vouchers: {', '.join(result.rewards_unlocked)}" if result.rewards_unlocked else ""
    out.print(
        f"[bold]total {result.total} points[/] (exact {result.exact.normalize():f}, rounded "
        f"{program.document.points.rounding}){unlocked}"
    )


def _money(amount: int, currency: str) -> str:
    """Minor units in the program's currency, as people read them (1,234.50 EUR; 1,235 JPY)."""
    return format_money(amount, currency)


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


# ---------------------------------------------------------------------------------------------------
# Operator commands: one per service, each opening the database of LOYALTY_DATABASE_URL.

db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
secrets_app = typer.Typer(no_args_is_help=True, help="Server secrets (card-token keys).")
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants: the businesses that run a program.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (admin, marketer, cashier).")
partner_app = typer.Typer(no_args_is_help=True, help="Partners taking part in the program.")
outlet_app = typer.Typer(no_args_is_help=True, help="Outlets (shops, tills) of the partners.")
import_app = typer.Typer(no_args_is_help=True, help="Import history.")
jobs_app = typer.Typer(no_args_is_help=True, help="Batch jobs: pending points, expiry, tiers.")
cards_app = typer.Typer(no_args_is_help=True, help="Printed cards.")
report_app = typer.Typer(no_args_is_help=True, help="Reports: liability, monthly movements, partners.")
campaign_app = typer.Typer(
    no_args_is_help=True, help="Campaigns: rules with a control group, and their lift."
)
segments_app = typer.Typer(no_args_is_help=True, help="Customer segments: run, sizes, members (for a CRM).")
for _sub, _name in (
    (db_app, "db"),
    (secrets_app, "secrets"),
    (tenant_app, "tenant"),
    (keys_app, "keys"),
    (partner_app, "partner"),
    (outlet_app, "outlet"),
    (import_app, "import"),
    (jobs_app, "jobs"),
    (cards_app, "cards"),
    (report_app, "report"),
    (segments_app, "segments"),
    (campaign_app, "campaign"),
    (member_app, "member"),
    (account_app, "account"),
    (webhooks_app, "webhooks"),
):
    app.add_typer(_sub, name=_name)
register_partitions(db_app)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema of LOYALTY_DATABASE_URL to the latest version."""
    from loyalty.storage.db import database_url, upgrade

    url = database_url()
    upgrade(url)
    out.print(f"database at {_safe_url(url)} is up to date")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@secrets_app.command("init")
def secrets_init(
    path: Annotated[
        Path | None, typer.Option(help="Secrets file (default LOYALTY_SECRETS_FILE or var/secrets.json).")
    ] = None,
) -> None:
    """Create the secrets file with a fresh card-token key; an existing file is never overwritten."""
    from loyalty.cards.secrets import init_secrets, secrets_path

    existed = secrets_path(path).exists()
    target = init_secrets(path)
    out.print(
        f"{target}: {'exists, left unchanged' if existed else 'created (keep it secret, never commit it)'}"
    )


@tenant_app.command("create")
def tenant_create(
    code: Annotated[str, typer.Argument(help="Short code, used as --tenant.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    card_prefix: Annotated[
        str, typer.Option(help="1 to 8 digits every card number of the tenant starts with.")
    ],
) -> None:
    """Create a tenant with its (empty) program."""
    _check_code(code, "tenant code")

    async def go() -> tenants.TenantView:
        async with open_database() as db:
            return await tenants.create_tenant(db, code=code, name=name, card_prefix=card_prefix, now=clock())

    t = run(go())
    out.print(f"tenant {t.code} created (id {t.id}, card prefix {t.card_prefix})")


@tenant_app.command("list")
def tenant_list(fmt: FormatOption = Format.table) -> None:
    """List the tenants."""

    async def go() -> list[dict[str, Any]]:
        async with open_database() as db, db.read() as s:
            rows = (
                await s.execute(
                    select(Tenant.id, Tenant.code, Tenant.name, Tenant.card_prefix).order_by(Tenant.code)
                )
            ).all()
        return [{"id": r[0], "code": r[1], "name": r[2], "card_prefix": r[3]} for r in rows]

    emit_rows(run(go()), fmt, "tenants")


def _check_code(code: str, what: str) -> None:
    if not code or len(code) > 64 or not all(c.isalnum() or c in "-_." for c in code):
        raise CliError(f"{what} {code!r}: use 1 to 64 letters, digits, '-', '_' or '.'")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, marketer or cashier.")],
    name: Annotated[str, typer.Option(help="What the key is for (a till, a person).")],
    outlet: Annotated[str | None, typer.Option(help="Outlet code (cashier keys only).")] = None,
    tenant: TenantOption = None,
) -> None:
    """Create an API key; its secret is printed this once."""
    from loyalty.admin import access

    async def go() -> access.NewKey:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            outlet_id = (await _outlet(db, t.id, outlet)).id if outlet else None
            return await access.create_key(
                db, t.id, role=role, name=name, actor=ACTOR, now=clock(), outlet_id=outlet_id
            )

    key = run(go())
    err.print(f"API key {key.info.id} ({key.info.role}) created; the secret is shown once:", markup=False)
    out.print(key.secret, markup=False)


async def _outlet(db: Database, tenant_id: int, code: str) -> tenants.OutletView:
    for o in await tenants.list_outlets(db, tenant_id):
        if o.code == code:
            return o
    raise NotFound(f"outlet {code!r} not found")


@keys_app.command("list")
def keys_list(tenant: TenantOption = None, fmt: FormatOption = Format.table) -> None:
    """List the tenant's API keys (never their secrets)."""
    from loyalty.admin import access

    async def go() -> list[dict[str, Any]]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return [
                {
                    "id": k.id,
                    "role": k.role,
                    "name": k.name,
                    "outlet_id": k.outlet_id,
                    "created_at": k.created_at.isoformat(timespec="seconds"),
                    "revoked_at": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else None,
                }
                for k in await access.list_keys(db, t.id)
            ]

    emit_rows(run(go()), fmt, "API keys")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (see `keys list`).")],
    tenant: TenantOption = None,
) -> None:
    """Revoke an API key: with LOYALTY_REDIS_URL set (as for the API), every API worker refuses it
    within a second; without Redis, within the API's five-second key cache."""
    from redis.exceptions import RedisError

    from loyalty.admin import access, shared_keys

    async def go() -> tuple[access.KeyInfo, str | None]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            key = await access.revoke_key(db, t.id, key_id, now=clock())
        try:
            await shared_keys.announce_revocation(key.id)
        except (RedisError, OSError) as exc:
            return key, f"{type(exc).__name__}: {exc}"
        return key, None

    key, unannounced = run(go())
    out.print(f"API key {key.id} ({key.role}, {key.name}) revoked")
    if unannounced is not None:
        err.print(
            f"warning: Redis not reachable ({unannounced}): API workers may accept the key for up to "
            "5 s more",
            markup=False,
        )


@partner_app.command("create")
def partner_create(
    code: Annotated[str, typer.Argument(help="Short code (used in rules as outlet.partner).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    tenant: TenantOption = None,
) -> None:
    """Add a partner to the tenant's program."""
    _check_code(code, "partner code")

    async def go() -> tenants.PartnerView:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await tenants.create_partner(db, t.id, code=code, name=name, actor=ACTOR, now=clock())

    p = run(go())
    out.print(f"partner {p.code} created (id {p.id})")


@partner_app.command("list")
def partner_list(tenant: TenantOption = None, fmt: FormatOption = Format.table) -> None:
    """List the partners with their number of outlets."""

    async def go() -> list[dict[str, Any]]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            outlets = await tenants.list_outlets(db, t.id)
            partners = await tenants.list_partners(db, t.id)
        return [
            {
                "id": p.id,
                "code": p.code,
                "name": p.name,
                "outlets": sum(1 for o in outlets if o.partner_id == p.id),
            }
            for p in partners
        ]

    emit_rows(run(go()), fmt, "partners")


@outlet_app.command("create")
def outlet_create(
    code: Annotated[str, typer.Argument(help="Short code.")],
    partner: Annotated[str, typer.Option(help="Partner code.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeatable), for outlet.tags.")] = None,
    tenant: TenantOption = None,
) -> None:
    """Add an outlet of a partner."""
    _check_code(code, "outlet code")

    async def go() -> tenants.OutletView:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            partner_id = next(
                (p.id for p in await tenants.list_partners(db, t.id) if p.code == partner), None
            )
            if partner_id is None:
                raise NotFound(f"partner {partner!r} not found")
            return await tenants.create_outlet(
                db,
                t.id,
                partner_id=partner_id,
                code=code,
                name=name,
                actor=ACTOR,
                now=clock(),
                tags=tag or (),
            )

    o = run(go())
    out.print(f"outlet {o.code} of {o.partner_code} created (id {o.id})")


@outlet_app.command("list")
def outlet_list(tenant: TenantOption = None, fmt: FormatOption = Format.table) -> None:
    """List the outlets."""

    async def go() -> list[dict[str, Any]]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return [
                {
                    "id": o.id,
                    "code": o.code,
                    "name": o.name,
                    "partner": o.partner_code,
                    "tags": ",".join(o.tags),
                }
                for o in await tenants.list_outlets(db, t.id)
            ]

    emit_rows(run(go()), fmt, "outlets")


@program_app.command("publish")
def program_publish(
    file: Annotated[Path, typer.Argument(help="Program document (YAML or JSON).")],
    valid_from: Annotated[
        str | None, typer.Option(help="Date or date-time it takes effect (default: now).")
    ] = None,
    backdate: Annotated[
        bool,
        typer.Option(
            help="Allow a past --valid-from for a tenant with no transactions yet (before importing history)."
        ),
    ] = False,
    tenant: TenantOption = None,
) -> None:
    """Validate and publish a program version (published versions never change)."""
    program = _load_program(file)
    text = read_text(file, "program document")

    async def go() -> versions.VersionView:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            now = clock()
            start = instant_of(valid_from, program.zone, "--valid-from") if valid_from else now
            # Checked here as well as in the service: a refused publish must not leave a draft behind.
            if start < now and not backdate:
                raise CliError("--valid-from must not be in the past (see --backdate for a first version)")
            latest = max(
                (v.valid_from for v in await versions.list_versions(db, t.id) if v.valid_from), default=None
            )
            if latest is not None and start <= latest:
                raise CliError(
                    f"--valid-from must be after the latest published version's ({latest.isoformat()})"
                )
            if start < now:
                if await transactions.transaction_count(db, t.id):
                    raise CliError(
                        "--backdate: the tenant has transactions; published history is never rewritten"
                    )
                # Nothing is priced yet, so a version valid since the history began rewrites nothing.
                now = start
            return await versions.create_version(db, t.id, text, actor=ACTOR, now=now, valid_from=start)

    v = run(go())
    out.print(
        f"{file}: published as version {v.number} ({v.digest[:12]}), valid from "
        f"{v.valid_from.isoformat() if v.valid_from else '-'}"
    )


@app.command()
def backtest(
    draft_file: Annotated[Path, typer.Argument(help="Draft program document (YAML or JSON).")],
    since: Annotated[str, typer.Option("--from", help="First day (or instant) of the period.")],
    until: Annotated[
        str, typer.Option("--to", help="Last day of the period (inclusive), or an end instant.")
    ],
    tenant: TenantOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Replay a period's purchases against a draft: per-rule difference and the members affected."""
    from loyalty.programs import backtest as bt

    draft = _load_program(draft_file)
    start, end = (
        instant_of(since, draft.zone, "--from"),
        instant_of(until, draft.zone, "--to", end_of_day=True),
    )
    if end <= start:
        raise CliError("--to must be after --from")

    async def go() -> bt.BacktestReport:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            with _progress(transient=True) as bar:
                task = bar.add_task("replaying purchases", total=None, note="")
                return await bt.backtest(
                    db,
                    t.id,
                    draft,
                    since=start,
                    until=end,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )

    report = run(go())
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
        return
    share = f" ({report.difference_share:+.1%})" if report.difference_share is not None else ""
    out.print(
        f"[bold]{draft.document.program}[/] draft {report.draft_digest[:12]} vs published "
        f"{(report.published_digest or '-')[:12]}, {start:%Y-%m-%d} to {end:%Y-%m-%d}: "
        f"{report.transactions:,} purchases replayed ({report.transactions_per_second:,.0f}/s)"
    )
    out.print(
        f"points: {report.actual_points:,} booked → {report.draft_points:,} with the draft, "
        f"difference [bold]{report.difference:+,}[/]{share}"
    )
    table = Table(
        title="per rule (before tier and rounding)", title_justify="left", show_edge=False, pad_edge=False
    )
    for col in ("rule", "applied", "booked", "applied (draft)", "draft", "difference"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    for r in report.rules:
        table.add_row(
            r.rule,
            f"{r.actual_applications:,}",
            _points(r.actual),
            f"{r.draft_applications:,}",
            _points(r.draft),
            _points(r.difference),
        )
    out.print(table)
    out.print(
        f"members: {report.members_changed:,} of {report.members:,} get other points; "
        f"{report.tier_changes:,} would end in another tier"
    )
    if report.top_members:
        out.print(
            "largest changes: "
            + ", ".join(f"member {m.member_id} {m.difference:+,}" for m in report.top_members[:10])
        )
    for shift in report.tier_shifts:
        out.print(f"  {shift.actual_tier or '-'} → {shift.draft_tier or '-'}: {shift.members:,} members")


def _progress(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=err,
        transient=transient,
    )


@import_app.command("transactions")
def import_transactions(
    file: Annotated[
        Path, typer.Argument(help="CSV (one row per basket line) or JSON lines (one purchase per line).")
    ],
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: from the suffix).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Purchases per database transaction.")
    ] = 500,
    tenant: TenantOption = None,
) -> None:
    """Import historic purchases (streamed, in all-or-nothing batches; re-running adds nothing).

    CSV columns: external_id, outlet, card, occurred_at, sku, unit_price (minor units), and optionally
    member, category, quantity, tags (separated by ';'). Consecutive rows with the same outlet and
    external_id are one purchase. JSON lines: {"external_id", "outlet", "card", "member"?,
    "occurred_at", "items": [{"sku", "category", "quantity", "unit_price", "tags"}]}.
    """
    from loyalty.ops import importer

    kind = importer.format_of(file, fmt)
    if file.is_dir():
        raise CliError(f"{file}: is a directory, expected a file")
    if not file.is_file():
        raise CliError(f"{file}: no such file")

    async def go() -> importer.ImportReport:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            with _progress() as bar:
                task = bar.add_task(f"importing {file.name}", total=file.stat().st_size, note="")
                # rich's wrapper moves the bar by the bytes read: the file is streamed, never loaded.
                stream = bar.open(file, "r", encoding="utf-8-sig", newline="", task_id=task)

                def step(r: importer.ImportReport) -> None:
                    bar.update(
                        task, note=f"{r.imported:,} imported, {r.skipped:,} skipped, {r.rejected:,} rejected"
                    )

                with stream:
                    return await importer.import_purchases(
                        db, t.id, importer.read_file(stream, kind), batch_size=batch_size, progress=step
                    )

    try:
        report = run(go())
    except UnicodeDecodeError:
        raise CliError(f"{file}: not UTF-8 text") from None
    out.print(
        f"{file}: {report.purchases:,} purchases read in {report.elapsed_seconds:.1f} s "
        f"({report.per_second:,.0f}/s): {report.imported:,} imported ({report.points:,} points), "
        f"{report.skipped:,} already booked, {report.rejected:,} rejected"
    )
    for b in report.rejected_batches:
        reasons = "; ".join(f"line {e.line}: {e.reason}" for e in b.errors[:5])
        more = f" (and {len(b.errors) - 5} more)" if len(b.errors) > 5 else ""
        err.print(
            f"{file}:{b.first_line}: lines {b.first_line}-{b.last_line} rejected, nothing of them "
            f"written ({b.purchases} purchases): {reasons}{more}",
            markup=False,
            soft_wrap=True,
        )
    if report.rejected:
        hidden = report.rejected_batch_count - len(report.rejected_batches)
        raise CliError(
            f"{report.rejected_batch_count} batch{'es' if report.rejected_batch_count > 1 else ''} "
            f"rejected{f' ({hidden} not listed)' if hidden else ''}; fix those lines and run the "
            "same file again (what was imported is skipped)"
        )


class Job(StrEnum):
    pending = "pending"
    expiry = "expiry"
    tiers = "tiers"
    reminders = "reminders"
    all = "all"


@jobs_app.command("run")
def jobs_run(
    job: Annotated[
        Job, typer.Argument(help="pending (release after the return window), expiry, tiers, or all.")
    ],
    as_of: Annotated[
        str | None, typer.Option(help="Run as of the end of this day (or this instant); default now.")
    ] = None,
    tenant: TenantOption = None,
) -> None:
    """Run a batch job; each is idempotent (a second run as of the same moment finds nothing)."""

    async def go() -> list[jobs.JobResult]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            when = (
                instant_of(as_of, await zone_of(db, t.id), "--as-of", end_of_day=True) if as_of else clock()
            )
            runs = {
                Job.pending: [jobs.release_pending],
                Job.expiry: [jobs.expire_lots],
                Job.tiers: [jobs.evaluate_tiers],
                Job.reminders: [jobs.remind_expiring],
                Job.all: [
                    jobs.release_pending,
                    jobs.expire_lots,
                    jobs.evaluate_tiers,
                    jobs.remind_expiring,
                    # Month partitions ahead, last (its DDL may wait for a lock): PostgreSQL only.
                    *([jobs.ensure_partitions] if db.is_postgresql else []),
                ],
            }[job]
            results = []
            with _progress(transient=True) as bar:
                task = bar.add_task(f"jobs as of {when.isoformat()}", total=len(runs), note="")
                for fn in runs:
                    bar.update(task, note=fn.__name__)
                    results.append(await fn(db, t.id, now=when))
                    bar.advance(task)
            return results

    for r in run(go()):
        what = (
            f"{r.members:,} members changed tier"
            if r.kind == "tiers"
            else f"{r.partitions:,} month partitions created"
            if r.kind == "partitions"
            else f"{r.lots:,} lots, {r.points:,} points, {r.members:,} members"
        )
        out.print(f"job {r.kind} (run {r.run_id}) as of {r.as_of.isoformat()}: {what}")


@segments_app.command("run")
def segments_run(
    as_of: Annotated[
        str | None, typer.Option(help="Run as of the end of this day (or this instant); default now.")
    ] = None,
    tenant: TenantOption = None,
) -> None:
    """Compute every member's figures and place them in the program's segments (moves are kept)."""

    async def go() -> segments.Run:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            when = (
                instant_of(as_of, await zone_of(db, t.id), "--as-of", end_of_day=True) if as_of else clock()
            )
            return await segments.run(db, t.id, now=when)

    r = run(go())
    sizes = ", ".join(
        f"{name or '(none)'} {n:,}" for name, n in sorted(r.sizes.items(), key=lambda kv: -kv[1])
    )
    model = "value models fitted" if r.fitted else "too few repeat buyers to fit the value models"
    out.print(
        f"segments as of {r.at.isoformat()}: {r.members:,} members, {r.moves:,} moved; {sizes}; {model}"
    )


@segments_app.command("show")
def segments_show(tenant: TenantOption = None, fmt: FormatOption = Format.table) -> None:
    """How many members each segment holds (by the last run)."""

    async def go() -> list[segments.SegmentSize]:
        async with open_database() as db:
            return await segments.sizes(db, (await tenant_of(db, tenant)).id)

    emit_rows([{"segment": s.segment or "(none)", "members": s.members} for s in run(go())], fmt, "segments")


@segments_app.command("export")
def segments_export(
    segment: Annotated[str, typer.Argument(help="The segment's name, as the program names it.")],
    tenant: TenantOption = None,
    fmt: FormatOption = Format.csv,
) -> None:
    """The members of one segment with their figures: a list a CRM or a mailer takes (CSV by default)."""

    async def go() -> list[dict[str, Any]]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            known = {s.name for s in (await versions.current(db, t.id, clock())).program.document.segments}
            if segment not in known:
                hint = did_you_mean(segment, sorted(known)) if known else None
                raise CliError(
                    f"unknown segment {segment!r}"
                    + (f" ({hint})" if hint else "")
                    + ("" if known else ": the program in force names no segments")
                )
            rows: list[dict[str, Any]] = []
            for f in await segments.members_in(db, t.id, segment):
                if isinstance(f, int):
                    rows.append(
                        {"member": f, "rfm": None, "spend": None, "last_purchase": None, "at_risk": None}
                    )
                else:
                    rows.append(
                        {
                            "member": f.member_id,
                            "rfm": f"{f.recency_score}{f.frequency_score}{f.monetary_score}",
                            "spend": f.spend,
                            "last_purchase": f.last_purchase_at.date().isoformat(),
                            "at_risk": f.at_risk,
                        }
                    )
            return rows

    emit_rows(run(go()), fmt, f"segment {segment}")


@campaign_app.command("lift")
def campaign_lift(
    rule: Annotated[str, typer.Argument(help="The id of a rule with a holdout share.")],
    since: Annotated[str | None, typer.Option("--from", help="First day of the campaign window.")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Last day of the campaign window.")] = None,
    days: Annotated[
        int, typer.Option(min=1, max=730, help="Days each member is followed after exposure.")
    ] = 60,
    tenant: TenantOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """What a campaign brought: treated against control members, with 95% intervals and sample sizes."""

    async def go() -> tuple[campaigns.Lift, str]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            zone = await zone_of(db, t.id)
            start = instant_of(since, zone, "--from") if since else None
            end = instant_of(until, zone, "--to", end_of_day=True) if until else None
            report = await campaigns.lift(
                db, t.id, rule, now=clock(), since=start, until=end, horizon_days=days
            )
            return report, await currency_of(db, t.id)

    report, currency = run(go())
    if not report.enough:
        raise CliError(
            f"campaign {report.rule}: {report.treated:,} treated and {report.control:,} control members"
            f" exposed so far; at least {campaigns.MIN_GROUP} in each group are needed to compare them"
        )
    rows = [
        {
            "metric": m.name,
            "treated_members": report.treated,
            "control_members": report.control,
            "treated": round(m.treated, 3),
            "control": round(m.control, 3),
            "lift": round(m.difference, 3),
            "low": round(m.low, 3),
            "high": round(m.high, 3),
            "relative": None if m.relative is None else f"{m.relative:+.1%}",
        }
        for m in report.metrics
    ]
    if fmt is Format.table:
        out.print(
            f"campaign {report.rule}: {report.treated:,} treated, {report.control:,} control"
            f" ({report.holdout:.0%} held out), exposed {report.since.date()} to {report.until.date()},"
            f" followed {report.horizon_days} days; revenue in minor units of {currency}"
        )
    emit_rows(rows, fmt, f"lift of {report.rule} (95% intervals)")


@app.command("audit")
def audit_command(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant code (default: every tenant).")
    ] = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Re-derive every balance from its entries and every purchase from its program version; print each
    mismatch and exit 1 if there is any."""
    from loyalty.ops.audit import AuditReport, audit

    async def go() -> list[tuple[str, AuditReport]]:
        async with open_database() as db:
            if tenant:
                chosen = [await tenants.tenant_by_code(db, tenant)]
            else:
                chosen = await tenants.list_tenants(db)
            reports = []
            with _progress(transient=True) as bar:
                for t in chosen:
                    task = bar.add_task(f"auditing {t.code}", total=None, note="")

                    def step(n: int, task: TaskID = task) -> None:
                        bar.update(task, note=f"{n:,} purchases re-evaluated")

                    reports.append((t.code, await audit(db, t.id, progress=step)))
                    bar.remove_task(task)
            return reports

    reports = run(go())
    if fmt is Format.json:
        out.print_json(json.dumps([{"tenant": code} | asdict(r) for code, r in reports], default=str))
    else:
        for code, r in reports:
            out.print(
                f"tenant {code}: {r.members:,} members, {r.entries:,} entries, {r.lots:,} lots, "
                f"{r.purchases:,} purchases re-evaluated"
                + (
                    f" ({r.purchases_recorded:,} without basket detail: checked against recorded points)"
                    if r.purchases_recorded
                    else ""
                )
                + ": "
                + ("[green]books are right[/]" if r.ok else f"[red]{len(r.findings)} check(s) failed[/]")
            )
            for f in r.findings:
                out.print(f"  {f.check}: {f.count:,}", markup=False)
                for example in f.examples:
                    out.print(f"    {example}", markup=False)
    if any(not r.ok for _, r in reports):
        raise typer.Exit(1)


@cards_app.command("batch")
def cards_batch(
    outlet: Annotated[str, typer.Option(help="Outlet code the cards are printed for.")],
    count: Annotated[int, typer.Option(help="Number of cards.")],
    out_file: Annotated[Path, typer.Option("--out", help="PDF file to write (A4, ten cards a page).")],
    tenant: TenantOption = None,
) -> None:
    """Issue blank cards for an outlet and write a printable PDF sheet with their QR codes."""
    from loyalty.cards.qr import card_url
    from loyalty.cards.secrets import load_secrets
    from loyalty.cards.sheet import MAX_SHEET_CARDS, SheetCard, render_sheet
    from loyalty.cards.tokens import sign_token

    if not 1 <= count <= MAX_SHEET_CARDS:
        raise CliError(f"--count: a sheet holds 1 to {MAX_SHEET_CARDS} cards")
    if not out_file.parent.is_dir():
        raise CliError(f"{out_file.parent}: no such directory")
    secrets = load_secrets()

    async def go() -> tuple[bytes, int]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            o = await _outlet(db, t.id, outlet)
            now = clock()
            priced = await versions.current(db, t.id, now)
            base = priced.program.document.public_base_url
            if not base:
                raise CliError("the program has no public_base_url: the QR codes would have nowhere to point")
            numbers = await membership.issue_cards(db, t.id, count, actor=ACTOR, now=now, outlet_id=o.id)
            async with db.read() as s:
                ids = dict(
                    (
                        await s.execute(
                            select(Card.number, Card.id).where(
                                Card.tenant_id == t.id, Card.number.in_(numbers)
                            )
                        )
                    ).all()
                )
            ring = secrets.ring(t.id)
            cards = [SheetCard(n, card_url(base, sign_token(ring, ids[n], now=now))) for n in numbers]
            return render_sheet(
                cards,
                program_name=priced.program.document.program,
                caption=o.name,
                label=f"{o.code} {numbers[0]}",
            ), len(cards)

    pdf, n = run(go())
    write_private(out_file, pdf)
    out.print(f"{out_file}: {n} cards for {outlet}")


@report_app.command("liability")
def report_liability(tenant: TenantOption = None, fmt: FormatOption = Format.table) -> None:
    """Points the program owes: available and pending, less members' debt."""

    async def go() -> reports.Liability:
        async with open_database() as db:
            return await reports.liability(db, (await tenant_of(db, tenant)).id)

    r = run(go())
    emit_rows(
        [
            {
                "members": r.members,
                "available": r.available,
                "pending": r.pending,
                "debt": r.debt,
                "net": r.net,
            }
        ],
        fmt,
        "liability (points)",
    )


@report_app.command("customers")
def report_customers(
    at_risk: Annotated[
        bool, typer.Option("--at-risk", help="Only members silent for longer than their own rhythm.")
    ] = False,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Compute as of this date (default: now).")
    ] = None,
    tenant: TenantOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Each purchasing member's figures: recency, frequency, spend, RFM scores, rhythm, at-risk, value
    (CSV or JSON for a CRM: `--at-risk --format csv`)."""

    async def go() -> list[figures.Figures]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            now = instant_of(as_of, await zone_of(db, t.id), "--as-of", end_of_day=True) if as_of else clock()
            found, _fit = await figures.compute(db, t.id, now=now)
            return [f for f in found if f.at_risk or not at_risk]

    rows = [
        {
            "member": f.member_id,
            "rfm": f.rfm,
            "purchase_days": f.purchase_days,
            "spend": f.spend,
            "last_purchase": f.last_purchase_at.date().isoformat(),
            "days_silent": round(f.recency_days),
            "interval_days": None if f.typical_interval_days is None else round(f.typical_interval_days, 1),
            "due_in_days": None if f.expected_visit_in_days is None else round(f.expected_visit_in_days, 1),
            "at_risk": f.at_risk,
            "alive": f.alive,
            "predicted_value": f.predicted_value,
        }
        for f in run(go())
    ]
    emit_rows(rows, fmt, "members at risk" if at_risk else "customer figures")


@report_app.command("monthly")
def report_monthly(
    months: Annotated[int, typer.Option(min=1, max=36, help="Months to cover, ending with this one.")] = 12,
    tenant: TenantOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Points issued, reversed, redeemed, expired and adjusted per calendar month."""
    from loyalty.calendar import add_months, local_month, month_start

    async def go() -> list[reports.MonthMovements]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            now = clock()
            zone = await zone_of(db, t.id)
            since = month_start(*add_months(*local_month(now, zone), 1 - months), zone)
            return await reports.movements(db, t.id, since=since, months=months, now=now)

    emit_rows([dataclasses.asdict(m) for m in run(go())], fmt, "movements per month (points)")


@report_app.command("partners")
def report_partners(
    since: Annotated[str | None, typer.Option("--from", help="First day (default: a year ago).")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Last day, inclusive (default: today).")] = None,
    tenant: TenantOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Per partner: purchases, spend (net of refunds), points issued and redeemed there."""

    async def go() -> tuple[list[reports.PartnerSettlement], str]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            zone = await zone_of(db, t.id)
            end = instant_of(until, zone, "--to", end_of_day=True) if until else clock()
            start = instant_of(since, zone, "--from") if since else end - timedelta(days=365)
            if end <= start:
                raise CliError("--to must be after --from")
            return await reports.settlement(db, t.id, since=start, until=end), await currency_of(db, t.id)

    settled, currency = run(go())
    rows = [dataclasses.asdict(p) for p in settled]
    for r in rows:
        r["spend"] = _money(r["spend"], currency) if fmt is Format.table else r["spend"]
    emit_rows(rows, fmt, f"partners (spend in {currency}; csv and json: minor units)")


#: How long ``serve`` lets requests in flight finish after SIGTERM, in whole seconds as uvicorn takes
#: it (LOYALTY_SHUTDOWN_SECONDS overrides).
SHUTDOWN_SECONDS = 30
#: Longest graceful shutdown accepted: past it an orchestrator would have killed the process anyway.
MAX_SHUTDOWN_SECONDS = 3600
#: uvicorn's logging in every process of ``serve``, the supervisor's too: one JSON (or console, with
#: LOYALTY_LOG_FORMAT=console) line per record through the API's formatter, named here by string only
#: (the command line does not import the API). The access line is the app's own.
SERVE_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"loyalty": {"()": "api.logs.Formatter"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "loyalty", "stream": "ext://sys.stderr"}
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "uvicorn": {"handlers": [], "propagate": True},
        "uvicorn.access": {"handlers": [], "propagate": False},
    },
}


def _shutdown_seconds() -> int:
    raw = os.environ.get("LOYALTY_SHUTDOWN_SECONDS", str(SHUTDOWN_SECONDS))
    if not raw.strip().isdigit() or not 0 < int(raw) <= MAX_SHUTDOWN_SECONDS:
        raise CliError(
            f"LOYALTY_SHUTDOWN_SECONDS must be a whole number of seconds from 1 to {MAX_SHUTDOWN_SECONDS},"
            f" not {raw!r}"
        )
    return int(raw)


#: The file name prefixes prometheus-client's multiprocess mode writes (``<kind>_<pid>.db``).
_METRIC_FILE_KINDS = ("counter", "gauge", "histogram", "summary")


def _metrics_directory(workers: int) -> Path | None:
    """Workers' metrics must add up: prometheus-client's multiprocess mode, in a directory that holds
    nothing of an earlier run. Returns the directory made here (removed when the server stops); one
    given in PROMETHEUS_MULTIPROC_DIR is emptied of its metric files instead."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        # Only prometheus-client's own files (counter_<pid>.db, gauge_livesum_<pid>.db, ...): the
        # directory may be shared with anything, a SQLite database too.
        for kind in _METRIC_FILE_KINDS:
            for stale in Path(given).glob(f"{kind}_*.db"):
                stale.unlink()
        return None
    if workers == 1:
        return None
    made = Path(tempfile.mkdtemp(prefix="loyalty-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(made)
    return made


def _stop(signum: int, frame: Any) -> None:
    """SIGTERM outside uvicorn's own handling (before it starts, or passed on by it once it has shut
    down gracefully): leave through the ``finally`` blocks, with status 0."""
    raise SystemExit(0)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    dispatch_: Annotated[
        bool, typer.Option("--dispatch", help="Also send webhooks (a dispatcher thread in this process).")
    ] = False,
) -> None:
    """Run the HTTP API (and pages) with uvicorn; a new SQLite file is migrated first."""
    import uvicorn
    from sqlalchemy.engine import make_url

    from loyalty.cards.secrets import load_secrets
    from loyalty.storage.db import database_url, upgrade

    if os.environ.get("LOYALTY_LOG_FORMAT", "json") not in ("json", "console"):
        raise CliError("LOYALTY_LOG_FORMAT must be json or console")
    grace = _shutdown_seconds()
    url = make_url(database_url())
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        upgrade(str(url))
    load_secrets()  # fail here, in one line, rather than in every worker
    out.print(f"serving on http://{host}:{port} (API docs at /schema/swagger)")
    previous = signal.signal(signal.SIGTERM, _stop)
    metrics_dir = _metrics_directory(workers)
    halt = start_in_thread() if dispatch_ else None
    try:
        # On SIGTERM uvicorn stops accepting, lets requests in flight finish (for at most ``grace``
        # seconds), then runs the app's shutdown (database pool closed); the dispatcher stops after.
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            timeout_graceful_shutdown=grace,
            access_log=False,
            log_config=SERVE_LOGGING,
            # A spawned worker first imports this whole CLI (the main module): on a busy 2-core
            # machine that outlasts uvicorn's default 5 s health check, which kills it mid-import.
            timeout_worker_healthcheck=30,
        )
    finally:
        if halt is not None:
            halt()
        signal.signal(signal.SIGTERM, previous)
        if metrics_dir is not None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


app.command("dispatch")(dispatch)


@app.command()
def demo(
    members_: Annotated[int | None, typer.Option("--members", hidden=True, min=10)] = None,
    transactions_: Annotated[int | None, typer.Option("--transactions", hidden=True, min=100)] = None,
    directory: Annotated[Path, typer.Option("--dir", hidden=True)] = Path("var"),
) -> None:
    """Build a coalition demo (18 months of history in var/demo.db), narrate a day at the till, and
    print how to start the server. Running it again rebuilds var/demo.db."""
    from cli import demo as demo_

    def show(program: rules.CheckedProgram, items: list[rules.Item], evaluation: dict[str, Any]) -> None:
        table = Table(show_edge=False, box=None, pad_edge=False)
        for col in ("item", "category", "qty", "amount", "points"):
            table.add_column(col, justify="left" if col in ("item", "category") else "right")
        for it, pts in zip(items, evaluation["items"], strict=True):
            table.add_row(
                it.sku,
                it.category,
                str(it.quantity),
                _money(it.unit_price * it.quantity, program.document.currency),
                str(pts["points"]),
            )
        out.print(table)
        out.print(demo_.render_evaluation_table(evaluation))
        vouchers = evaluation["rewards_unlocked"]
        out.print(
            f"[bold]total {evaluation['total']} points[/] (exact {evaluation['exact']}, rounded "
            f"{program.document.points.rounding})"
            + (f"; vouchers: {', '.join(vouchers)}" if vouchers else "")
        )

    config = demo_.DemoConfig(directory=directory)
    config = dataclasses.replace(
        config, members=members_ or config.members, transactions=transactions_ or config.transactions
    )
    run(demo_.run(config, out, show))


def _database_error(exc: BaseException) -> str | None:
    """A driver's error that is not an outage but still the database's (say, the database named in
    the URL does not exist): its first line."""
    if isinstance(exc, DBAPIError):
        return (str(exc.orig or exc).splitlines() or ["?"])[0]
    return None


def main() -> None:
    """Console entry point: one-line errors, never a traceback for bad input."""
    try:
        status = app(standalone_mode=False)
    except (CliError, LoyaltyError, CardError) as exc:
        err.print(f"loyalty: error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
    except (OperationalError, ProgrammingError) as exc:
        # A database that is missing, unreachable or not migrated: say so in one line.
        reason = outage(exc) or (
            str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc).splitlines()[0]
        )
        hint = (
            " (run `loyalty db upgrade`)" if "no such table" in reason or "does not exist" in reason else ""
        )
        err.print(f"loyalty: error: database: {reason}{hint}", markup=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("loyalty: aborted", markup=False)
        sys.exit(130)
    except TyperException as exc:  # usage errors: unknown option, missing argument, ...
        err.print(f"loyalty: error: {exc.format_message()}", markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # Any other database failure (refused, unreachable host, missing database): one line too.
        failure = outage(exc) or _database_error(exc)
        if failure is None:
            raise
        err.print(f"loyalty: error: database: {failure}", markup=False, soft_wrap=True)
        sys.exit(1)
    # Without standalone mode, an Exit raised inside a command comes back as its status.
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
