"""The web pages in headless Chromium: a cashier, a customer, a marketer and an admin click through."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or, under CI=true, fails) and says why
    expect = None

from tests.api.conftest import PROGRAM, Tenant, build_tenant

from .conftest import DESK, PHONE, TABLET, Site, screenshot


def _fill_line(page: Any, line: int, sku: str, category: str, price: str, qty: str) -> None:
    page.fill(f"#basket-rows input[data-field=sku][data-line='{line}']", sku)
    page.fill(f"#basket-rows input[data-field=category][data-line='{line}']", category)
    page.fill(f"#basket-rows input[data-field=price][data-line='{line}']", price)
    page.fill(f"#basket-rows input[data-field=qty][data-line='{line}']", qty)


def _till_with_card(open_page: Any, cashier_key: str, card: str) -> Any:
    """The till as a cashier sees it after typing the key once and scanning ``card``."""
    page = open_page("/till", TABLET)
    page.fill("#key-input", cashier_key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-panel", state="hidden")
    page.fill("#scan-input", card)
    page.press("#scan-input", "Enter")
    page.wait_for_selector("#member-panel:not([hidden])")
    return page


def _fits(page: Any, viewport: dict[str, int]) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"the page scrolls sideways: {width} px wide"


def _earn_rows(site: Site, card: str) -> list[dict[str, Any]]:
    return [row for row in site.history(card) if row["cause"] == "earn"]


def test_till_posts_a_basket_and_shows_the_new_balance(open_page: Any, site: Site) -> None:
    """A cashier enters the key once, scans a card, posts a basket and sees points, rules and balance."""
    t = site.tenant
    page = _till_with_card(open_page, t.keys["cashier"], t.cards[0])
    pending_before = int(page.inner_text("#bal-pending").replace(",", ""))
    assert page.inner_text("#bal-available") == "350"

    _fill_line(page, 0, "LATTE", "coffee", "3.50", "2")
    page.click("#add-item")
    _fill_line(page, 1, "APPLE", "organic", "1,20", "5")
    assert "13.00" in page.inner_text("#basket-total")  # in the browser's way of writing euros
    page.click("#post-basket")
    page.wait_for_selector("#result:not([hidden])")

    # 7 points for the coffee, 6 for the apples doubled to 12: 19.
    assert page.inner_text("#result-points") == "19"
    rules = page.inner_text("#result-rules")
    assert "base" in rules and "organic-double" in rules
    expect(page.locator("#bal-pending")).to_have_text(str(pending_before + 19))
    assert "19 points" not in page.inner_text("#notice")
    assert page.locator("#recent li").count() == 1
    _fits(page, TABLET)
    screenshot(page, "till")
    assert page.js_errors == []


def test_a_double_tap_or_a_retry_books_once(open_page: Any, site: Site) -> None:
    """Two taps on Post, and a retry after the answer was lost, book one transaction with one key."""
    t = site.tenant
    card = t.cards[1]  # a blank card: the cashier activates it first
    page = open_page("/till", TABLET, key_slot="cashier")
    page.fill("#scan-input", t.tokens[card])
    page.click("#scan-button")
    page.wait_for_selector("#blank-card:not([hidden])")
    page.click("#activate-button")
    page.wait_for_selector("#member-figures:not([hidden])")

    sent: list[str] = []
    lost = {"first": True}

    def lose_the_first_answer(route: Any) -> None:
        sent.append(route.request.headers["idempotency-key"])
        if lost["first"]:
            lost["first"] = False
            route.fetch()  # the server books it, but the till never hears back
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/v1/till/transactions", lose_the_first_answer)
    _fill_line(page, 0, "CAKE", "bakery", "4.00", "1")
    page.dblclick("#post-basket")
    page.evaluate("() => { const b = document.getElementById('post-basket'); b.click(); b.click(); }")
    page.wait_for_selector("#result:not([hidden])")

    assert page.inner_text("#result-points") == "4"
    assert len(sent) == 2 and sent[0] == sent[1], sent
    assert len(_earn_rows(site, card)) == 1
    screenshot(page, "till-double-tap")


def test_till_redeems_a_reward_and_refunds_an_item(open_page: Any, site: Site) -> None:
    """A reward within reach is redeemed once; a returned item takes its points back."""
    page = open_page("/till", TABLET, key_slot="cashier")
    page.fill("#scan-input", site.rich_card)
    page.click("#scan-button")
    page.wait_for_selector("#rewards li")
    page.dblclick("#rewards button[data-reward=COFFEE]")
    page.wait_for_selector("#notice.ok")
    assert "Redeemed COFFEE" in page.inner_text("#notice")
    expect(page.locator("#bal-available")).to_have_text("700")

    _fill_line(page, 0, "BREAD", "bakery", "5.00", "2")
    page.click("#post-basket")
    page.wait_for_selector("#result:not([hidden])")
    page.click("#recent li:first-child button:has-text('Refund…')")
    page.fill("#recent li:first-child input.qty", "1")
    page.click("#recent li:first-child button:has-text('Refund selected')")
    page.wait_for_selector("#notice.ok:has-text('Refunded')")
    assert "5 points reversed" in page.inner_text("#notice")
    redemptions = [r for r in site.history(site.rich_card) if r["cause"] == "redemption"]
    assert len(redemptions) == 1
    screenshot(page, "till-refund")


def _document_line(page: Any, needle: str) -> int:
    text: str = page.input_value("#document")
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


def test_editor_shows_an_error_at_its_line_and_clears_it(open_page: Any, site: Site) -> None:
    """A misspelled field is marked at its line and column while typing, and the mark goes when fixed."""
    page = open_page("/editor", DESK, key_slot="marketer")
    page.wait_for_selector("#status.ok")
    text = page.input_value("#document")
    assert 'item.category == "organic"' in text

    page.fill("#document", text.replace('item.category == "organic"', 'item.categroy == "organic"'))
    page.wait_for_selector("#problems li")
    line = _document_line(page, "item.categroy")
    column = page.input_value("#document").split("\n")[line - 1].index("item.categroy") + 1
    problem = page.inner_text("#problems li")
    assert f"Line {line}, column {column}" in problem
    assert "did you mean item.category?" in problem
    assert page.get_attribute(f"#gutter span[data-line='{line}']", "class") == "err"
    assert page.locator("#gutter span.err").count() == 1
    assert page.inner_text(f"#backdrop mark[data-line='{line}']") == "item.categroy"
    assert "1 problem" in page.inner_text("#status")
    screenshot(page, "editor-error")

    page.fill("#document", text)
    page.wait_for_selector("#status.ok")
    assert page.locator("#problems li").count() == 0
    assert page.locator("#gutter span.err").count() == 0


def test_editor_simulates_backtests_and_publishes_a_draft(open_page: Any, site: Site) -> None:
    """A draft is simulated on a basket, backtested on past purchases as a chart, and published."""
    page = open_page("/editor", DESK, key_slot="marketer")
    page.wait_for_selector("#status.ok")
    text = page.input_value("#document")
    page.fill("#document", text.replace("earn: {multiplier: 2}", "earn: {multiplier: 3}"))
    page.wait_for_selector("#status.ok")

    page.click("#simulate")
    page.wait_for_selector("#simulation table")
    assert "organic-double" in page.inner_text("#simulation")
    page.click("#backtest")
    page.wait_for_selector("#backtest-result svg.chart rect.bar.draft")
    assert "organic-double" in page.inner_text("#backtest-result table")

    valid_from = (datetime.now(UTC) + timedelta(days=30)).astimezone().strftime("%Y-%m-%dT%H:%M")
    page.fill("#valid-from", valid_from)
    page.click("#publish")
    page.click("#publish-yes")
    page.wait_for_selector("#notice.ok:has-text('is published')")
    _fits(page, DESK)
    screenshot(page, "editor-backtest")
    versions = site.http.get("/v1/program/versions", headers=site.tenant.headers("marketer")).json()
    assert sum(v["status"] == "published" for v in versions) == 2
    assert page.js_errors == []


def test_customer_page_shows_the_balance(open_page: Any, site: Site) -> None:
    """The QR link shows the member's balance, tier progress, stamps, rewards and history on a phone."""
    t = site.tenant
    page = open_page(f"/c/{t.token}", PHONE)
    assert page.inner_text("#balance").startswith("350")
    assert "pending" in page.inner_text(".card-top")
    assert "to reach" in page.inner_text("#tier")
    assert page.locator(".stampcard circle.inked").count() >= 3
    assert "Free coffee" in page.inner_text("#rewards")
    assert "Purchase" in page.inner_text("#history")
    _fits(page, PHONE)
    screenshot(page, "card")


def test_a_forged_card_link_shows_a_friendly_error_page(open_page: Any, site: Site) -> None:
    """A tampered or made-up token gets a 404 page that explains, never a stack trace or JSON."""
    token = site.tenant.token
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (forged, "not-a-card", "x" * 500):
        page = open_page(f"/c/{bad}", PHONE)
        response = page.request.get(f"/c/{bad}")
        assert response.status == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "We could not find this card" in page.inner_text("#card-error")
        assert not re.search(r"Traceback|Exception|sqlalchemy", page.content())
    screenshot(page, "card-error")


def test_dashboard_renders_its_charts(open_page: Any, site: Site) -> None:
    """The admin sees movements per month, liability, points per rule, tiers and partners."""
    page = open_page("/dashboard", DESK, key_slot="dashboard", role="admin")
    page.wait_for_selector("#monthly svg.chart")
    heights = page.eval_on_selector_all(
        "#monthly rect.bar.issued", "bars => bars.map(b => +b.getAttribute('height'))"
    )
    assert len(heights) == 12 and heights[-1] > 0, heights
    page.wait_for_selector("#tiers svg.chart")
    page.wait_for_selector("#rules svg.chart")
    page.wait_for_selector("#partners table")
    assert "cafe" in page.inner_text("#partners")
    assert "net points owed" in page.inner_text("#liability").lower()
    assert "bronze" in page.inner_text("#tiers")
    _fits(page, DESK)
    screenshot(page, "dashboard")
    assert page.js_errors == []


def test_dashboard_with_a_marketer_key_says_what_needs_an_admin(open_page: Any, site: Site) -> None:
    """A marketer sees rules and tiers; admin-only reports say they need an admin key."""
    page = open_page("/dashboard", DESK, key_slot="dashboard", role="marketer")
    page.wait_for_selector("#rules svg.chart")
    page.wait_for_selector("#tiers svg.chart")
    page.wait_for_selector("#liability .needs-admin")
    assert "Needs an admin key" in page.inner_text("#partners")


#: The example program in yen (no minor unit), with tiers on spend so the customer page shows money.
JPY_PROGRAM = PROGRAM.replace("currency: EUR", "currency: JPY").replace(
    "qualify_on: points", "qualify_on: spend"
)


def test_a_yen_program_shows_amounts_without_decimals(open_page: Any, site: Site) -> None:
    """JPY has no minor unit: the till takes and shows whole yen, the customer page too."""
    from concurrent.futures import ThreadPoolExecutor

    def prepare() -> Tenant:
        return asyncio.run(build_tenant(site.database_url, site.secrets, "yen", program=JPY_PROGRAM))

    with ThreadPoolExecutor(1) as pool:  # Playwright keeps an event loop in this thread
        yen = pool.submit(prepare).result()
    page = _till_with_card(open_page, yen.keys["cashier"], yen.cards[0])
    _fill_line(page, 0, "MATCHA", "tea", "1234", "1")
    expect(page.locator("#basket-total")).to_contain_text("1,234")
    total = page.inner_text("#basket-total")
    assert "." not in total and ("¥" in total or "JPY" in total), total
    page.click("#post-basket")
    page.wait_for_selector("#result:not([hidden])")
    meta = page.inner_text("#result-meta")
    assert "1,234" in meta and "12.34" not in meta, meta
    assert page.js_errors == []

    card = open_page(f"/c/{yen.tokens[yen.cards[0]]}", PHONE)
    text = card.inner_text("body")
    # 1,234 yen spent: silver (1,000); gold at 5,000 is 3,766 yen away.
    assert "3,766 JPY more spending" in text, text
    assert "37.66" not in text and "376,600" not in text
    screenshot(card, "card-yen")


#: The example program with segments and a win-back campaign holding out half of the members, and
#: receipts accepted a year back (the history below is posted as tills would have, late).
SEGMENTED_PROGRAM = (
    PROGRAM.replace("  rounding: floor", "  rounding: floor\n  max_receipt_age_days: 400", 1).replace(
        "    earn: {points: 200}\n    limit: {per_member: 1}\n",
        "    earn: {points: 200}\n    limit: {per_member: 1}\n    holdout: 0.5\n",
    )
    + """\
segments:
  - name: champions
    when: customer.recency_score >= 4 and customer.frequency_score >= 4
  - name: at_risk
    when: customer.at_risk
  - name: regular
    when: customer.purchase_days >= 3
  - name: occasional
    when: customer.purchase_days >= 1
"""
)


async def _customer_history(url: str, secrets: Any) -> Tenant:
    """Forty members: each buys, stays away four months, comes back (the win-back's exposure), and
    then shops again, more often when they got the points; a segment run at the end."""
    import random

    import rules
    from loyalty.members import membership
    from loyalty.points import transactions
    from loyalty.storage.db import Database
    from loyalty.value import segments

    now = datetime.now(UTC)
    t = await build_tenant(
        url,
        secrets,
        "value",
        card_prefix="6044",
        valid_from=now - timedelta(days=300),
        program=SEGMENTED_PROGRAM,
    )
    db = Database.from_url(url)
    draws = random.Random(3)
    try:
        for n in range(40):
            member = (await membership.create_member(db, t.id, now=now - timedelta(days=300))).id
            treated = not rules.in_control("win-back", str(member), 0.5)
            times = [now - timedelta(days=260), now - timedelta(days=130)]
            follow = draws.choice((3, 4, 5) if treated else (0, 1, 2))
            times += [times[1] + timedelta(days=8 * (k + 1)) for k in range(follow)]
            if n % 4 == 0:  # some stopped again: the at-risk list has someone on it
                times = [*times[:2], times[1] + timedelta(days=3), times[1] + timedelta(days=6)]
            for k, at in enumerate(times):
                await transactions.post_transaction(
                    db,
                    t.id,
                    outlet_id=t.outlet_id,
                    external_id=f"h{n}-{k}",
                    occurred_at=at,
                    items=(rules.Item("LATTE", 450 + 50 * (n % 5), 2, "coffee"),),
                    member_id=member,
                    now=at,
                )
        await segments.run(db, t.id, now=now - timedelta(days=30))
        await segments.run(db, t.id, now=now)
    finally:
        await db.dispose()
    return t


def test_the_customer_value_view_and_a_campaigns_lift(open_page: Any, site: Site) -> None:
    """The dashboard shows segment sizes, their history, moves, value bands and the at-risk list; the
    campaign page draws the win-back's lift with its intervals from the postings."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # Playwright keeps an event loop in this thread
        tenant = pool.submit(asyncio.run, _customer_history(site.database_url, site.secrets)).result()
    page = open_page("/dashboard", DESK, key_slot="dashboard", secret=tenant.keys["admin"])
    page.wait_for_selector("#segments svg.chart")
    page.wait_for_selector("#segment-history svg.chart")
    page.wait_for_selector("#value svg.chart")
    page.wait_for_selector("#at-risk table")
    assert "at_risk" in page.inner_text("#segments")
    assert page.locator("#segment-history rect.bar").count() >= 2
    assert "none" in page.inner_text("#moves") or page.locator("#moves table").count() == 1
    assert "Last run" in page.inner_text("#last-run")
    _fits(page, DESK)
    screenshot(page, "dashboard-customers")
    assert page.js_errors == []

    lift = open_page("/campaigns", DESK, key_slot="campaigns", secret=tenant.keys["marketer"])
    lift.wait_for_selector("#lift-chart svg.forest")
    assert lift.locator("#lift-chart circle.lift").count() == 4
    # Treated members came back 3-5 times, control members 0-2: the visits' interval lies above zero.
    assert lift.locator("#lift-chart circle.lift.up").count() >= 1
    table = lift.inner_text("#lift-table")
    assert "Visits" in table and "Points cost" in table
    assert "held out" in lift.inner_text("#lift-meta")
    screenshot(lift, "campaign-lift")
    assert lift.js_errors == []


async def _webhook_log(url: str, secrets: Any) -> Tenant:
    """A tenant with one endpoint (a public address; nothing is sent in this test), a purchase's event
    fanned out to it, and that delivery dead after its retries: what the delivery log shows."""
    from sqlalchemy import update

    import rules
    from loyalty.events import endpoints
    from loyalty.members import membership
    from loyalty.points import transactions
    from loyalty.storage.db import Database
    from loyalty.storage.models import WebhookDelivery

    now = datetime.now(UTC)
    t = await build_tenant(url, secrets, "hooks", card_prefix="6055", valid_from=now - timedelta(days=10))
    db = Database.from_url(url)
    try:
        await endpoints.create_endpoint(
            db, t.id, "https://93.184.215.14/hooks", actor="test", now=now - timedelta(minutes=5)
        )
        member = (await membership.create_member(db, t.id, now=now)).id
        await transactions.post_transaction(
            db,
            t.id,
            outlet_id=t.outlet_id,
            external_id="w1",
            occurred_at=now,
            items=(rules.Item("LATTE", 450, 1, "coffee"),),
            member_id=member,
            now=now,
        )
        from loyalty.events.dispatcher import Dispatcher, Settings

        async with Dispatcher(db, Settings(allow_private=False)) as d:
            await d.fan_out()
        async with db.write() as s:
            await s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.tenant_id == t.id)
                .values(state="dead", attempts=9, last_status=503, last_error="HTTP 503")
            )
    finally:
        await db.dispose()
    return t


def test_the_dashboard_shows_the_webhook_delivery_log_and_redelivers(open_page: Any, site: Site) -> None:
    """Each endpoint with its latest deliveries (event, state, attempts, last answer); a dead one is
    sent again from the page."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # Playwright keeps an event loop in this thread
        tenant = pool.submit(asyncio.run, _webhook_log(site.database_url, site.secrets)).result()
    page = open_page("/dashboard", DESK, key_slot="dashboard", secret=tenant.keys["admin"])
    page.wait_for_selector("#webhooks table")
    log = page.inner_text("#webhooks")
    assert "https://93.184.215.14/hooks" in log and "purchase.posted" in log and "503" in log
    dead = page.locator("#webhooks button:has-text('send again')")
    before = dead.count()
    assert before >= 1  # the purchase's event, and whatever else the setup evented
    dead.first.click()
    page.wait_for_selector("#notice:has-text('queued again')")
    page.wait_for_selector("#webhooks td:has-text('pending')")
    assert dead.count() == before - 1
    _fits(page, DESK)
    screenshot(page, "dashboard-webhooks")
    assert page.js_errors == []
