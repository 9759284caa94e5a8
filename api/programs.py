"""Marketer endpoints: validate as you type, drafts, simulation, backtest, publishing, rule report."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import JSONBody, QueryParameter

import rules
from api import schemas
from api.auth import requires
from api.context import Caller, Db, Now, actor
from api.problems import UNSUPPORTED, Problem
from loyalty.programs import backtest, versions

#: A program document is a few kB; this also bounds the YAML parser's work.
MAX_DOCUMENT_BYTES = 512 * 1024
DOCUMENT_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/plain", "application/json")


async def read_document(request: Request[Any, Any, Any]) -> str:
    """The raw body as text; the engine parses YAML and JSON alike and reports positions for both."""
    media = request.headers.get("content-type", "application/yaml").split(";")[0].strip().lower()
    if media not in DOCUMENT_TYPES:
        raise Problem(UNSUPPORTED, "send the document as application/yaml or application/json")
    body = await request.body()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(UNSUPPORTED, "the document must be UTF-8 text") from None


def summary(program: rules.CheckedProgram) -> dict[str, Any]:
    doc = program.document
    return {
        "program": doc.program,
        "digest": program.digest,
        "rules": [r.id for r in doc.rules],
        "rewards": [r.code for r in doc.rewards],
        "tiers": [t.name for t in doc.tiers.levels] if doc.tiers else [],
    }


class ProgramController(Controller):
    path = "/v1/program"
    tags = ["marketer"]
    guards = [requires("marketer", "admin")]

    @post(
        "/validate",
        operation_id="validateProgramDocument",
        status_code=200,
        request_max_body_size=MAX_DOCUMENT_BYTES,
        opt={"document": True},
    )
    async def validate(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Check a document without saving it (the editor calls this as the marketer types)."""
        return summary(rules.load_program(await read_document(request)))

    @get("/", operation_id="getPublishedProgram")
    async def published(self, principal: Caller, db: Db, now: Now) -> versions.VersionView:
        """The version in force now."""
        priced = await versions.current(db, principal.tenant_id, now)
        view = await versions.get_version(db, principal.tenant_id, priced.version_id)
        return dataclasses.replace(view, currency=priced.program.document.currency)

    @get("/versions", operation_id="listProgramVersions")
    async def versions(self, principal: Caller, db: Db) -> list[versions.VersionView]:
        return await versions.list_versions(db, principal.tenant_id)

    @get("/versions/{version_id:int}", operation_id="getProgramVersion")
    async def version(self, principal: Caller, db: Db, version_id: schemas.PathId) -> versions.VersionView:
        return await versions.get_version(db, principal.tenant_id, version_id)

    @post(
        "/drafts",
        operation_id="saveDraft",
        status_code=201,
        request_max_body_size=MAX_DOCUMENT_BYTES,
        opt={"document": True},
    )
    async def save_draft(
        self, request: Request[Any, Any, Any], principal: Caller, db: Db, now: Now
    ) -> versions.VersionView:
        """Save the draft (YAML or JSON body); errors come back as a 422 with line, column and hint."""
        return await versions.save_draft(
            db,
            principal.tenant_id,
            await read_document(request),
            actor=actor(principal),
            now=now,
        )

    @post("/versions/{version_id:int}/simulations", operation_id="simulateVersion", status_code=200)
    async def simulate(
        self,
        principal: Caller,
        db: Db,
        version_id: schemas.PathId,
        data: JSONBody[schemas.SimulationRequest],
    ) -> dict[str, Any]:
        """Evaluate a basket against a version (a draft, typically) with the full explanation."""
        version = await versions.get_version(db, principal.tenant_id, version_id)
        program = versions.checked(version.digest, version.document)
        b = data.basket
        result = rules.evaluate(
            program, b.transaction(), b.engine_member(), b.engine_outlet(), b.engine_event(), explain=True
        )
        return result.as_dict()

    @post("/versions/{version_id:int}/backtests", operation_id="backtestVersion", status_code=200)
    async def backtest(
        self, principal: Caller, db: Db, version_id: schemas.PathId, data: JSONBody[schemas.Period]
    ) -> backtest.BacktestReport:
        """Replay stored purchases of a period against a version and compare with what was booked."""
        version = await versions.get_version(db, principal.tenant_id, version_id)
        return await backtest.backtest(
            db,
            principal.tenant_id,
            versions.checked(version.digest, version.document),
            since=data.since,
            until=data.until,
        )

    @post("/versions/{version_id:int}/publications", operation_id="publishVersion", status_code=200)
    async def publish(
        self,
        principal: Caller,
        db: Db,
        now: Now,
        version_id: schemas.PathId,
        data: JSONBody[schemas.PublishRequest],
    ) -> versions.VersionView:
        """Publish a draft from ``valid_from``; published versions never change."""
        return await versions.publish(
            db,
            principal.tenant_id,
            version_id,
            actor=actor(principal),
            now=now,
            valid_from=data.valid_from,
        )

    @get("/rule-points", operation_id="pointsPerRule")
    async def rule_points(
        self,
        principal: Caller,
        db: Db,
        since: Annotated[datetime, QueryParameter(description="ISO instant with offset")],
        until: Annotated[datetime, QueryParameter(description="ISO instant with offset")],
    ) -> list[Any]:
        """Points earned per rule over a period, from the stored evaluations."""
        start, end = schemas.period(since, until)
        return list(await backtest.points_per_rule(db, principal.tenant_id, since=start, until=end))
