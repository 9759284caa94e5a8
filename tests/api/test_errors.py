"""One error tree, answered by class: every ClientError of the domain is a 4xx problem, everything
else (a bug, a server-side failure) a 500 that says nothing of internals."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from litestar.testing import RequestFactory

import loyalty
from api import problems
from api.app import create_app
from loyalty.errors import ClientError, LoyaltyError

from .helpers import assert_problem, idem, purchase


def _subclasses(root: type) -> set[type]:
    found = set()
    for cls in root.__subclasses__():
        found |= {cls, *_subclasses(cls)}
    return found


def _domain_errors() -> set[type]:
    for module in pkgutil.walk_packages(loyalty.__path__, "loyalty."):
        if not module.name.startswith("loyalty.storage.migrations"):
            importlib.import_module(module.name)
    return _subclasses(LoyaltyError)


def _instance(cls: type) -> BaseException:
    from loyalty.cards.errors import TokenFailure

    for args in ((TokenFailure.MALFORMED,), ("x",), (), (1,), ("x", 0, 0)):
        try:
            return cls(*args)  # type: ignore[no-any-return]
        except (TypeError, KeyError):
            continue
    raise AssertionError(f"cannot make a {cls}")


REQUEST = RequestFactory().get("/v1/anything")


def test_every_client_error_of_the_domain_is_a_4xx_and_every_other_a_500() -> None:
    wrong = {}
    for cls in sorted(_domain_errors(), key=lambda c: c.__qualname__):
        status = problems.handle(REQUEST, _instance(cls)).status_code  # type: ignore[arg-type]
        expected_4xx = issubclass(cls, ClientError)
        if expected_4xx != (400 <= status < 500) or (not expected_4xx and status != 500):
            wrong[f"{cls.__module__}.{cls.__qualname__}"] = status
    assert not wrong, wrong


@pytest.mark.parametrize(
    "error", [RecursionError("deep"), UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), ValueError("bug")]
)
def test_a_bug_inside_the_domain_is_never_the_clients_400(
    api: Any, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Errors a decoder would raise for bad input, raised by a bug in the domain instead: a 500."""
    from loyalty.points import posting

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(posting, "post", broken)
    r = api.client.post("/v1/till/transactions", json=purchase(api.a.card), headers=api.a.headers(**idem()))
    body = assert_problem(r, 500)
    assert "deep" not in body["detail"] and "bug" not in body["detail"]


def test_the_app_registers_the_table_with_litestar() -> None:
    app = create_app(database_url="sqlite+aiosqlite://")
    registered = set(app.exception_handlers)
    assert set(problems.HANDLERS) - registered == set() and Exception in registered


def test_a_body_that_cannot_be_decoded_is_still_a_400(api: Any) -> None:
    for content in (b"\xff\xfe{", b"[" * 100_000, b'{"a": '):
        r = api.client.post(
            "/v1/till/lookup", content=content, headers=api.a.headers(**{"Content-Type": "application/json"})
        )
        assert_problem(r, 400)


def test_the_caller_is_request_user_set_by_the_authentication_middleware(api: Any) -> None:
    """A route with no guard of its own still needs a key: the middleware verifies it and puts the
    caller on ``request.user``; public routes (probes, customer pages) are marked as such."""
    from litestar import Request, get

    @get("/v1/whoami", sync_to_thread=False)
    def whoami(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return {"key_id": request.user.key_id, "role": request.user.role}

    api.client.app.register(whoami)
    r = api.client.get("/v1/whoami", headers=api.a.headers("admin"))
    assert r.status_code == 200 and r.json()["role"] == "admin", r.text
    body = assert_problem(api.client.get("/v1/whoami"), 401)
    assert "Bearer" in body["detail"]
    assert_problem(api.client.get("/v1/whoami", headers={"Authorization": f"Bearer lk_1_{'x' * 40}"}), 401)
    assert api.client.get("/health").status_code == 200
    assert api.client.get(f"/v1/cards/{api.a.token}/balance").status_code == 200
