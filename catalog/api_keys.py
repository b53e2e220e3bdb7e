"""The HTTP API's callers: keys made, found, listed and revoked.

A key is shown once, when it is made; only its SHA-256 is stored. Keys are 256
random bits, so a fast hash is as safe as a slow password hash here and costs a
microsecond per request. Each key also gets a webhook secret (kept, since the
worker signs with it) that its owner uses to verify our callbacks.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.codes import KeyScope
from catalog.models import ApiKey, utcnow

KEY_PREFIX = "fsk_"
SECRET_PREFIX = "whsec_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """What its owner is told once: the key and the webhook secret."""

    name: str
    key: str
    webhook_secret: str


def create_api_key(*, session: Session, name: str, scope: KeyScope = KeyScope.BACKEND) -> NewKey:
    """A new key named ``name`` for ``scope`` (a backend calling the API, or a person
    reviewing on the review page); ``ValueError`` if the name is taken or empty."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a key's name must be 1 to 100 characters")
    if session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ValueError(f"an API key named {name!r} exists already")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            name=name,
            key_prefix=key[:12],
            key_hash=hash_key(key),
            webhook_secret=secret,
            scope=KeyScope(scope).value,
        )
    )
    session.flush()
    return NewKey(name, key, secret)


def authenticate(*, session: Session, key: str, scope: KeyScope | None = None) -> ApiKey | None:
    """The live (not revoked) key ``key`` is, of ``scope`` when given, or ``None``."""
    found = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if found is None or found.revoked_at is not None:
        return None
    return found if scope is None or found.scope == scope else None


def list_api_keys(*, session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)))


def revoke_api_key(*, session: Session, name: str) -> bool:
    """Revoke key ``name``; ``False`` if there is no live key of that name."""
    key = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    return True


def webhook_secret(*, session: Session, api_key_id: int | None) -> str | None:
    if api_key_id is None:
        return None
    return session.scalar(select(ApiKey.webhook_secret).where(ApiKey.id == api_key_id))
