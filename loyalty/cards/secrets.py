"""Server secrets: the master keys from which each tenant's card-token signing keys are derived.

The file is generated at setup (``make demo``, ``loyalty secrets init``) and never committed. A tenant's
signing key is HMAC-SHA256(master key, "loyalty card key" | tenant id), so verifying a card token needs
no database query at all: a forged or foreign token is refused before anything is looked up.
Rotation adds a master key (new cards are signed with it) and retires the old one, which keeps
verifying until its ``not_after``; a revoked key stops verifying at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from loyalty.cards.tokens import KeyRing, KeyState, SigningKey, generate_secret
from loyalty.errors import InvalidInput

#: Where the secrets live unless LOYALTY_SECRETS_FILE says otherwise (next to the default database).
DEFAULT_PATH = Path("var/secrets.json")


@dataclass(frozen=True, slots=True)
class MasterKey:
    id: int
    secret: bytes
    state: KeyState = KeyState.ACTIVE
    not_after: datetime | None = None


#: Tenants' key rings kept per process (deriving one costs an HMAC per master key).
RING_CACHE_SIZE = 1024


class Secrets:
    """The loaded master keys; builds (and remembers) each tenant's key ring."""

    def __init__(self, keys: list[MasterKey]) -> None:
        if not keys:
            raise InvalidInput("the secrets file holds no card keys")
        self.keys = keys
        # Bounded: a forged customer token may claim any tenant id, and each would otherwise stay.
        self.ring = lru_cache(maxsize=RING_CACHE_SIZE)(self._ring)

    def _ring(self, tenant_id: int) -> KeyRing:
        """Tenant ``tenant_id``'s key ring (derived from the master keys; remembered by ``ring``)."""
        return KeyRing(
            tenant_id,
            [SigningKey(k.id, derive(k.secret, tenant_id), k.state, k.not_after) for k in self.keys],
        )


def derive(master: bytes, tenant_id: int) -> bytes:
    return hmac.new(master, b"loyalty card key|" + str(tenant_id).encode(), hashlib.sha256).digest()


def secrets_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("LOYALTY_SECRETS_FILE") or DEFAULT_PATH)


def init_secrets(path: str | Path | None = None) -> Path:
    """Create the secrets file with one fresh card key, unless it exists (never overwrites a key)."""
    target = secrets_path(path)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "card_keys": [{"id": 1, "secret": base64.b64encode(generate_secret()).decode(), "state": "active"}]
    }
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    return target


def load_secrets(path: str | Path | None = None) -> Secrets:
    target = secrets_path(path)
    try:
        data: Any = json.loads(target.read_text())
        keys = [
            MasterKey(
                int(k["id"]),
                base64.b64decode(k["secret"]),
                KeyState(k.get("state", "active")),
                datetime.fromisoformat(k["not_after"]) if k.get("not_after") else None,
            )
            for k in data["card_keys"]
        ]
    except FileNotFoundError:
        raise InvalidInput(f"{target}: no secrets file; run `loyalty secrets init`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{target}: malformed secrets file ({exc})") from None
    return Secrets(keys)
