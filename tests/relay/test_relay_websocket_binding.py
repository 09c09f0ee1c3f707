"""`$get-ws-binding-token` answers as the relay reads them (relay/websocket_channel.py): a
token and a websocket URL that is `wss:`, or `ws:` on loopback only."""

from __future__ import annotations

from typing import Any

import pytest

from wardsync.relay.websocket_channel import BindingRefused, read_binding


def answer(token: Any = "tok-123", url: Any = "wss://fhir.example.org/ws") -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [
        {"name": "token", "valueString": token},
        {"name": "expiration", "valueDateTime": "2026-01-01T00:01:00Z"},
        {"name": "subscription", "valueString": "https://fhir.example.org/Subscription/s1"},
        {"name": "websocket-url", "valueUrl": url}]}


@pytest.mark.parametrize("url", ["wss://fhir.example.org/ws", "ws://127.0.0.1:8080/ws",
                                 "ws://[::1]:8080/ws", "ws://localhost/ws"])
def test_a_usable_binding(url: str):
    binding = read_binding(answer(url=url))
    assert (binding.token, binding.url) == ("tok-123", url)


@pytest.mark.parametrize(("params", "reason"), [
    (answer(url="ws://fhir.example.org/ws"), "insecure_websocket_url"),
    (answer(url="https://fhir.example.org/ws"), "insecure_websocket_url"),
    (answer(url=None), "no_websocket_url"),
    (answer(token=""), "bad_token"),
    (answer(token="two words"), "bad_token"),
    (answer(token="x" * 5000), "bad_token"),
    ({"resourceType": "Bundle"}, "not_parameters"),
    ([], "not_parameters"),
])
def test_an_unusable_binding_is_refused_with_a_reason(params: Any, reason: str):
    with pytest.raises(BindingRefused, match=reason):
        read_binding(params)
