"""Idempotent till writes (IETF Idempotency-Key draft semantics), switched on per route.

A route opts in with ``**idempotent(render)``: its handler then receives the request's
:class:`~loyalty.admin.access.Answer` by dependency injection (``answer: Answer``), hands it to the
ledger write, and returns its typed answer as any handler does. The same key with the same request
gets the first response again, status and body; with another body, a 422; while the first is still
running, a 409. Refusals (4xx answers) are answers too and are replayed.

Ledger writes (post, refund, redeem, cancel) record the response in the same database transaction
as the write, through ``answer.render``: a retry after a commit always replays it, a retry after a
crash before the commit runs afresh, and a server error leaves nothing to clean up. A write that is
idempotent in itself (binding a blank card: a second run finds the card bound) is switched on with
``by_nature=True``: a recorded answer is replayed before the handler runs, and the answer is
recorded after it. Either way the route's middleware records what no transaction recorded (a
refusal, a receipt booked before) once the handler has answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import ASGIMiddleware
from litestar.params import HeaderParameter
from litestar.serialization import encode_json
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api import problems
from api.auth import principal_of
from api.problems import BAD_REQUEST, PROBLEM_JSON, Problem
from loyalty.admin import access

HEADER = "Idempotency-Key"
#: Declared on every till write, so the schema documents it and a missing one is refused up front.
IdempotencyKey = Annotated[
    str,
    HeaderParameter(
        name=HEADER,
        min_length=1,
        max_length=access.MAX_IDEMPOTENCY_KEY,
        description="A fresh value per till action, sent again unchanged on every retry of it.",
    ),
]
#: What an idempotent route's handler asks for: the answer its ledger write records.
IdempotentAnswer = NamedDependency[access.Answer]
REPLAYED = "Idempotent-Replayed"
#: Where the request's answer waits for the handler, in the request's state.
_STATE = "idempotency.answer"
#: Set by the route's exception handlers for an answer about the key itself (in progress, mismatch) or a
#: refusal before the handler ran (guards, request validation): never stored as the request's answer.
ABOUT_THE_KEY = "idempotency.about-the-key"


@dataclass(frozen=True, slots=True)
class _Route:
    render: Callable[[Any], Any]
    status_code: int
    by_nature: bool


def replay_response(replay: access.Replay) -> Response[bytes]:
    """The recorded answer, as the first request got it, marked as a replay."""
    media = PROBLEM_JSON if replay.status_code >= 400 else "application/json"
    return Response(
        replay.body.encode(), status_code=replay.status_code, media_type=media, headers={REPLAYED: "true"}
    )


async def _answer(request: Request[Any, Any, Any], route: _Route) -> access.Answer:
    key = request.headers.get(HEADER)
    if key is None:
        raise Problem(BAD_REQUEST, f"till writes need an {HEADER} header, so that a retry never books twice")
    principal = await principal_of(request)
    return access.Answer(
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        key=key,
        fingerprint=access.request_fingerprint(request.method, request.url.path, await request.body()),
        now=request.app.state.clock(),
        render=lambda result: (route.status_code, encode_json(route.render(result)).decode()),
    )


class _Idempotency(ASGIMiddleware):
    """Builds the request's answer before the handler, and records after it what the handler's
    own transaction did not (a refusal, a read such as a receipt booked before)."""

    def __init__(self, route: _Route) -> None:
        self.route = route

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        request: Request[Any, Any, Any] = Request(scope, receive)
        # A missing key or the database away raises to the app's problem table.
        answer = await _answer(request, self.route)
        db = request.app.state.db
        request.state[_STATE] = answer
        if self.route.by_nature:
            try:
                await access.prior_answer(db, answer)
            except access.AlreadyAnswered as done:
                await _asgi(request, replay_response(done.replay))(scope, receive, send)
                return
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await next_app(scope, receive, hold)
        start = held[0]
        status = int(start["status"])
        headers = MutableScopeHeaders(start)
        if (
            answer.recorded is None
            and status < 500
            and REPLAYED not in headers
            and not request.state.get(ABOUT_THE_KEY)
        ):
            body = b"".join(m.get("body", b"") for m in held[1:])
            await access.record_answer(db, answer, status, body.decode())
        for message in held:
            await send(message)


def _asgi(request: Request[Any, Any, Any], response: Response[Any]) -> ASGIApp:
    return response.to_asgi_response(app=None, request=request)


def _replayed(request: Request[Any, Any, Any], exc: access.AlreadyAnswered) -> Response[bytes]:
    return replay_response(exc.replay)


def _about_the_key(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """An answer about the key itself (still in progress, used with another body): answered as
    the problem table says, and never stored as the request's answer."""
    request.state[ABOUT_THE_KEY] = True
    return problems.handle(request, exc)


def _not_an_answer(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A refusal before the handler ran (a guard's 403, a malformed body, any API-level problem): not
    the request's answer, so it is not stored; a corrected retry with the same key runs afresh."""
    request.state[ABOUT_THE_KEY] = True
    return problems.handle(request, exc)


def _provide_answer(request: Request[Any, Any, Any]) -> access.Answer:
    answer: access.Answer = request.state[_STATE]
    return answer


def idempotent(
    render: Callable[[Any], Any] = lambda result: result, *, status_code: int = 201, by_nature: bool = False
) -> dict[str, Any]:
    """The route-handler arguments that switch idempotency on for one route: ``render`` turns what
    the ledger write returns into the answer the till gets (and its retries replay)."""
    route = _Route(render, status_code, by_nature)
    return {
        "status_code": status_code,
        "middleware": [_Idempotency(route)],
        "dependencies": {"answer": Provide(_provide_answer, sync_to_thread=False)},
        "exception_handlers": {
            access.AlreadyAnswered: _replayed,
            access.IdempotencyInProgress: _about_the_key,
            access.IdempotencyMismatch: _about_the_key,
            # Only the domain's refusals are answers (stored and replayed), as they always were.
            Problem: _not_an_answer,
            HTTPException: _not_an_answer,
            ValidationException: _not_an_answer,
        },
    }
