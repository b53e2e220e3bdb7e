"""``Authorization: Bearer <key>``: which API key a request comes with.

A key found is remembered for ``CACHE_SECONDS`` per process (one database read
saved per request); a revoked key therefore stops working within that time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from catalog.api_keys import authenticate
from catalog.codes import KeyScope
from catalog.db import get_sessionmaker
from worker.api.errors import ApiError, ApiErrorCode
from worker.config import Settings

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Caller:
    key_id: int
    name: str
    #: The key's first characters: unique across deployments sharing one Redis.
    prefix: str
    scope: str = KeyScope.BACKEND.value


def backend_only(caller: Caller) -> Caller:
    """``caller``, or a 403 if its key is a reviewer's (they log in to /review)."""
    if caller.scope != KeyScope.BACKEND:
        raise ApiError(
            403,
            ApiErrorCode.FORBIDDEN,
            f"this is a {caller.scope} key: it logs in to the review page, not the API",
        )
    return caller


def unauthorized(message: str) -> ApiError:
    return ApiError(
        401, ApiErrorCode.UNAUTHORIZED, message, {"WWW-Authenticate": 'Bearer realm="fashion"'}
    )


class Keys:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Caller]] = {}

    def remembered(self, authorization: str | None) -> Caller | None:
        """The caller, if this header's key was found in the last ``CACHE_SECONDS``."""
        key = (authorization or "").partition(" ")[2].strip()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        return None

    def caller(self, authorization: str | None) -> Caller:
        """The caller behind an ``Authorization`` header, or a 401 ``ApiError``."""
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise unauthorized("send 'Authorization: Bearer <API key>' (fashion api-key create)")
        key = key.strip()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        with get_sessionmaker(self.settings.resolved_database_url)() as session:
            found = authenticate(session=session, key=key)
            if found is None:
                raise unauthorized("unknown or revoked API key")
            caller = Caller(found.id, found.name, found.key_prefix, found.scope)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, caller)
        return caller
