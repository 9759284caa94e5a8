"""Structured logs: every line the app writes during a request is JSON carrying that request's id,
the id is echoed in X-Request-ID (a client's own only when short and plain), one access line per
request, a 500 is logged with its id, and no card token, API key or bearer credential reaches a line."""

from __future__ import annotations

import asyncio
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import TestClient

from api import logs
from api.app import create_app
from loyalty.cards.secrets import Secrets

from .conftest import Tenant, build_tenant
from .helpers import idem, purchase

GENERATED = re.compile(r"[0-9a-f]{32}")


@dataclass
class Logged:
    client: TestClient[Any]
    tenant: Tenant
    stream: io.StringIO

    def lines(self) -> list[dict[str, Any]]:
        """Every line written so far, each parsed as JSON (a line that is not JSON fails the test)."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def of(self, request_id: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("request_id") == request_id]


@pytest.fixture
def logged(sqlite_url: str, secrets: Secrets) -> Iterator[Logged]:
    """An app whose log lines go to a buffer, with one tenant."""
    tenant = asyncio.run(build_tenant(sqlite_url, secrets, f"log{uuid.uuid4().hex[:8]}"))
    app = create_app(database_url=sqlite_url, secrets=secrets, key_cache_seconds=0, rate_limit=10_000)
    stream = io.StringIO()
    logs.configure(stream=stream, fmt="json")
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Logged(client, tenant, stream)
    finally:
        logs.configure()  # back to stderr


def test_each_request_is_one_access_line_with_its_id_echoed(logged: Logged) -> None:
    """A client's plain id is kept and echoed; a missing, too long or unsafe one is replaced by a
    generated id; each request writes one access line with its route template and status."""
    t = logged.tenant
    sent = {
        "till-42.a_b": "till-42.a_b",
        None: None,
        "x" * 65: None,
        "bad id\\n{}": None,
        "a/b": None,
    }
    for given, kept in sent.items():
        headers = t.headers() if given is None else t.headers(**{"X-Request-ID": given})
        r = logged.client.post("/v1/till/lookup", json={"code": t.card}, headers=headers)
        assert r.status_code == 200, r.text
        echoed = r.headers["x-request-id"]
        if kept is not None:
            assert echoed == kept
        else:
            assert GENERATED.fullmatch(echoed), echoed
        lines = logged.of(echoed)
        assert len(lines) == 1, lines
        (line,) = lines
        assert line["event"] == "request" and line["logger"] == "api.access" and line["level"] == "info"
        assert line["method"] == "POST" and line["route"] == "/v1/till/lookup" and line["status"] == 200
        assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] >= 0
    r = logged.client.get("/no/such/route", headers={"X-Request-ID": "lost-1"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "lost-1"
    (line,) = logged.of("lost-1")
    assert line["route"] is None and line["path"] == "/no/such/route" and line["status"] == 404


def test_no_card_token_or_key_reaches_any_line(logged: Logged) -> None:
    """Card tokens in paths (and the card URL a till scans), API keys and bearer credentials never
    appear, though every request carried one."""
    t = logged.tenant
    assert logged.client.get(f"/v1/cards/{t.token}/balance").status_code == 200
    assert logged.client.get(f"/c/{t.token}").status_code == 200
    r = logged.client.post("/v1/till/transactions", json=purchase(t.card), headers=t.headers(**idem()))
    assert r.status_code == 201, r.text
    assert (
        logged.client.get("/v1/till/program", headers={"Authorization": "Bearer not-a-key"}).status_code
        == 401
    )
    text = logged.stream.getvalue()
    assert text, "nothing was logged"
    for secret in (t.token, *t.keys.values(), "not-a-key"):
        assert secret not in text
    routes = {line.get("route") for line in logged.lines()}
    assert "/v1/cards/{token}/balance" in routes
    paths = {line.get("path") for line in logged.lines()}
    assert "/v1/cards/<token>/balance" in paths and "/c/<token>" in paths


def test_a_500_is_logged_with_its_request_id_and_no_credential(
    logged: Logged, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug becomes a 500; its traceback is logged at error level with the request's id, and
    credentials in the exception's text are blanked."""
    from loyalty.points import posting

    t = logged.tenant

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"bug near /v1/cards/{t.token}/balance with Bearer {t.keys['cashier']}")

    monkeypatch.setattr(posting, "post", broken)
    r = logged.client.post(
        "/v1/till/transactions",
        json=purchase(t.card),
        headers=t.headers(**idem(**{"X-Request-ID": "boom-1"})),
    )
    assert r.status_code == 500 and r.headers["x-request-id"] == "boom-1"
    lines = logged.of("boom-1")
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1, lines
    assert "ValueError" in errors[0]["exception"] and "Traceback" in errors[0]["exception"]
    assert "/v1/cards/<token>/balance" in errors[0]["exception"]
    access = [line for line in lines if line["event"] == "request"]
    assert len(access) == 1 and access[0]["status"] == 500
    text = logged.stream.getvalue()
    assert t.token not in text and t.keys["cashier"] not in text


def test_redaction_covers_free_text_and_sensitive_keys() -> None:
    """What the last processor does to any line, whoever wrote it."""
    event = {
        "event": "GET https://bonus.example.com/c/AbC-123_x and /v1/cards/Tok.en/history?x=1",
        "detail": "Authorization: Bearer sk_live_123, whsec_c2VjcmV0 rotated",
        "api_key": "anything",
        "route": "/v1/cards/{token}/balance",
    }
    out = logs.redact(None, "info", dict(event))
    assert out["event"] == "GET https://bonus.example.com/c/<token> and /v1/cards/<token>/history?x=1"
    assert out["detail"] == "Authorization: Bearer <redacted>, whsec_<redacted> rotated"
    assert out["api_key"] == "<redacted>" and out["route"] == "/v1/cards/{token}/balance"
