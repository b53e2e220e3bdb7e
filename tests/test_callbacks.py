"""Which callback URLs the service may call: the SSRF rule and the URL's own form."""

from __future__ import annotations

import pytest

from worker.callbacks import CallbackUrlError, check_callback_url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.com/hook\r\nX-Injected: 1", "control characters"),
        ("http://example.com/ho ok", "spaces"),
        ("http://example.com\x00.evil/hook", "control characters"),
        ("http://127.0.0.1:0/hook", "port 0"),
        ("http://example.com:70000/hook", "port outside"),
        ("http://224.0.0.1/hook", "not a unicast"),
        ("http://[ff02::1]/hook", "not a unicast"),
        ("http://0.0.0.0/hook", "not a unicast"),
        ("http://255.255.255.255/hook", "not a unicast"),
    ],
)
def test_a_malformed_or_non_unicast_callback_url_is_refused_even_on_a_private_network(
    url: str, why: str
) -> None:
    with pytest.raises(CallbackUrlError, match=why):
        check_callback_url(url, allow_private=True)


def test_a_loopback_callback_url_is_accepted_only_on_a_private_network() -> None:
    assert check_callback_url("http://127.0.0.1:8080/hook", allow_private=True)
    with pytest.raises(CallbackUrlError, match="loopback, private or reserved"):
        check_callback_url("http://127.0.0.1:8080/hook", allow_private=False)
