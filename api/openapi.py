"""What the generated OpenAPI document does not know on its own: problem responses and bearer keys.

Litestar documents a 400 in its own exception shape; this API answers every error as RFC 9457
problem JSON, so the document is corrected here, in one place, once the routes are known.
"""

from __future__ import annotations

from litestar.openapi.spec import (
    Components,
    Link,
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Reference,
    Schema,
    SecurityScheme,
)

from api.problems import PROBLEM_JSON

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, description="A URN naming the kind of problem"),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=OpenAPIType.OBJECT),
            description="Field errors, or program-document errors with line and column",
        ),
    },
    description="RFC 9457 problem details",
)

#: Statuses documented for every operation, and what they mean here.
ERRORS = {
    "400": "Malformed request (not JSON, missing body, missing Idempotency-Key)",
    "401": "Missing, unknown or revoked API key",
    "403": "This key's role may not call the endpoint",
    "404": "Not found for this tenant (another tenant's ids are never found)",
    "409": "Conflicts with the current state (not enough points, a request still running, ...)",
    "413": "Body too large",
    "415": "Unsupported media type",
    "422": "Invalid request (field errors, or program-document errors with positions)",
    "429": "Rate limited; see Retry-After",
    "503": "The database is unavailable for a moment; see Retry-After",
}

#: What a till does next with an answer (OpenAPI links: clients and schemathesis' stateful tests
#: follow them): operation -> (its success status, {link name: (next operation, parameters)}).
LINKS = {
    "tillPostTransaction": (
        "201",
        {"refund": ("tillRefund", {"transaction_id": "$response.body#/transaction/transaction_id"})},
    ),
    "tillRedeem": (
        "201",
        {"cancel": ("tillCancelRedemption", {"redemption_id": "$response.body#/redemption/redemption_id"})},
    ),
}

PUBLIC_PREFIXES = (
    "/health",
    "/ready",
    "/v1/cards/",
    "/c/",
    "/till",
    "/editor",
    "/dashboard",
    "/static",
    "/schema",
)


def document(schema: OpenAPI) -> OpenAPI:
    """Add the problem responses and the bearer-key security scheme to ``schema`` (in place)."""
    components = schema.components or Components()
    components.schemas = {**(components.schemas or {}), "Problem": PROBLEM_SCHEMA}
    components.security_schemes = {
        **(components.security_schemes or {}),
        "apiKey": SecurityScheme(
            type="http", scheme="bearer", description="Authorization: Bearer lk_<id>_<secret>"
        ),
    }
    schema.components = components
    problem = OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))
    for path, item in (schema.paths or {}).items():
        for method in ("get", "post", "put", "patch", "delete"):
            op = getattr(item, method, None)
            if op is None:
                continue
            responses = dict(op.responses or {})
            if op.operation_id in LINKS:
                status, links = LINKS[op.operation_id]
                ok = responses.get(status)
                if isinstance(ok, OpenAPIResponse):
                    ok.links = {
                        name: Link(operation_id=target, parameters=dict(params))
                        for name, (target, params) in links.items()
                    }
            for status, text in ERRORS.items():
                responses[status] = OpenAPIResponse(description=text, content={PROBLEM_JSON: problem})
            op.responses = responses
            if not path.startswith(PUBLIC_PREFIXES):
                op.security = [{"apiKey": []}]
    return schema
