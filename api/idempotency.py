"""Idempotent till writes (IETF Idempotency-Key draft semantics).

The same key with the same request gets the first response again, status and body; with another
body, a 422; while the first is still running, a 409. Refusals (4xx answers) are answers too and are
replayed.

Ledger writes (post, refund, redeem, cancel) receive an :class:`~loyalty.admin.access.Answer` and record
the response in the same database transaction as the write: a retry after a commit always replays
it, a retry after a crash before the commit runs afresh, and a server error leaves nothing to clean
up. Binding a blank card, idempotent in itself, records its answer after the write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from litestar import Request, Response
from litestar.params import HeaderParameter
from litestar.serialization import encode_json

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
REPLAYED = "Idempotent-Replayed"
#: Answers about the key itself, never stored as the request's answer.
_ABOUT_THE_KEY = (access.IdempotencyInProgress, access.IdempotencyMismatch)


def _replayed(replay: access.Replay) -> Response[Any]:
    media = PROBLEM_JSON if replay.status_code >= 400 else "application/json"
    return Response(
        replay.body.encode(), status_code=replay.status_code, media_type=media, headers={REPLAYED: "true"}
    )


async def _answer(
    request: Request[Any, Any, Any], status_code: int, render: Callable[[Any], Any]
) -> access.Answer:
    key = request.headers.get(HEADER)
    if key is None:
        raise Problem(BAD_REQUEST, f"till writes need an {HEADER} header, so that a retry never books twice")
    principal = await principal_of(request)
    state = request.app.state
    return access.Answer(
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        key=key,
        fingerprint=access.request_fingerprint(request.method, request.url.path, await request.body()),
        now=state.clock(),
        render=lambda result: (status_code, encode_json(render(result)).decode()),
    )


async def idempotent(
    request: Request[Any, Any, Any],
    run: Callable[[access.Answer], Awaitable[Any]],
    render: Callable[[Any], Any] = lambda result: result,
    status_code: int = 201,
) -> Response[Any]:
    """Run the ledger write ``run(answer)`` once per Idempotency-Key; it records ``render(result)``
    as its answer in its own transaction. Retries are answered from the record."""
    answer = await _answer(request, status_code, render)
    db = request.app.state.db
    try:
        result = await run(answer)
    except access.AlreadyAnswered as done:
        return _replayed(done.replay)
    except Exception as exc:
        refusal = problems.handle(request, exc)
        if 400 <= refusal.status_code < 500 and not isinstance(exc, _ABOUT_THE_KEY):
            await access.record_answer(db, answer, refusal.status_code, encode_json(refusal.content).decode())
        return refusal
    recorded = answer.recorded
    if recorded is None:  # e.g. a receipt booked before: the answer is a read, stored now
        recorded = answer.render(result)
        await access.record_answer(db, answer, *recorded)
    return Response(recorded[1].encode(), status_code=recorded[0], media_type="application/json")


async def idempotent_by_nature(
    request: Request[Any, Any, Any], run: Callable[[], Awaitable[Any]], status_code: int = 201
) -> Response[Any]:
    """For a write outside the ledger that is idempotent in itself (binding a blank card: a second
    run finds the card bound and answers the same): replay a recorded answer, else run and record
    the answer afterwards. Nothing is claimed beforehand, so a failure (the database away) leaves
    nothing that would hold up a retry."""

    async def once(answer: access.Answer) -> Any:
        await access.prior_answer(request.app.state.db, answer)
        return await run()

    return await idempotent(request, once, status_code=status_code)
