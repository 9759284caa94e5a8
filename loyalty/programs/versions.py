"""Program versions: drafts that marketers edit, published versions that price transactions.

A published version never changes; the version whose ``valid_from`` is the latest one not after a
transaction's ``occurred_at`` prices it, so a till that was offline is priced by the rules of the
moment of the sale. Checked programs are cached by digest: the digest is the version's identity.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from cachetools import LRUCache, TTLCache
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

import rules
from loyalty.errors import Conflict, InvalidInput, NotFound
from loyalty.storage import audit_log
from loyalty.storage.db import Database
from loyalty.storage.models import Program, ProgramVersion, UTCDateTime


class Unit(Protocol):
    """What reading versions needs of a ledger unit of work (:class:`loyalty.ledger.Unit`): programs
    sit below the ledger, so they name the few methods they use instead of importing it."""

    scope: str

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    @staticmethod
    def instant(value: Any) -> datetime | None: ...


#: Checked programs kept in memory (a few kB each); versions are few and immutable once published.
CACHE_SIZE = 128

_cache: LRUCache[str, rules.CheckedProgram] = LRUCache(maxsize=CACHE_SIZE)
_cache_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class VersionView:
    id: int
    program_id: int
    number: int
    status: str
    digest: str
    valid_from: datetime | None
    created_at: datetime
    created_by: str
    published_at: datetime | None
    published_by: str | None
    document: str
    #: The program's currency (ISO 4217): set where a client shows money (the version in force).
    currency: str | None = None


def _view(v: ProgramVersion) -> VersionView:
    return VersionView(
        v.id,
        v.program_id,
        v.number,
        v.status,
        v.digest,
        v.valid_from,
        v.created_at,
        v.created_by,
        v.published_at,
        v.published_by,
        v.document,
    )


def check(text: str) -> rules.CheckedProgram:
    """Load and check a document, turning the engine's error into ours (with every issue)."""
    try:
        return rules.load_program(text)
    except rules.ProgramError as exc:
        raise InvalidInput(f"invalid program: {exc}", issues=exc.issues) from exc


def cached(digest: str) -> rules.CheckedProgram | None:
    """The checked program of a version seen before, or None."""
    with _cache_lock:
        return _cache.get(digest)


def checked(digest: str, text: str) -> rules.CheckedProgram:
    """The checked program of a stored version, from the cache when seen before."""
    with _cache_lock:
        hit = _cache.get(digest)
    if hit is not None:
        return hit
    program = check(text)
    with _cache_lock:
        return _cache.setdefault(digest, program)


async def program_id_of(session: AsyncSession, tenant_id: int) -> int:
    program_id = await session.scalar(select(Program.id).where(Program.tenant_id == tenant_id))
    if program_id is None:
        raise NotFound(f"tenant {tenant_id} has no program")
    return program_id


async def save_draft(db: Database, tenant_id: int, text: str, *, actor: str, now: datetime) -> VersionView:
    """Validate ``text`` and store it as the draft (the open draft is updated, else a new one is made)."""
    program = check(text)
    async with db.write() as s:
        program_id = await program_id_of(s, tenant_id)
        latest = await s.scalar(
            select(ProgramVersion)
            .where(ProgramVersion.tenant_id == tenant_id, ProgramVersion.program_id == program_id)
            .order_by(ProgramVersion.number.desc())
            .limit(1)
            .with_for_update()
        )
        if latest is not None and latest.status == "draft":
            latest.document, latest.digest = text, program.digest
            latest.created_at, latest.created_by = now, actor
            version = latest
        else:
            version = ProgramVersion(
                tenant_id=tenant_id,
                program_id=program_id,
                number=(latest.number + 1 if latest else 1),
                status="draft",
                document=text,
                digest=program.digest,
                created_at=now,
                created_by=actor,
            )
            s.add(version)
        await s.flush()
        await audit_log.record(
            s,
            tenant_id,
            actor=actor,
            action="save_draft",
            entity="program_version",
            entity_id=version.id,
            at=now,
            details={"number": version.number, "digest": program.digest},
        )
        return _view(version)


async def publish(
    db: Database,
    tenant_id: int,
    version_id: int,
    *,
    actor: str,
    now: datetime,
    valid_from: datetime | None = None,
) -> VersionView:
    """Publish a draft from ``valid_from`` (default ``now``). History is never rewritten: a version
    cannot take effect in the past, nor before the latest published one."""
    valid_from = valid_from or now
    if valid_from < now:
        raise InvalidInput("valid_from must not be in the past: transactions already priced stay as they are")
    async with db.write() as s:
        version = await s.scalar(
            select(ProgramVersion)
            .where(ProgramVersion.tenant_id == tenant_id, ProgramVersion.id == version_id)
            .with_for_update()
        )
        if version is None:
            raise NotFound(f"program version {version_id} not found")
        if version.status != "draft":
            raise Conflict(f"program version {version.number} is already published")
        checked(version.digest, version.document)  # stored drafts were valid; prove it once more
        last = await s.scalar(
            select(func.max(ProgramVersion.valid_from)).where(
                ProgramVersion.tenant_id == tenant_id,
                ProgramVersion.program_id == version.program_id,
                ProgramVersion.status == "published",
            )
        )
        if last is not None and valid_from <= last:
            raise Conflict(f"valid_from must be after the latest published version's ({last.isoformat()})")
        await s.execute(
            update(ProgramVersion)
            .where(ProgramVersion.id == version.id)
            .values(status="published", valid_from=valid_from, published_at=now, published_by=actor)
        )
        await audit_log.record(
            s,
            tenant_id,
            actor=actor,
            action="publish",
            entity="program_version",
            entity_id=version.id,
            at=now,
            details={"number": version.number, "valid_from": valid_from.isoformat()},
        )
        await s.refresh(version)
        return _view(version)


async def create_version(
    db: Database, tenant_id: int, text: str, *, actor: str, now: datetime, valid_from: datetime | None = None
) -> VersionView:
    """Save ``text`` as a draft and publish it at once (setup scripts, imports, tests)."""
    draft = await save_draft(db, tenant_id, text, actor=actor, now=now)
    return await publish(db, tenant_id, draft.id, actor=actor, now=now, valid_from=valid_from)


async def get_version(db: Database, tenant_id: int, version_id: int) -> VersionView:
    async with db.read() as s:
        version = await s.scalar(
            select(ProgramVersion).where(
                ProgramVersion.tenant_id == tenant_id, ProgramVersion.id == version_id
            )
        )
    if version is None:
        raise NotFound(f"program version {version_id} not found")
    return _view(version)


async def list_versions(db: Database, tenant_id: int) -> list[VersionView]:
    async with db.read() as s:
        rows = (
            await s.scalars(
                select(ProgramVersion)
                .where(ProgramVersion.tenant_id == tenant_id)
                .order_by(ProgramVersion.number)
            )
        ).all()
    return [_view(v) for v in rows]


@dataclass(frozen=True, slots=True)
class Priced:
    """The version that prices a moment, with its checked program."""

    version_id: int
    program_id: int
    digest: str
    program: rules.CheckedProgram


_VERSION_AT = (
    select(ProgramVersion.id, ProgramVersion.program_id, ProgramVersion.digest)
    .where(
        ProgramVersion.tenant_id == bindparam("tenant"),
        ProgramVersion.status == "published",
        ProgramVersion.valid_from <= bindparam("at", type_=UTCDateTime()),
    )
    .order_by(ProgramVersion.valid_from.desc())
    .limit(1)
)


async def version_at(session: AsyncSession, tenant_id: int, at: datetime) -> Priced:
    """The published version valid at ``at``; NotFound when nothing was published yet at that time."""
    conn = await session.connection()
    row = (await conn.execute(_VERSION_AT, {"tenant": tenant_id, "at": at})).first()
    if row is None:
        raise NotFound(f"no program version was valid at {at.isoformat()}")
    version_id, program_id, digest = row
    with _cache_lock:
        program = _cache.get(digest)
    if program is None:
        text = await session.scalar(select(ProgramVersion.document).where(ProgramVersion.id == version_id))
        assert text is not None
        program = checked(digest, text)
    return Priced(version_id, program_id, digest, program)


async def current(db: Database, tenant_id: int, now: datetime) -> Priced:
    """The version in force at ``now``."""
    async with db.read() as s:
        return await version_at(s, tenant_id, now)


# --- versions as ledger operations read them (inside a unit of work, below the ORM) ------------------


@dataclass(frozen=True, slots=True)
class Published:
    """A published version's identity and when it took effect."""

    valid_from: datetime
    id: int
    program_id: int
    digest: str
    tenant_id: int = 0


#: How long a process trusts its list of a tenant's published versions. A stale list is harmless: a
#: posting reads the version valid at its ``occurred_at`` in its own statement and compares, and any
#: miss reads the list again.
PUBLISHED_SECONDS = 60.0
_published: TTLCache[tuple[str, int], list[Published]] = TTLCache(maxsize=10_000, ttl=PUBLISHED_SECONDS)
_published_lock = threading.Lock()

_PUBLISHED = (
    "SELECT valid_from, id, program_id, digest FROM program_versions"
    " WHERE tenant_id = $1 AND status = 'published' ORDER BY valid_from"
)


def published_cache(unit: Unit, tenant_id: int) -> list[Published] | None:
    """The versions remembered for this database's tenant (None: read them)."""
    with _published_lock:
        return _published.get((unit.scope, tenant_id))


async def published(unit: Unit, tenant_id: int) -> list[Published]:
    """The tenant's published versions, oldest first, read now (and remembered)."""
    rows = await unit.fetch(_PUBLISHED, tenant_id)
    versions = [Published(unit.instant(r[0]) or datetime.min, r[1], r[2], r[3], tenant_id) for r in rows]
    with _published_lock:
        _published[(unit.scope, tenant_id)] = versions
    return versions


def published_at(versions: Sequence[Published], at: datetime) -> Published:
    """The version valid at ``at``: the latest whose ``valid_from`` is not after it."""
    i = bisect.bisect_right([v.valid_from for v in versions], at)
    if i == 0:
        raise NotFound(f"no program version was valid at {at.isoformat()}")
    return versions[i - 1]


async def program_of(unit: Unit, version: Published) -> rules.CheckedProgram:
    """The checked program of a version (from the cache after the first time)."""
    hit = cached(version.digest)
    if hit is not None:
        return hit
    text = await unit.fetchval(
        "SELECT document FROM program_versions WHERE tenant_id = $1 AND id = $2",
        version.tenant_id,
        version.id,
    )
    return checked(version.digest, text)


_VERSION_AT_SQL = (
    "SELECT valid_from, id, program_id, digest FROM program_versions"
    " WHERE tenant_id = $1 AND status = 'published' AND valid_from <= $2 ORDER BY valid_from DESC LIMIT 1"
)


async def in_force(unit: Unit, tenant_id: int, at: datetime) -> tuple[Published, rules.CheckedProgram]:
    """The version valid at ``at`` (read now: one indexed row) and its program (from the cache)."""
    row = await unit.fetchrow(_VERSION_AT_SQL, tenant_id, at)
    if row is None:
        raise NotFound(f"no program version was valid at {at.isoformat()}")
    version = Published(unit.instant(row[0]) or at, row[1], row[2], row[3], tenant_id)
    return version, await program_of(unit, version)
