"""``loyalty account``: one person, one account (merge a second account into the first) and lost cards."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import (
    ACTOR,
    Format,
    FormatOption,
    TenantOption,
    clock,
    emit_rows,
    open_database,
    run,
    tenant_of,
)
from loyalty.members import merge as merging
from loyalty.members import replacement

account_app = typer.Typer(no_args_is_help=True, help="Members' accounts: merge two, replace a lost card.")


@account_app.command("merge")
def account_merge(
    source: Annotated[int, typer.Argument(help="Member id of the account that is closed into the other.")],
    into: Annotated[int, typer.Option("--into", help="Member id of the account that stays.")],
    tenant: TenantOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Merge member SOURCE into member --into: points (with their expiry), debt, cards, purchases,
    stamps and vouchers move; the higher tier stays; SOURCE is closed."""

    async def go() -> merging.MergeResult:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await merging.merge(db, t.id, source, into=into, actor=ACTOR, now=clock())

    done = run(go())
    m = done.member
    emit_rows(
        [
            {
                "merged": done.source_id,
                "into": done.target_id,
                "points_moved": done.points_moved,
                "debt_moved": done.debt_moved,
                "cards_moved": " ".join(done.cards_moved),
                "available": m.available,
                "pending": m.pending,
                "debt": m.debt,
                "tier": m.tier,
            }
        ],
        fmt,
        "merged",
    )


@account_app.command("replace-card")
def account_replace_card(
    number: Annotated[str, typer.Argument(help="Printed number of the lost card (it is blocked).")],
    new: Annotated[
        str | None, typer.Option("--new", help="A blank card handed to the member (default: issue a number).")
    ] = None,
    tenant: TenantOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Block the lost card NUMBER and give its member a new card."""

    async def go() -> replacement.Replacement:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await replacement.replace_card(db, t.id, number, new_card=new, actor=ACTOR, now=clock())

    done = run(go())
    emit_rows(
        [
            {
                "member": done.member_id,
                "blocked": done.old_card,
                "new_card": done.new_card,
                "issued": done.issued,
            }
        ],
        fmt,
        "card replaced",
    )
