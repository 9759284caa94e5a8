"""Idempotent till writes (IETF Idempotency-Key draft semantics).

A till write claims its ``Idempotency-Key`` (scoped to the caller's API key) before it runs. The same
key with the same request gets the first response again, status and body; with another body, a 422;
while the first is still running, a 409. Domain errors are answers too and are replayed; a server
error releases the claim so that the till may retry.
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
from loyalty import access

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


async def idempotent(
    request: Request[Any, Any, Any], run: Callable[[], Awaitable[Any]], status_code: int = 201
) -> Response[Any]:
    """Run ``run`` once per Idempotency-Key and answer retries from the stored response."""
    key = request.headers.get(HEADER)
    if key is None:
        raise Problem(BAD_REQUEST, f"till writes need an {HEADER} header, so that a retry never books twice")
    principal = await principal_of(request)
    state = request.app.state
    fingerprint = access.request_fingerprint(request.method, request.url.path, await request.body())
    replay = await access.claim(
        state.db,
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        key=key,
        fingerprint=fingerprint,
        now=state.clock(),
    )
    if replay is not None:
        media = PROBLEM_JSON if replay.status_code >= 400 else "application/json"
        return Response(
            replay.body.encode(), status_code=replay.status_code, media_type=media, headers={REPLAYED: "true"}
        )
    try:
        payload = await run()
    except Exception as exc:
        answer = problems.handle(request, exc)
        if answer.status_code >= 500:
            await access.release(state.db, api_key_id=principal.key_id, key=key)
            return answer
        body = encode_json(answer.content)
        await access.complete(
            state.db, api_key_id=principal.key_id, key=key, status_code=answer.status_code, body=body.decode()
        )
        return answer
    body = encode_json(payload)
    await access.complete(
        state.db, api_key_id=principal.key_id, key=key, status_code=status_code, body=body.decode()
    )
    return Response(body, status_code=status_code, media_type="application/json")
