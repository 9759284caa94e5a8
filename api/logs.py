"""Structured logs: one JSON object per line on stderr, every line of a request carrying its request id.

- :func:`configure` sends the standard library's logging (ours, uvicorn's, SQLAlchemy's warnings) and
  structlog's through one formatter: JSON by default, ``LOYALTY_LOG_FORMAT=console`` for a person at a
  terminal. uvicorn's own access log is switched off: :class:`RequestLog` writes the access line.
- :class:`RequestLog` wraps the whole app (outside routing, so a 404 of the router is logged too): it
  takes the client's ``X-Request-ID`` when it is short and plain (:data:`REQUEST_ID`), else makes one,
  binds it for every line written while the request runs, returns it in the ``X-Request-ID`` header,
  and writes one ``request`` line at the end: method, route template, path with any card token
  replaced, status, duration.
- Every line passes :func:`redact` last: card tokens in paths and URLs, bearer credentials, webhook
  secrets and values under sensitive keys never reach the output. Request headers and bodies are never
  logged; exception tracebacks are plain text without local variables.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from typing import Any, TextIO

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bound_contextvars
from structlog.typing import EventDict, Processor

from api.problems import redact_path

FORMAT_ENV = "LOYALTY_LOG_FORMAT"
FORMATS = ("json", "console")
HEADER = "x-request-id"
#: A request id the client may choose: short, and nothing a log reader could mistake for structure.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Longest path written in an access line (a path that matched no route is whatever the client sent).
MAX_LOGGED_PATH = 200

#: Keys whose values are never written, whatever they hold.
SENSITIVE_KEYS = frozenset(
    {"authorization", "api_key", "key", "secret", "token", "password", "idempotency_key", "cookie"}
)
#: Credentials that may sit inside free text (an exception's message, a URL): a card token after
#: /v1/cards/ or /c/ (paths and the QR card's URL), a bearer credential, a webhook signing secret.
_IN_TEXT = (
    (re.compile(r"(/v1/cards/|/c/)[^/?#\s\"'<>{}]+"), r"\1<token>"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1<redacted>"),
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), "whsec_<redacted>"),
)


#: Whether a text may hold any of the above: one scan, so that most values are passed by cheaply.
_MAYBE = re.compile(r"/v1/cards/|/c/|(?i:bearer)|whsec_")


def _scrub(text: str) -> str:
    if _MAYBE.search(text) is None:
        return text
    for pattern, replacement in _IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def redact(_logger: Any, _method: str, event: EventDict) -> EventDict:
    """The last step before a line is written: no credential in any value."""
    for name, value in event.items():
        if name.lower() in SENSITIVE_KEYS:
            event[name] = "<redacted>"
        elif isinstance(value, str):
            event[name] = _scrub(value)
    return event


_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def log_format() -> str:
    """``LOYALTY_LOG_FORMAT`` (json unless it says console)."""
    return "console" if os.environ.get(FORMAT_ENV, "json").strip().lower() == "console" else "json"


class Formatter(structlog.stdlib.ProcessorFormatter):
    """The one formatter of every log line; also named by ``loyalty serve``'s logging config."""

    def __init__(self, fmt: str | None = None) -> None:
        _configure_structlog()
        renderer: Processor = (
            structlog.dev.ConsoleRenderer(colors=False)
            if (fmt or log_format()) == "console"
            else structlog.processors.JSONRenderer()
        )
        super().__init__(
            foreign_pre_chain=_SHARED,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                renderer,
            ],
        )


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is written (a test's capture, say), like the
    logging module's own last-resort handler."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _configure_structlog() -> None:
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


ACCESS_LOGGER = "api.access"
access = structlog.get_logger(ACCESS_LOGGER)


def configure(stream: TextIO | None = None, fmt: str | None = None) -> logging.Handler:
    """Route all logging through :class:`Formatter` to ``stream`` (default: stderr); returns the
    handler. Called by the app factory in every worker; a handler of ours already on the root logger
    (``loyalty serve``'s logging config, an earlier app) is replaced, any other is left alone."""
    handler: logging.Handler = _Stderr() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(Formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, Formatter)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # The access line goes straight to our handler: not through the root logger's other handlers (a
    # test runner's capture would keep every request's line in memory), whatever the root's level.
    access_log = logging.getLogger(ACCESS_LOGGER)
    access_log.handlers = [handler]
    access_log.propagate = False
    access_log.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):  # plain uvicorn gives these handlers of its own
        uvicorn_log = logging.getLogger(name)
        uvicorn_log.handlers.clear()
        uvicorn_log.propagate = True
    # Ours is the access line; uvicorn's would be a second one per request, in another shape.
    logging.getLogger("uvicorn.access").disabled = True
    # A line per outgoing request (webhook attempts) is the attempts table's job, as in `loyalty dispatch`.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return handler


def _request_id(scope: Scope) -> str:
    given = [v for k, v in scope.get("headers", ()) if k == HEADER.encode()]
    if len(given) == 1:
        value = given[0].decode("latin-1")
        if REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


class RequestLog:
    """The outermost ASGI layer of the app (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status: list[int] = []

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER.encode()]
                message["headers"] = [*headers, (HEADER.encode(), request_id.encode())]
            await send(message)

        with bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, tagged)
            except BaseException:
                access.exception("request failed", **_line(scope, None, started))
                raise
            access.info("request", **_line(scope, status[0] if status else None, started))


def _line(scope: Scope, status: int | None, started: float) -> dict[str, Any]:
    client = scope.get("client")
    return {
        "method": scope.get("method"),
        "route": scope.get("path_template") or None,
        "path": redact_path(str(scope.get("path", "")))[:MAX_LOGGED_PATH],
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "client": client[0] if client else None,
    }
