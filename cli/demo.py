"""``loyalty demo``: a coalition bonus card with 18 months of history, then one day at a till.

Everything goes through the services an operator and a till use: migrations, tenant, program
publishing, card batches, the posting path (history in batches, see :mod:`loyalty.ops.importer`), the
jobs, redemptions and refunds. The history is generated from a fixed seed, relative to today, so
that what the server shows afterwards (pending points, expiry, tiers) is current.

A second run deletes the demo database and builds it again (the secrets file is kept).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

import rules
from cli import demo_events
from loyalty.admin import access, tenants
from loyalty.calendar import add_months, local_month, month_start
from loyalty.cards.numbers import format_card_number
from loyalty.cards.qr import card_url, qr_png
from loyalty.cards.secrets import init_secrets, load_secrets
from loyalty.cards.sheet import SheetCard, render_sheet
from loyalty.cards.tokens import sign_token
from loyalty.errors import LoyaltyError
from loyalty.members import lookup, membership
from loyalty.ops import audit as ledger_audit
from loyalty.ops import importer, jobs, reports
from loyalty.points import balances, redemptions, transactions
from loyalty.programs import versions
from loyalty.storage.db import Database, upgrade_async
from loyalty.storage.models import Card, Member, Transaction
from loyalty.storage.private import private_dir, write_private
from loyalty.value import campaigns, segments
from rules.money import format_money

PROGRAM = Path(__file__).resolve().parent.parent / "examples" / "coalition.yaml"
TENANT = "stadtbonus"
CARD_PREFIX = "7301"
ACTOR = "demo"
#: Months of history before today.
MONTHS = 18

# (partner code, name, share of purchases, outlets, opening hours)
PARTNERS = (
    ("cafe", "Café Lindenblatt", 0.55, ("cafe-altstadt", "cafe-bahnhof"), (7, 19)),
    ("bakery", "Bäckerei Korn", 0.35, ("baeckerei-mitte", "baeckerei-sued"), (6, 18)),
    ("carwash", "Waschpark Nord", 0.10, ("waschpark-nord",), (8, 20)),
)
# (sku, category, unit price in cents, most units per line)
PRODUCTS = {
    "cafe": (
        ("ESPRESSO", "coffee", 220, 2),
        ("CAPPUCCINO", "coffee", 340, 2),
        ("LATTE", "coffee", 390, 2),
        ("CROISSANT", "pastry", 240, 2),
        ("CHEESECAKE", "cake", 420, 1),
        ("SANDWICH", "food", 550, 1),
    ),
    "bakery": (
        ("ROLL", "bread", 45, 8),
        ("SOURDOUGH", "organic", 480, 1),
        ("RYE", "bread", 390, 1),
        ("PRETZEL", "bread", 95, 6),
        ("SPELT-LOAF", "organic", 520, 1),
        ("BOX-DEPOSIT", "deposit", 200, 1),
    ),
    "carwash": (
        ("WASH-BASIC", "carwash", 990, 1),
        ("WASH-PREMIUM", "carwash", 1690, 1),
        ("VACUUM", "service", 300, 1),
        ("GIFTCARD", "giftcard", 2500, 1),
    ),
}


@dataclass(frozen=True, slots=True)
class DemoConfig:
    directory: Path = Path("var")
    members: int = 2_000
    transactions: int = 50_000
    seed: int = 20_240_601
    port: int = 8000

    @property
    def database(self) -> Path:
        return self.directory / "demo.db"

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.database.resolve()}"

    @property
    def secrets(self) -> Path:
        return self.directory / "secrets.json"


@dataclass(slots=True)
class _World:
    tenant_id: int
    program: rules.CheckedProgram
    outlets: dict[str, int]  # outlet code -> id
    partner_of: dict[str, str]  # outlet code -> partner code
    cards: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Shopper:
    card: str
    joined: datetime
    activity: float
    partners: tuple[float, float, float]
    home: tuple[str, ...]  # a preferred outlet per partner


def _reset(cfg: DemoConfig) -> None:
    private_dir(cfg.directory)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{cfg.database}{suffix}").unlink(missing_ok=True)


async def run(
    cfg: DemoConfig,
    out: Console,
    show_posting: Callable[[rules.CheckedProgram, list[rules.Item], dict[str, Any]], None],
) -> None:
    """Build the demo database and narrate; ``show_posting`` prints a posting's explanation."""
    now = datetime.now(UTC).replace(microsecond=0)
    _reset(cfg)
    await upgrade_async(cfg.url)
    init_secrets(cfg.secrets)
    secrets = load_secrets(cfg.secrets)
    db = Database.from_url(cfg.url)
    try:
        out.rule("[bold]1. Setup")
        world = await _setup(db, cfg, now, out)
        out.rule("[bold]2. Eighteen months of history")
        await _history(db, cfg, world, now, out)
        async with demo_events.receiving() as (receiver, hook_url):
            await demo_events.subscribe(db, world.tenant_id, hook_url, receiver, now)
            out.rule("[bold]3. One day at the till")
            await _till(db, cfg, world, secrets, now, out, show_posting)
            out.rule("[bold]4. Reports, events and access")
            await demo_events.deliver(db, receiver, out)
        liability = await reports.liability(db, world.tenant_id)
        out.print(
            f"Liability: [bold]{liability.net:,}[/] points owed to {liability.members:,} members "
            f"({liability.available:,} available + {liability.pending:,} pending − {liability.debt:,} debt)"
        )
        checked = await ledger_audit.audit(db, world.tenant_id)
        if not checked.ok:
            problems = "; ".join(f"{f.check}: {f.examples[0]}" for f in checked.findings)
            raise LoyaltyError(f"the demo's books do not audit: {problems}")
        out.print(
            f"Audit: every entry set balances, {checked.members:,} members' balances equal their entries "
            f"and lots, {checked.lots:,} lots add up, {checked.purchases:,} purchases re-evaluated to the "
            "same points"
        )
        await _customers(db, world, now, out)
        await demo_events.erase_one(db, world.tenant_id, await _someone_else(db, world), now, out, checked)
        keys = {}
        for role in ("admin", "marketer", "cashier"):
            outlet = world.outlets["cafe-altstadt"] if role == "cashier" else None
            keys[role] = (
                await access.create_key(
                    db,
                    world.tenant_id,
                    role=role,
                    name=f"demo {role}",
                    actor=ACTOR,
                    now=now,
                    outlet_id=outlet,
                )
            ).secret
    finally:
        await db.dispose()
    _serve_hint(cfg, out, keys, world)


async def _someone_else(db: Database, world: _World) -> int:
    """A member with purchases who is not the one the till day and the customer page show."""
    shown = set(world.cards[:1])
    async with db.read() as s:
        rows = (
            await s.execute(
                select(Card.number, Card.member_id)
                .where(
                    Card.tenant_id == world.tenant_id,
                    Card.state == "active",
                    Card.member_id.in_(
                        select(Transaction.member_id).where(Transaction.tenant_id == world.tenant_id)
                    ),
                )
                .order_by(Card.member_id.desc())
                .limit(5)
            )
        ).all()
    return next(int(m) for n, m in rows if n not in shown and m is not None)


async def _customers(db: Database, world: _World, now: datetime, out: Console) -> None:
    """The segment run, and the win-back campaign's lift against its control group."""
    run = await segments.run(db, world.tenant_id, now=now)
    sizes = ", ".join(
        f"{name or 'none'} {n:,}" for name, n in sorted(run.sizes.items(), key=lambda kv: -kv[1])
    )
    fitted = "fitted" if run.fitted else "not fitted"
    out.print(f"Segments ({run.members:,} members, value models {fitted}): {sizes}")
    lift = await campaigns.lift(db, world.tenant_id, "win-back", now=now)
    if not lift.enough:
        out.print(
            f"Win-back campaign: {lift.treated:,} members got the points, {lift.control:,} were held out:"
            " too few to compare yet"
        )
        return
    table = Table(
        title=(
            f"Win-back campaign: {lift.treated:,} members got the points, {lift.control:,} were held out"
            f" ({lift.holdout:.0%}); each followed {lift.horizon_days} days after coming back"
        ),
        title_justify="left",
    )
    for column in ("", "treated", "control", "lift", "95% interval", "relative"):
        table.add_column(column, justify="left" if not column else "right")
    currency = world.program.document.currency

    def shown(name: str, value: float) -> str:
        if name == "revenue":
            return format_money(round(value), currency)
        return f"{value:.0%}" if name == "retention" else f"{value:,.2f}"

    for m in lift.metrics:
        table.add_row(
            m.name.replace("_", " "),
            shown(m.name, m.treated),
            shown(m.name, m.control),
            shown(m.name, m.difference),
            f"{shown(m.name, m.low)} .. {shown(m.name, m.high)}",
            "" if m.relative is None else f"{m.relative:+.0%}",
        )
    out.print(table)


async def _setup(db: Database, cfg: DemoConfig, now: datetime, out: Console) -> _World:
    start = _history_start(now)
    text = PROGRAM.read_text(encoding="utf-8")
    tenant = await tenants.create_tenant(
        db, code=TENANT, name="Stadtbonus", card_prefix=CARD_PREFIX, now=start - timedelta(days=1)
    )
    # The program was published when the history begins: the demo's clock is the simulated one.
    version = await versions.create_version(db, tenant.id, text, actor=ACTOR, now=start - timedelta(days=1))
    program = versions.check(text)
    outlets: dict[str, int] = {}
    partner_of: dict[str, str] = {}
    for code, name, _, outlet_codes, _hours in PARTNERS:
        partner = await tenants.create_partner(db, tenant.id, code=code, name=name, actor=ACTOR, now=start)
        for oc in outlet_codes:
            outlet = await tenants.create_outlet(
                db,
                tenant.id,
                partner_id=partner.id,
                code=oc,
                name=f"{name} {oc.split('-')[-1].title()}",
                actor=ACTOR,
                now=start,
            )
            outlets[oc], partner_of[oc] = outlet.id, code
    world = _World(tenant.id, program, outlets, partner_of)
    per_outlet = -(-cfg.members // len(outlets))
    for outlet_id in outlets.values():
        count = min(per_outlet, cfg.members - len(world.cards))
        if count > 0:
            world.cards += await membership.issue_cards(
                db, tenant.id, count, actor=ACTOR, now=start, outlet_id=outlet_id
            )
    out.print(
        f"Tenant [bold]{TENANT}[/] with program {program.document.program!r} version {version.number} "
        f"({program.digest[:12]}): {len(program.rules)} rules, {len(program.document.rewards)} rewards"
    )
    out.print(
        f"Partners: {', '.join(p[1] for p in PARTNERS)}; {len(outlets)} outlets; "
        f"{len(world.cards):,} cards printed"
    )
    return world


def _history_start(now: datetime) -> datetime:
    zone = ZoneInfo("Europe/Berlin")
    y, m = local_month(now, zone)
    return month_start(*add_months(y, m, -MONTHS), zone)


def _shoppers(
    cfg: DemoConfig, world: _World, rnd: random.Random, start: datetime, now: datetime
) -> list[_Shopper]:
    span = (now - start).total_seconds()
    by_partner = {code: outlets for code, _, _, outlets, _ in PARTNERS}
    shoppers = []
    for card in world.cards:
        # Most members joined early, some during the period; a few shop a lot, most now and then.
        joined = start + timedelta(seconds=span * min(rnd.betavariate(1.2, 2.5), 0.95))
        weights = [share * rnd.uniform(0.2, 2.0) for _, _, share, _, _ in PARTNERS]
        total = sum(weights)
        shoppers.append(
            _Shopper(
                card,
                joined,
                min(rnd.paretovariate(1.6), 12.0),
                (weights[0] / total, weights[1] / total, weights[2] / total),
                tuple(rnd.choice(by_partner[code]) for code, *_ in PARTNERS),
            )
        )
    return shoppers


def _basket(rnd: random.Random, partner: str) -> tuple[rules.Item, ...]:
    products = PRODUCTS[partner]
    lines = (
        rnd.choices((1, 2, 3, 4), weights=(45, 30, 17, 8))[0]
        if partner != "carwash"
        else rnd.choice((1, 1, 2))
    )
    picked = rnd.sample(products, min(lines, len(products)))
    if partner in ("bakery", "carwash"):
        # Deposits and gift cards are occasional extras, never a whole basket.
        rare = {"BOX-DEPOSIT", "GIFTCARD"}
        picked = [p for p in picked if p[0] not in rare or rnd.random() < 0.15] or [products[0]]
    return tuple(
        rules.Item(sku=sku, category=cat, unit_price=price, quantity=rnd.randint(1, most))
        for sku, cat, price, most in picked
    )


def _month_purchases(
    cfg: DemoConfig,
    world: _World,
    shoppers: list[_Shopper],
    rnd: random.Random,
    begin: datetime,
    end: datetime,
    count: int,
    counter: Iterator[int],
) -> list[importer.Purchase]:
    zone = world.program.zone
    active = [s for s in shoppers if s.joined < end]
    if not active or count <= 0:
        return []
    chosen = rnd.choices(active, weights=[s.activity for s in active], k=count)
    out = []
    for shopper in chosen:
        partner_index = rnd.choices((0, 1, 2), weights=shopper.partners)[0]
        partner, _, _, _, (opens, closes) = PARTNERS[partner_index]
        first = max(begin, shopper.joined)
        day = first + timedelta(seconds=rnd.uniform(0, max((end - first).total_seconds() - 1, 0)))
        local = day.astimezone(zone)
        at = local.replace(
            hour=rnd.randint(opens, closes - 1),
            minute=rnd.randint(0, 59),
            second=rnd.randint(0, 59),
            microsecond=0,
        )
        at = datetime(at.year, at.month, at.day, at.hour, at.minute, at.second, tzinfo=zone)
        if not begin <= at < end:
            at = min(max(at, begin), end - timedelta(seconds=1))
        outlet = shopper.home[partner_index]
        out.append(
            importer.Purchase(
                0, outlet, f"{outlet}-{next(counter):07d}", shopper.card, at, _basket(rnd, partner)
            )
        )
    out.sort(key=lambda p: p.occurred_at)
    return [
        importer.Purchase(i, p.outlet, p.external_id, p.card, p.occurred_at, p.items)
        for i, p in enumerate(out)
    ]


async def _history(db: Database, cfg: DemoConfig, world: _World, now: datetime, out: Console) -> None:
    rnd = random.Random(cfg.seed)
    start = _history_start(now)
    shoppers = _shoppers(cfg, world, rnd, start, now)
    zone = world.program.zone
    y, m = local_month(start, zone)
    months: list[tuple[datetime, datetime]] = []
    while (begin := month_start(*add_months(y, m, len(months)), zone)) < now:
        months.append((begin, min(month_start(*add_months(y, m, len(months) + 1), zone), now)))
    # Business grows: later months see more purchases.
    weights = [(0.6 + 0.8 * i / len(months)) * (e - b).total_seconds() for i, (b, e) in enumerate(months)]
    counts = [int(cfg.transactions * w / sum(weights)) for w in weights]
    counts[-1] += cfg.transactions - sum(counts)
    counter = iter(range(1, 10**7))
    posted = points = redeemed = refunded = 0
    #: Cards of members the win-back rule rewarded last month: the simulation's customers answer the
    #: points by coming back more often (the effect the campaign's lift report should find).
    won_back: list[str] = []
    totals: dict[str, list[int]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task("posting purchases", total=cfg.transactions)
        for (begin, end), count in zip(months, counts, strict=True):
            # The month's purchases: the won-back members' follow-ups, and the rest drawn as usual.
            extra = _follow_ups(world, shoppers, rnd, won_back, begin, end, counter)
            drawn = _month_purchases(
                cfg, world, shoppers, rnd, begin, end, max(0, count - len(extra)), counter
            )
            batch = _renumbered(drawn + extra)
            report = await importer.import_purchases(
                db,
                world.tenant_id,
                batch,
                batch_size=1000,
                channel="till",
                progress=_advance(bar, task, posted),
            )
            if report.rejected:
                raise LoyaltyError(f"demo history rejected: {report.rejected_batches[0].errors[0].reason}")
            posted += report.imported
            points += report.points
            won_back = await _rewarded(db, world, "win-back", begin, end)
            refunded += await _refunds(db, world, rnd, batch, end)
            # The nightly jobs, once a month here: pending points become available, old lots expire.
            for run in (jobs.release_pending, jobs.expire_lots, jobs.evaluate_tiers):
                _tally(totals, await run(db, world.tenant_id, now=end))
            redeemed += await _redemptions(db, world, rnd, end)
    for job in await jobs.run_all(db, world.tenant_id, now=now):
        _tally(totals, job)
    out.print(
        f"{posted:,} purchases of {len(shoppers):,} members from {start:%B %Y} to today: {points:,} points "
        f"earned, {redeemed:,} rewards redeemed, {refunded:,} returns"
    )
    out.print(
        f"Jobs, run at every month's end and now: {totals['release'][1]:,} points released after the return "
        f"window, {totals['expiry'][1]:,} points expired ({totals['expiry'][0]:,} lots), "
        f"{totals['tiers'][2]:,} tier changes"
    )


def _renumbered(batch: list[importer.Purchase]) -> list[importer.Purchase]:
    batch.sort(key=lambda p: p.occurred_at)
    return [
        importer.Purchase(i, p.outlet, p.external_id, p.card, p.occurred_at, p.items)
        for i, p in enumerate(batch)
    ]


def _follow_ups(
    world: _World,
    shoppers: list[_Shopper],
    rnd: random.Random,
    cards: list[str],
    begin: datetime,
    end: datetime,
    counter: Iterator[int],
) -> list[importer.Purchase]:
    """Two or three extra purchases this month for each member the win-back rewarded last month."""
    by_card = {s.card: s for s in shoppers}
    extra = []
    for card in cards:
        shopper = by_card[card]
        for _ in range(rnd.choice((2, 2, 3))):
            index = rnd.choices((0, 1, 2), weights=shopper.partners)[0]
            partner, _, _, _, (opens, closes) = PARTNERS[index]
            day = begin + timedelta(seconds=rnd.uniform(0, (end - begin).total_seconds() - 86_400))
            local = day.astimezone(world.program.zone).replace(hour=rnd.randint(opens, closes - 1))
            at = min(max(local, begin), end - timedelta(seconds=1))
            outlet = shopper.home[index]
            extra.append(
                importer.Purchase(0, outlet, f"{outlet}-{next(counter):07d}", card, at, _basket(rnd, partner))
            )
    return extra


async def _rewarded(db: Database, world: _World, rule: str, begin: datetime, end: datetime) -> list[str]:
    """Cards of the members ``rule`` gave points to between ``begin`` and ``end`` (control members,
    whose points were withheld, are not among them)."""
    async with db.read() as s:
        rows = (
            await s.execute(
                select(Transaction.member_id, Transaction.evaluation).where(
                    Transaction.tenant_id == world.tenant_id,
                    Transaction.occurred_at >= begin,
                    Transaction.occurred_at < end,
                )
            )
        ).all()
        members = sorted({m for m, ev in rows if campaigns.applied(ev, rule)})
        cards = (
            await s.scalars(
                select(Card.number)
                .where(Card.tenant_id == world.tenant_id, Card.member_id.in_(members))
                .order_by(Card.number)
            )
        ).all()
    return list(cards)


def _advance(bar: Progress, task: TaskID, before: int) -> Callable[[importer.ImportReport], None]:
    """Move the progress bar as an import batch lands (``before``: purchases posted earlier)."""

    def advance(report: importer.ImportReport) -> None:
        bar.update(task, completed=before + report.imported + report.skipped)

    return advance


def _tally(totals: dict[str, list[int]], job: jobs.JobResult) -> None:
    got = totals.setdefault(job.kind, [0, 0, 0])
    got[0] += job.lots
    got[1] += job.points
    got[2] += job.members


async def _refunds(
    db: Database, world: _World, rnd: random.Random, batch: list[importer.Purchase], end: datetime
) -> int:
    done = 0
    for p in rnd.sample(batch, k=len(batch) // 150):
        posting = await transactions.find_transaction(
            db, world.tenant_id, world.outlets[p.outlet], p.external_id
        )
        when = min(p.occurred_at + timedelta(days=rnd.randint(0, 10)), end)
        await transactions.refund(db, world.tenant_id, posting.transaction_id, now=when, lines={0: 1})
        done += 1
    return done


async def _redemptions(db: Database, world: _World, rnd: random.Random, at: datetime) -> int:
    rewards = sorted((r for r in world.program.document.rewards if r.cost), key=lambda r: r.cost or 0)
    async with db.read() as s:
        rich = (
            await s.execute(
                select(Member.id, Member.available)
                .where(Member.tenant_id == world.tenant_id, Member.available >= rewards[0].cost)
                .order_by(Member.id)
            )
        ).all()
    done = 0
    outlets = list(world.outlets.values())
    for member_id, available in rich:
        if rnd.random() > 0.15:
            continue
        choice = rnd.choice([r for r in rewards if (r.cost or 0) <= available])
        try:
            await redemptions.redeem(
                db, world.tenant_id, member_id, choice.code, now=at, outlet_id=rnd.choice(outlets)
            )
            done += 1
        except LoyaltyError:  # above the member's tier: they pick nothing this month
            pass
    return done


async def _till(
    db: Database,
    cfg: DemoConfig,
    world: _World,
    secrets: Any,
    now: datetime,
    out: Console,
    show_posting: Callable[[rules.CheckedProgram, list[rules.Item], dict[str, Any]], None],
) -> None:
    t = world.tenant_id
    async with db.read() as s:
        row = (
            await s.execute(
                select(Card.id, Card.number, Member.id)
                .join(Member, (Member.tenant_id == Card.tenant_id) & (Member.id == Card.member_id))
                .where(Card.tenant_id == t, Card.state == "active", Member.available >= 150)
                .order_by((Member.tier == "gold").desc(), Member.visits.desc(), Card.id)
                .limit(1)
            )
        ).first()
    if row is None:
        raise LoyaltyError("the demo history left no member with points to redeem")
    card_id, number, _ = row
    token = sign_token(secrets.ring(t), card_id, now=now)
    url = card_url(world.program.document.public_base_url or f"http://127.0.0.1:{cfg.port}", token)
    local = now.astimezone(world.program.zone)
    out.print(
        f"[bold]{local:%A %H:%M}[/], Café Lindenblatt Altstadt. The customer shows the QR code of their card:"
    )
    out.print(f"  scanned  {url}")
    ref = lookup.parse_code(url, secrets, t, now=now)  # verified (HMAC) before any lookup
    number = await lookup.number_of(db, t, ref)
    member = await membership.resolve_card(db, t, number, now=now)
    out.print(
        f"  card     {format_card_number(number)} → member {member.id}, tier [bold]{member.tier or '-'}[/], "
        f"{member.available:,} points available, {member.pending:,} pending, {member.visits} visits"
    )

    items = [
        rules.Item(sku="CAPPUCCINO", category="coffee", unit_price=340, quantity=2),
        rules.Item(sku="CHEESECAKE", category="cake", unit_price=420, quantity=2),
        rules.Item(sku="SANDWICH", category="food", unit_price=550, quantity=1),
    ]
    out.print("\n[bold]Post the basket[/] (2 cappuccino, 2 cheesecake, 1 sandwich):")
    posting = await transactions.post_transaction(
        db,
        t,
        outlet_id=world.outlets["cafe-altstadt"],
        external_id=f"till-{now:%Y%m%d%H%M%S}",
        occurred_at=now,
        items=items,
        now=now,
        card_number=number,
    )
    show_posting(world.program, items, posting.evaluation)
    out.print(
        f"  booked as transaction {posting.transaction_id}: {posting.points} points, pending until "
        f"{posting.pending_until.astimezone(world.program.zone):%Y-%m-%d} (the return window)"
        + (f", vouchers {list(posting.voucher_ids)}" if posting.voucher_ids else "")
    )

    reward = next(r for r in world.program.document.rewards if r.code == "COFFEE")
    redemption = await redemptions.redeem(
        db,
        t,
        posting.member_id,
        reward.code,
        now=now,
        outlet_id=world.outlets["cafe-altstadt"],
        transaction_id=posting.transaction_id,
    )
    lots = len(redemption.draws)
    out.print(
        f"\n[bold]Redeem[/] {reward.name} for {redemption.cost} points, drawn from {lots} "
        f"lot{'s' if lots != 1 else ''} nearest to expiry first; "
        f"{redemption.available_after:,} left"
    )

    refund = await transactions.refund(
        db, t, posting.transaction_id, now=now, lines={1: 1}, external_id="return-1"
    )
    out.print(
        f"\n[bold]Return[/] one cheesecake: {refund.points} points taken back"
        + (f" ({refund.debt} of them as debt)" if refund.debt else "")
        + f", {format_money(refund.amount, world.program.document.currency)} refunded"
    )

    bal = await balances.balance(db, t, posting.member_id, now=now)
    out.print("\n[bold]The customer's balance[/] (what their phone shows):")
    out.print(f"  available {bal.available:,}, pending {bal.pending:,}, debt {bal.debt:,}")
    if bal.tier:
        nxt = (
            f"; {bal.tier.missing:,} {bal.tier.qualify_on} to {bal.tier.next_tier}"
            if bal.tier.next_tier
            else " (top tier)"
        )
        out.print(f"  tier {bal.tier.tier}: {bal.tier.value:,} {bal.tier.qualify_on} in the window{nxt}")
    for e in (e for e in bal.expiring if e.points):
        out.print(f"  {e.points:,} points expire at the end of {e.month}")
    for sc in bal.stamp_cards:
        out.print(f"  stamp card {sc.card}: {sc.stamps}/{sc.reward_at} towards {sc.reward}")
    reach = [f"{r.name} ({r.cost})" for r in bal.rewards if r.affordable]
    out.print(f"  rewards in reach: {', '.join(reach) or 'none yet'}")

    png = cfg.directory / "demo-card.png"
    write_private(png, qr_png(url))
    batch = await membership.issue_cards(
        db, t, 10, actor=ACTOR, now=now, outlet_id=world.outlets["cafe-altstadt"]
    )
    async with db.read() as s:
        ids = dict(
            (
                await s.execute(
                    select(Card.number, Card.id).where(Card.tenant_id == t, Card.number.in_(batch))
                )
            ).all()
        )
    ring = secrets.ring(t)
    base = world.program.document.public_base_url or f"http://127.0.0.1:{cfg.port}"
    sheet = render_sheet(
        [SheetCard(n, card_url(base, sign_token(ring, ids[n], now=now))) for n in batch],
        program_name=world.program.document.program,
        caption="Café Lindenblatt Altstadt",
        label="demo batch",
    )
    pdf = cfg.directory / "demo-cards.pdf"
    write_private(pdf, sheet)
    out.print(f"\nCard QR code:  {png.resolve()}")
    out.print(f"Card batch:    {pdf.resolve()} ({len(batch)} blank cards for Café Lindenblatt Altstadt)")
    world.cards = [token]


def _serve_hint(cfg: DemoConfig, out: Console, keys: dict[str, str], world: _World) -> None:
    env = (
        f"LOYALTY_DATABASE_URL={cfg.url} LOYALTY_SECRETS_FILE={cfg.secrets.resolve()} LOYALTY_TENANT={TENANT}"
    )
    base = f"http://127.0.0.1:{cfg.port}"
    out.print("\n[bold]Start the server:[/]")
    out.print(f"  {env} .venv/bin/loyalty serve --port {cfg.port}", soft_wrap=True)
    out.print(f"  customer page   {base}/c/{world.cards[0]}", soft_wrap=True)
    out.print(f"  API docs        {base}/schema/swagger")
    out.print("  demo API keys (shown once; header  Authorization: Bearer <key>):")
    for role, secret in keys.items():
        note = " (Café Lindenblatt Altstadt)" if role == "cashier" else ""
        out.print(f"    {role:<9} {secret}{note}", soft_wrap=True)


def render_evaluation_table(evaluation: dict[str, Any]) -> Table:
    """The rule-by-rule part of a stored evaluation, as a table."""
    table = Table(show_edge=False, box=None, pad_edge=False)
    for col, justify in (("rule", "left"), ("result", "left"), ("points", "right"), ("because", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    stamps = evaluation.get("stamps", {})
    for e in evaluation["explanation"]:
        if not e["matched"]:
            reasons = sorted({d["status"] for d in e["items"] if d["status"] != "applied"})
            why = f"{e['decided_by']} — false" if e["decided_by"] else "; ".join(reasons) or "no item matched"
            table.add_row(e["rule"], "—", "", why)
            continue
        figure = f"+{sum(stamps.values())} stamps" if e["kind"] == "stamp" else e["points"]
        applied = [d for d in e["items"] if d["status"] == "applied"]
        why = e["decided_by"] or (applied[0]["decided_by"] if applied else "") or ""
        table.add_row(e["rule"], f"applied ×{e['applications']}", figure, why)
    if Decimal(evaluation.get("tier_points") or 0):
        table.add_row(
            f"tier {evaluation['tier']}", f"×{evaluation['tier_multiplier']}", evaluation["tier_points"], ""
        )
    return table
