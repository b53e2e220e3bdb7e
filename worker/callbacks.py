"""Callback URLs a caller may give: checked where they are accepted and again before
each delivery, so the service cannot be made to reach inside its own network (SSRF).

Only ``http``/``https``, no control characters or spaces, a port other than 0, and
every address the host name resolves to must be a public unicast one, unless
``FASHION_WEBHOOK_ALLOW_PRIVATE`` is on (tests; a backend on the same private
network). Multicast, broadcast and unspecified addresses are never called back.
Checked again at delivery because a name can resolve differently later (DNS
rebinding); redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2000


class CallbackUrlError(ValueError):
    """A callback URL that is malformed or points where we do not send."""


def check_callback_url(url: str, *, allow_private: bool) -> str:
    """``url`` if it may be called back; ``CallbackUrlError`` saying why not."""
    if len(url) > MAX_URL_LENGTH:
        raise CallbackUrlError(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    if any(character.isspace() or not character.isprintable() for character in url):
        # A CR/LF passed the check once and broke the delivery (httpx.InvalidURL).
        raise CallbackUrlError("callback_url must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CallbackUrlError("callback_url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise CallbackUrlError("callback_url must not carry credentials")
    try:
        port = parts.port
    except ValueError as exc:
        raise CallbackUrlError("callback_url has a port outside 1-65535") from exc
    if port == 0:
        raise CallbackUrlError("callback_url has port 0, which no server listens on")
    try:
        port = port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise CallbackUrlError(f"callback_url host {parts.hostname!r} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if address.is_multicast or address.is_unspecified or str(address) == "255.255.255.255":
            raise CallbackUrlError(
                f"callback_url host {parts.hostname!r} is not a unicast address ({address})"
            )
    if not allow_private:
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            if not address.is_global:
                raise CallbackUrlError(
                    f"callback_url host {parts.hostname!r} is a loopback, private or "
                    f"reserved address ({address}); refused"
                )
    return url
