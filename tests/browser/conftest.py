"""Browser fixtures: a real server on a free local port, a seeded tenant, and headless Chromium.

The server is the production app under uvicorn in a background thread, on a migrated SQLite file.
Chromium is Debian's package driven by Playwright (no browser download). Without Playwright or
Chromium the browser tests skip with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from loyalty.cards.secrets import Secrets, init_secrets, load_secrets
from tests.api.conftest import Tenant, build_tenant

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = os.environ.get("LOYALTY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long a page may take to show what a test waits for.
TIMEOUT_MS = 10_000
#: Viewports of the people who use the pages: a till tablet, a phone, a desk.
TABLET = {"width": 768, "height": 1024}
PHONE = {"width": 375, "height": 812}
DESK = {"width": 1280, "height": 900}


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    return None


# Package scope: Playwright's sync API runs an event loop in the main thread while it is open, and
# tests after these ones call asyncio.run() there.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    reason = _browser_missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the browser tests must run)", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Site:
    """The running server and the tenant the tests act for."""

    base_url: str
    tenant: Tenant
    #: A member with available points (cards[2]), for redemptions.
    rich_card: str
    http: httpx.Client
    #: Where the server's data lives, for tests that add a tenant of their own.
    database_url: str = ""
    secrets: Secrets | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def post(self, path: str, role: str = "cashier", **json: Any) -> dict[str, Any]:
        headers = self.tenant.headers(role, **{"Idempotency-Key": str(uuid.uuid4())})
        response = self.http.post(path, json=json, headers=headers)
        assert response.status_code < 300, response.text
        result: dict[str, Any] = response.json()
        return result

    def history(self, card: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.http.get(
            f"/v1/cards/{self.tenant.tokens[card]}/history", params={"limit": 100}
        ).json()["rows"]
        return rows


def _seed(site: Site) -> None:
    """A purchase and some spendable points, so every page has something to show."""
    t = site.tenant
    now = datetime.now(UTC).isoformat()
    site.post(
        "/v1/till/transactions",
        card=t.cards[0],
        external_id="seed-1",
        occurred_at=now,
        items=[
            {"sku": "LATTE", "category": "coffee", "unit_price": 350, "quantity": 2},
            {"sku": "APPLE", "category": "organic", "unit_price": 120, "quantity": 5},
            {"sku": "WASH", "category": "carwash", "unit_price": 900, "quantity": 3},
        ],
    )
    site.post(f"/v1/admin/members/{t.member_id}/adjustments", "admin", points=350, reason="welcome bonus")
    rich = site.post("/v1/till/activations", card=t.cards[2])["member"]["id"]
    site.post(f"/v1/admin/members/{rich}/adjustments", "admin", points=1000, reason="goodwill")


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    import uvicorn

    from api.app import create_app
    from loyalty.storage.db import upgrade

    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite+aiosqlite:///{folder / 'loyalty.db'}"
    secrets: Secrets = load_secrets(init_secrets(folder / "secrets.json"))

    def prepare() -> Tenant:
        upgrade(url)
        return asyncio.run(build_tenant(url, secrets, "web"))

    # Playwright's sync API keeps an event loop in this thread: set the world up in another one.
    with ThreadPoolExecutor(1) as pool:
        tenant = pool.submit(prepare).result()

    app = create_app(database_url=url, secrets=secrets, key_cache_seconds=0, rate_limit=10_000)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=10) as http:
        s = Site(base, tenant, tenant.cards[2], http, url, secrets)
        _seed(s)
        try:
            yield s
        finally:
            server.should_exit = True
            thread.join(timeout=10)


@pytest.fixture
def open_page(browser: Any, site: Site) -> Iterator[Any]:
    """``open_page(path, viewport, key_slot=None, role=None, secret=None)``: a fresh browser context on
    a page, with an API key (the site tenant's key for ``role``, or ``secret``) already in localStorage
    when ``key_slot`` is given."""
    contexts = []

    def open_(
        path: str,
        viewport: dict[str, int],
        key_slot: str | None = None,
        role: str | None = None,
        secret: str | None = None,
    ) -> Any:
        context = browser.new_context(viewport=viewport, base_url=site.base_url)
        contexts.append(context)
        if key_slot is not None:
            secret = secret or site.tenant.keys[role or key_slot]
            context.add_init_script(f"localStorage.setItem('loyalty.key.{key_slot}', {secret!r});")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        page.goto(path)
        return page

    yield open_
    for context in contexts:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
