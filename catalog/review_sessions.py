"""Reviewer log-ins (``ReviewSession``): the browser holds a random token, the
database its SHA-256 and the session's CSRF token.

Keyword-only functions with an explicit ``session``, like ``catalog.queries``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from catalog.api_keys import hash_key
from catalog.models import ApiKey, ReviewSession, as_utc, utcnow

#: How long a reviewer stays logged in.
SESSION_LIFETIME = dt.timedelta(hours=12)


@dataclass(frozen=True)
class OpenedSession:
    token: str
    csrf_token: str


def open_session(*, session: Session, reviewer: ApiKey) -> OpenedSession:
    """Log ``reviewer`` in: the token for the cookie and the session's CSRF token."""
    now = utcnow()
    session.execute(delete(ReviewSession).where(ReviewSession.expires_at < now))
    token, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(
        ReviewSession(
            token_hash=hash_key(token),
            api_key_id=reviewer.id,
            csrf_token=csrf_token,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    session.flush()
    return OpenedSession(token, csrf_token)


def find_session(*, session: Session, token: str) -> tuple[ReviewSession, ApiKey] | None:
    """The live session behind a cookie's token and its reviewer (not revoked), or ``None``."""
    row = session.execute(
        select(ReviewSession, ApiKey)
        .join(ApiKey, ReviewSession.api_key_id == ApiKey.id)
        .where(ReviewSession.token_hash == hash_key(token))
    ).first()
    if row is None:
        return None
    found, key = row
    if key.revoked_at is not None or as_utc(found.expires_at) <= utcnow():
        return None
    return found, key


def close_session(*, session: Session, token: str) -> None:
    session.execute(delete(ReviewSession).where(ReviewSession.token_hash == hash_key(token)))
