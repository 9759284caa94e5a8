"""``loyalty webhooks ...``: a tenant's webhook endpoints and their delivery log; ``loyalty dispatch``:
the dispatcher that sends them (also run beside the API by ``loyalty serve --dispatch``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Annotated, Any

import typer

from cli.common import (
    ACTOR,
    Format,
    FormatOption,
    TenantOption,
    clock,
    emit_rows,
    err,
    open_database,
    out,
    run,
    tenant_of,
)
from loyalty.events import dispatcher, endpoints
from loyalty.events.guard import Guard

webhooks_app = typer.Typer(no_args_is_help=True, help="Webhooks out: endpoints, deliveries, redelivery.")

AllowPrivate = Annotated[
    bool,
    typer.Option(
        "--allow-private",
        help="Allow targets on private, loopback and link-local addresses (your own network). "
        "Also LOYALTY_WEBHOOKS_ALLOW_PRIVATE=1.",
    ),
]


def _guard(allow_private: bool) -> Guard:
    return Guard(allow_private=True) if allow_private else Guard()


def _when(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _endpoint_row(e: endpoints.EndpointView) -> dict[str, Any]:
    return {
        "id": e.id,
        "url": e.url,
        "events": ", ".join(e.event_types) or "(all)",
        "state": e.state,
        "description": e.description,
        "created_at": _when(e.created_at),
        "old_secret_until": _when(e.previous_secret_until),
    }


def _print_secret(new: endpoints.NewSecret, what: str) -> None:
    err.print(f"webhook endpoint {new.endpoint.id} {what}; its signing secret is shown once:", markup=False)
    out.print(new.secret, markup=False)


@webhooks_app.command("create")
def webhooks_create(
    url: Annotated[str, typer.Argument(help="Where to POST the events (http or https).")],
    event: Annotated[
        list[str] | None, typer.Option("--event", help="An event type to send (repeat; none: every type).")
    ] = None,
    description: Annotated[str, typer.Option(help="What the endpoint is for.")] = "",
    allow_private: AllowPrivate = False,
    tenant: TenantOption = None,
) -> None:
    """Create an endpoint; its signing secret (whsec_...) is printed this once."""

    async def go() -> endpoints.NewSecret:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await endpoints.create_endpoint(
                db,
                t.id,
                url,
                event_types=event or [],
                description=description,
                actor=ACTOR,
                now=clock(),
                guard=_guard(allow_private),
            )

    _print_secret(run(go()), "created")


@webhooks_app.command("list")
def webhooks_list(tenant: TenantOption = None, fmt: FormatOption = Format.table) -> None:
    """List the tenant's endpoints (never their secrets)."""

    async def go() -> list[dict[str, Any]]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return [_endpoint_row(e) for e in await endpoints.list_endpoints(db, t.id, now=clock())]

    emit_rows(run(go()), fmt, "webhook endpoints")


@webhooks_app.command("rotate")
def webhooks_rotate(
    endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id (see `webhooks list`).")],
    tenant: TenantOption = None,
) -> None:
    """A new signing secret, printed this once; the old one keeps signing beside it for 24 hours."""

    async def go() -> endpoints.NewSecret:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await endpoints.rotate_secret(db, t.id, endpoint_id, actor=ACTOR, now=clock())

    _print_secret(run(go()), "rotated (the old secret signs too for 24 hours)")


def _set_state(endpoint_id: int, state: str, tenant: str | None) -> None:
    async def go() -> endpoints.EndpointView:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await endpoints.set_state(db, t.id, endpoint_id, state, actor=ACTOR, now=clock())

    e = run(go())
    out.print(f"webhook endpoint {e.id} ({e.url}) is {e.state}", markup=False)


@webhooks_app.command("disable")
def webhooks_disable(
    endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")], tenant: TenantOption = None
) -> None:
    """Stop sending to an endpoint: new events are not queued for it, queued ones wait."""
    _set_state(endpoint_id, "disabled", tenant)


@webhooks_app.command("enable")
def webhooks_enable(
    endpoint_id: Annotated[int, typer.Argument(help="The endpoint's id.")], tenant: TenantOption = None
) -> None:
    """Send to a disabled endpoint again (its queued deliveries first)."""
    _set_state(endpoint_id, "active", tenant)


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    endpoint: Annotated[int | None, typer.Option("--endpoint", help="Only this endpoint's.")] = None,
    state: Annotated[str | None, typer.Option(help="pending, delivered or dead.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=endpoints.MAX_PAGE, help="How many (newest first).")] = 50,
    tenant: TenantOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """The delivery log, newest first: state, attempts, last status, latency and error."""

    async def go() -> list[dict[str, Any]]:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            found = await endpoints.list_deliveries(db, t.id, endpoint_id=endpoint, state=state, limit=limit)
        return [
            {
                "id": d.id,
                "endpoint": d.endpoint_id,
                "webhook_id": d.webhook_id,
                "type": d.event_type,
                "member": d.member_id,
                "state": d.state,
                "attempts": d.attempts,
                "last_status": d.last_status,
                "latency_ms": d.last_latency_ms,
                "next_attempt_at": _when(d.next_attempt_at),
                "last_error": d.last_error,
            }
            for d in found
        ]

    emit_rows(run(go()), fmt, "webhook deliveries")


@webhooks_app.command("redeliver")
def webhooks_redeliver(
    delivery_id: Annotated[int, typer.Argument(help="The delivery's id (see `webhooks deliveries`).")],
    tenant: TenantOption = None,
) -> None:
    """Send a dead (or delivered) delivery again: it becomes pending, due now."""

    async def go() -> endpoints.DeliveryView:
        async with open_database() as db:
            t = await tenant_of(db, tenant)
            return await endpoints.redeliver(db, t.id, delivery_id, actor=ACTOR, now=clock())

    d = run(go())
    out.print(f"webhook delivery {d.id} ({d.webhook_id}) is pending again, due now", markup=False)


# -- the dispatcher ---------------------------------------------------------------------------------------


async def _dispatch(settings: dispatcher.Settings, *, once: bool, stop: asyncio.Event) -> dispatcher.Stats:
    async with open_database() as db, dispatcher.Dispatcher(db, settings) as d:
        return await d.run(once=once, stop=stop)


def dispatch(
    once: Annotated[bool, typer.Option("--once", help="Send what is due now, then stop.")] = False,
    allow_private: AllowPrivate = False,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Requests in flight at once.")] = 64,
) -> None:
    """Send the outbox's events to every tenant's webhook endpoints, with retries (runs until stopped
    with Ctrl-C or SIGTERM; several may run at once on PostgreSQL)."""
    settings = dispatcher.Settings(concurrency=concurrency, allow_private=True if allow_private else None)

    async def go() -> dispatcher.Stats:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await _dispatch(settings, once=once, stop=stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is the attempts table's job
    if not once:
        err.print("dispatching webhooks (Ctrl-C stops)", markup=False)
    s = run(go())
    out.print(
        f"{s.fanned_out:,} events fanned out into {s.deliveries_created:,} deliveries; {s.delivered:,} "
        f"delivered, {s.failed:,} failed (to retry), {s.dead:,} dead",
        markup=False,
    )


def start_in_thread(allow_private: bool = False) -> Callable[[], None]:
    """Run a dispatcher on a thread of its own (``loyalty serve --dispatch``: one per server, beside
    uvicorn's workers, with its own event loop and database pool); returns the function that stops it
    and waits for its requests in flight."""
    settings = dispatcher.Settings(allow_private=True if allow_private else None)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def work() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(_dispatch(settings, once=False, stop=stop))
        finally:
            loop.close()

    thread = threading.Thread(target=work, name="webhook-dispatcher", daemon=True)
    thread.start()

    def halt() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)

    return halt
