"""What handlers need from the running app: the database, the clock, the secrets, the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from api.auth import Principal, principal_of
from loyalty.cards.secrets import Secrets
from loyalty.storage.db import Database


def db_of(request: Request[Any, Any, Any]) -> Database:
    db: Database = request.app.state.db
    return db


def now_of(request: Request[Any, Any, Any]) -> datetime:
    now: datetime = request.app.state.clock()
    return now


def secrets_of(request: Request[Any, Any, Any]) -> Secrets:
    secrets: Secrets = request.app.state.secrets
    return secrets


async def caller(request: Request[Any, Any, Any]) -> Principal:
    """The verified caller: ``request.user``, set by the authentication middleware."""
    return await principal_of(request)


def actor(principal: Principal) -> str:
    """How changes are attributed in the audit log."""
    return f"{principal.role}-key:{principal.key_id}"


#: What handlers ask for by name (app-level dependencies of api.app): the database, the request's
#: clock reading, the card-token keys, and the verified caller.
Db = NamedDependency[Database]
Now = NamedDependency[datetime]
CardKeys = NamedDependency[Secrets]
Caller = NamedDependency[Principal]
