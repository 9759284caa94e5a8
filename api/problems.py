"""Every error the API returns, as RFC 9457 problem JSON, from one table.

Domain and engine errors are translated here and nowhere else, by their class (see HANDLERS):
handlers raise what the layer below raises, and this module decides the status, the problem ``type``
and what the client may see. Anything not in the table is a 503 when the database is away, else a
500 whose body says nothing about internals.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

import rules
from loyalty import errors as domain
from loyalty.admin.access import IdempotencyInProgress, IdempotencyMismatch
from loyalty.cards.errors import InvalidCardNumber, InvalidToken
from loyalty.storage.db import outage

log = logging.getLogger("api")

#: Paths that carry a customer's card token (a credential): /v1/cards/<token>/..., /c/<token>.
_TOKEN_IN_PATH = re.compile(r"^(/v1/cards/|/c/)[^/?#]+")


def redact_path(path: str) -> str:
    """The path as a log may show it: a card token replaced by ``<token>``."""
    return _TOKEN_IN_PATH.sub(r"\1<token>", path)


PROBLEM_JSON = "application/problem+json"
#: Problem types are URNs: stable identifiers a client can switch on, documented in the OpenAPI schema.
TYPE_PREFIX = "urn:loyalty:problem:"


@dataclass(frozen=True, slots=True)
class ProblemType:
    status: int
    slug: str
    title: str


class Problem(Exception):
    """An API-level error raised by a handler or guard (bad auth, missing Idempotency-Key, ...)."""

    def __init__(
        self, kind: ProblemType, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


BAD_REQUEST = ProblemType(400, "bad-request", "The request is malformed")
UNAUTHORIZED = ProblemType(401, "unauthorized", "A valid API key is required")
FORBIDDEN = ProblemType(403, "forbidden", "This key may not do that")
NOT_FOUND = ProblemType(404, "not-found", "No such resource")
METHOD_NOT_ALLOWED = ProblemType(405, "method-not-allowed", "Method not allowed")
CONFLICT = ProblemType(409, "conflict", "The request conflicts with the current state")
IN_PROGRESS = ProblemType(409, "request-in-progress", "A request with this Idempotency-Key is still running")
TOO_LARGE = ProblemType(413, "too-large", "The request body is too large")
UNSUPPORTED = ProblemType(415, "unsupported-media-type", "Unsupported media type")
INVALID = ProblemType(422, "invalid", "The request is not valid")
INVALID_PROGRAM = ProblemType(422, "invalid-program", "The program document has errors")
IDEMPOTENCY_MISMATCH = ProblemType(
    422, "idempotency-key-reused", "This Idempotency-Key was used with a different request"
)
RATE_LIMITED = ProblemType(429, "rate-limited", "Too many requests")
INTERNAL = ProblemType(500, "internal", "Internal error")
UNAVAILABLE = ProblemType(503, "unavailable", "The service is unavailable for a moment")
#: Seconds a client is asked to wait while the database is away.
RETRY_AFTER_SECONDS = 5
INSUFFICIENT_POINTS = ProblemType(409, "insufficient-points", "Not enough points")
NOT_ALLOWED = ProblemType(409, "not-allowed", "Not allowed for this member now")
INVALID_CARD = ProblemType(422, "invalid-card-number", "The card number is not valid")
INVALID_TOKEN = ProblemType(404, "invalid-card-token", "Unknown card")

_BY_STATUS = {
    p.status: p
    for p in (
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        CONFLICT,
        TOO_LARGE,
        UNSUPPORTED,
        INVALID,
        RATE_LIMITED,
        INTERNAL,
        UNAVAILABLE,
    )
}


def problem_response(
    kind: ProblemType, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + kind.slug,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        **extra,
    }
    return Response(body, status_code=kind.status, media_type=PROBLEM_JSON, headers=headers)


Translator = Callable[[Any], Response[dict[str, Any]]]


# --- translations, one per exception family -----------------------------------------------------


def _from_problem(exc: Problem) -> Response[dict[str, Any]]:
    return problem_response(exc.kind, exc.detail, headers=exc.headers, **exc.extra)


def _from_program_error(exc: rules.ProgramError) -> Response[dict[str, Any]]:
    errors = [issue.as_dict() for issue in exc.issues]
    return problem_response(
        INVALID_PROGRAM, f"{len(errors)} problem(s) in the program document", errors=errors
    )


def _from_insufficient(exc: domain.InsufficientPoints) -> Response[dict[str, Any]]:
    return problem_response(INSUFFICIENT_POINTS, str(exc), available=exc.available, cost=exc.cost)


def _from_invalid_input(exc: domain.InvalidInput) -> Response[dict[str, Any]]:
    issues = [i.as_dict() if isinstance(i, rules.Issue) else str(i) for i in exc.issues]
    if issues and all(isinstance(i, dict) for i in issues):
        return problem_response(INVALID_PROGRAM, str(exc), errors=issues)
    return problem_response(INVALID, str(exc), **({"errors": issues} if issues else {}))


def _simple(kind: ProblemType) -> Translator:
    def translate(exc: Exception) -> Response[dict[str, Any]]:
        return problem_response(kind, str(exc))

    return translate


def _from_token(exc: InvalidToken) -> Response[dict[str, Any]]:
    # Forged, mistyped and foreign tokens all read "unknown card": the reason is not the client's business.
    return problem_response(INVALID_TOKEN, "this card code is not valid; type the card number instead")


def _from_evaluation_error(exc: rules.EvaluationError) -> Response[dict[str, Any]]:
    return problem_response(INVALID, str(exc))


def _from_validation(exc: ValidationException) -> Response[dict[str, Any]]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    if any(isinstance(i, dict) and i.get("key") == "data" and i.get("source") == "body" for i in extra):
        return problem_response(BAD_REQUEST, "this endpoint needs a JSON body")
    headers = [i for i in extra if isinstance(i, dict) and i.get("source") == "header"]
    if headers:
        # A missing or malformed header (Idempotency-Key) makes the request malformed, not invalid.
        names = ", ".join(str(i.get("key")) for i in headers)
        return problem_response(BAD_REQUEST, f"header {names}: {headers[0].get('message')}")
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            errors.append(
                {"field": item.get("key"), "source": item.get("source"), "message": item.get("message")}
            )
    detail = "; ".join(
        f"{e['field']}: {e['message']}" if e["field"] else str(e["message"]) for e in errors[:5]
    )
    return problem_response(INVALID if errors else BAD_REQUEST, detail or str(exc.detail), errors=errors)


def _from_http(exc: HTTPException) -> Response[dict[str, Any]]:
    kind = _BY_STATUS.get(exc.status_code) or ProblemType(exc.status_code, "http-error", "HTTP error")
    headers = dict(exc.headers or {})
    if exc.status_code == 429:
        # The limiter sends the IETF RateLimit headers; clients and proxies also expect Retry-After.
        reset = headers.get("RateLimit-Reset", "1")
        headers["Retry-After"] = str(max(1, int(reset))) if reset.isdigit() else "1"
        return problem_response(
            kind, "too many requests for this key; retry after the given seconds", headers=headers
        )
    return problem_response(kind, str(exc.detail), headers=headers)


#: Exception class -> translation. Litestar's exception-handler lookup (and :func:`handle`) takes the
#: most specific class of an exception (along its MRO), so a subclass needs an entry only when it is
#: answered differently from its parent. Domain errors that are not a ClientError fall through to
#: the 500 of :func:`handle`: a bug inside the domain is never reported as the client's fault.
HANDLERS: dict[type[BaseException], Translator] = {
    Problem: _from_problem,
    domain.ClientError: _simple(BAD_REQUEST),
    domain.NotFound: _simple(NOT_FOUND),
    InvalidToken: _from_token,
    domain.Conflict: _simple(CONFLICT),
    domain.InsufficientPoints: _from_insufficient,
    domain.NotAllowed: _simple(NOT_ALLOWED),
    IdempotencyInProgress: _simple(IN_PROGRESS),
    domain.InvalidInput: _from_invalid_input,
    IdempotencyMismatch: _simple(IDEMPOTENCY_MISMATCH),
    InvalidCardNumber: _simple(INVALID_CARD),
    rules.ProgramError: _from_program_error,
    rules.EvaluationError: _from_evaluation_error,
    HTTPException: _from_http,
    ValidationException: _from_validation,
}


def translation(exc: BaseException) -> Translator | None:
    """The translation of the most specific class of ``exc`` that has one."""
    for cls in type(exc).__mro__:
        translate = HANDLERS.get(cls)
        if translate is not None:
            return translate
    return None


def exception_handlers() -> dict[type[Exception], Callable[[Request[Any, Any, Any], Exception], Any]]:
    """The table for Litestar's own lookup: each class of HANDLERS, and every other exception (an
    outage, a bug) to :func:`handle`."""

    def adapt(translate: Translator) -> Callable[[Request[Any, Any, Any], Exception], Any]:
        return lambda _request, exc: translate(exc)

    table: dict[type[Exception], Callable[[Request[Any, Any, Any], Exception], Any]] = {
        cls: adapt(translate) for cls, translate in HANDLERS.items() if issubclass(cls, Exception)
    }
    table[Exception] = handle
    return table


def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    translate = translation(exc)
    if translate is not None:
        return translate(exc)
    reason = outage(exc)
    if reason is not None:
        log.warning(
            "database unavailable on %s %s: %s", request.method, redact_path(request.url.path), reason
        )
        return problem_response(
            UNAVAILABLE,
            "the database cannot be reached right now; retry shortly (a till write with the same"
            " Idempotency-Key, which never books twice)",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    log.exception("unhandled error on %s %s", request.method, redact_path(request.url.path), exc_info=exc)
    return problem_response(INTERNAL, "The server could not complete the request.")


__all__ = [
    "HANDLERS",
    "PROBLEM_JSON",
    "Problem",
    "ProblemType",
    "exception_handlers",
    "handle",
    "problem_response",
    "redact_path",
]
