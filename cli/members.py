"""``loyalty member``: a member's data — marketing consent, export, erasure, and basket-detail retention.

Each command is one service call of :mod:`loyalty.members.consent` or :mod:`loyalty.privacy`; bad
input is one ``loyalty: error:`` line, as everywhere in the CLI.
"""

from __future__ import annotations

import json
import sys
from datetime import tzinfo
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    ACTOR,
    CliError,
    TenantOption,
    clock,
    instant_of,
    open_database,
    out,
    run,
    tenant_of,
    zone_of,
)
from loyalty.members import consent
from loyalty.privacy import erasure, export, retention
from loyalty.storage.private import write_private

member_app = typer.Typer(
    no_args_is_help=True, help="A member's data: consent, export, erasure, basket-detail retention."
)

MemberId = Annotated[int, typer.Argument(help="The member's id.", min=1, max=2**62)]


@member_app.command("consent")
def member_consent(
    member_id: MemberId,
    marketing: Annotated[
        bool | None,
        typer.Option(
            "--marketing/--no-marketing",
            help="Record that the member gave (or withdrew) marketing consent; without it, show the history.",
        ),
    ] = None,
    source: Annotated[
        str, typer.Option(help="Where the member said so: till, app, web, admin, import, ...")
    ] = "admin",
    tenant: TenantOption = None,
) -> None:
    """Record a member's marketing consent (with the time, the source and the actor), or show it."""
    if marketing is not None:
        consent.check_source(source)

    async def go() -> consent.ConsentView:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            if marketing is None:
                return await consent.consent_of(db, t.id, member_id)
            return await consent.set_consent(
                db, t.id, member_id, marketing=marketing, source=source, actor=ACTOR, now=clock()
            )

    view = run(go())
    if marketing is not None:
        out.print(
            f"member {member_id}: marketing consent {'given' if marketing else 'withdrawn'} ({source})",
            markup=False,
        )
        return
    out.print(f"member {member_id}: marketing consent {'yes' if view.marketing else 'no'}", markup=False)
    for r in view.history:
        out.print(
            f"  {r.at.isoformat()}  {'given' if r.marketing else 'withdrawn'}  {r.source}  by {r.actor}",
            markup=False,
        )


@member_app.command("export")
def member_export(
    member_id: MemberId,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the JSON document to this file (mode 0600), not stdout."),
    ] = None,
    tenant: TenantOption = None,
) -> None:
    """Everything the engine holds about a member, as one JSON document."""
    if output is not None and output.is_dir():
        raise CliError(f"{output}: is a directory, expected a file name")

    async def go() -> dict[str, object]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await export.export(db, t.id, member_id, now=clock())

    document = run(go())
    text = json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        write_private(output, text.encode())
    except OSError as exc:
        raise CliError(f"{output}: {exc.strerror}") from None
    out.print(f"member {member_id}: exported to {output}", markup=False)


@member_app.command("erase")
def member_erase(
    member_id: MemberId,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the erasure cannot be undone.")] = False,
    tenant: TenantOption = None,
) -> None:
    """Erase a member's personal data (cards unlinked and blocked, basket detail purged, profiling
    removed); the books stay exact. Cannot be undone, so it needs --yes."""
    if not yes:
        raise CliError(f"erasing member {member_id} cannot be undone: run again with --yes to confirm")

    async def go() -> erasure.ErasureResult:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await erasure.erase(db, t.id, member_id, actor=ACTOR, now=clock())

    r = run(go())
    out.print(
        f"member {member_id} erased: {r.cards} card(s) unlinked and blocked, {r.purchases} purchase(s)"
        f" purged of detail, {r.events_scrubbed} event(s) scrubbed",
        markup=False,
    )


@member_app.command("purge-detail")
def member_purge_detail(
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Date or instant the age is counted from (default: now).")
    ] = None,
    tenant: TenantOption = None,
) -> None:
    """Purge the basket detail (SKU, category, tags) of purchases older than the program's
    privacy.basket_detail_months; totals and points stay. Safe to run again."""

    async def go() -> tuple[retention.RetentionResult, tzinfo]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            zone = await zone_of(db, t.id)
            now = clock() if as_of is None else instant_of(as_of, zone, "--as-of")
            return await retention.purge_old_detail(db, t.id, now=now), zone

    r, zone = run(go())
    if r.months is None:
        out.print("the program keeps basket detail (no privacy.basket_detail_months): nothing purged")
        return
    assert r.cutoff is not None
    out.print(
        f"{r.purged:,} purchase(s) before {r.cutoff.astimezone(zone).isoformat()} purged of basket detail"
        f" (older than {r.months} months, {r.batches} batch(es))",
        markup=False,
    )
