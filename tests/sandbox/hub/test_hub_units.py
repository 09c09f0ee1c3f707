"""Pure parts of the hub: capabilities, tokens, TokenRequest MACs, history, outbox, codec."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest
from ably.types.tokenrequest import TokenRequest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.sandbox.hub import Capability, HubError, mint_token, verify_token
from wardsync.sandbox.hub.capability import resource_matches
from wardsync.sandbox.hub.channel import Channel
from wardsync.sandbox.hub.connection import Connection
from wardsync.sandbox.hub.tokens import (
    Credentials,
    NonceCache,
    grant_token_request,
    now_ms,
    resolve_client_id,
    verify_key,
)
from wardsync.sandbox.hub.wire import Action, MalformedFrame, OutFrame, decode_frame

KEYS = {"app.key": "secret-one", "app.other": "secret-two"}

segment = st.text(alphabet="abcxyz019-_", min_size=1, max_size=5)
channel_names = st.lists(segment, min_size=1, max_size=4).map(":".join)


@pytest.mark.parametrize(("resource", "channel", "expected"), [
    ("*", "ward:3", True),
    ("*", "anything", True),
    ("ward:*", "ward:3", True),
    ("ward:*", "ward:3:beds", True),
    ("ward:*", "ward", False),
    ("ward:*", "wardx:3", False),
    ("record:*:42", "record:Patient:42", True),
    ("record:*:42", "record:Patient:43", False),
    ("room", "room", True),
    ("room", "room:1", False),
])
def test_capability_wildcards_replace_whole_segments(resource, channel, expected):
    assert resource_matches(resource, channel) is expected


@given(channel_names)
def test_exact_resource_and_star_always_match(name):
    assert resource_matches(name, name)
    assert resource_matches("*", name)
    assert resource_matches(f"{name}:*", f"{name}:tail")
    assert not resource_matches(f"{name}:*", name)


def test_capability_operations_union_and_star_operation():
    cap = Capability.parse({"ward:*": ["subscribe"], "ward:7": ["publish"], "admin": ["*"]})
    assert cap.operations("ward:7") == {"subscribe", "publish"}
    assert cap.operations("ward:8") == {"subscribe"}
    assert cap.allows("admin", "history") and cap.allows("admin", "presence")
    assert cap.operations("record:Patient:1") == frozenset()


@pytest.mark.parametrize("bad", [
    "not json", {}, {"ward:*": []}, {"ward:*": ["fly"]}, {"": ["publish"]}, {"x": [1]}, [1],
])
def test_capability_rejects_malformed(bad):
    with pytest.raises(ValueError):
        Capability.parse(bad)


def test_capability_json_is_canonical_like_the_sdk():
    cap = Capability.parse({"b": ["subscribe", "publish"], "a": ["history"]})
    assert cap.to_json() == '{"a": ["history"], "b": ["publish", "subscribe"]}'
    assert Capability.parse(cap.to_json()) == cap


def test_minted_token_verifies_and_carries_claims():
    details = mint_token(key_name="app.key", key_secret=KEYS["app.key"], client_id="alice",
                         capability={"ward:*": ["subscribe"]}, ttl_s=60)
    assert details["expires"] - details["issued"] == 60_000
    assert json.loads(details["capability"]) == {"ward:*": ["subscribe"]}
    creds = verify_token(details["token"], KEYS)
    assert (creds.key_name, creds.client_id, creds.is_token) == ("app.key", "alice", True)
    assert creds.capability.allows("ward:2", "subscribe")
    assert not creds.capability.allows("ward:2", "publish")


def test_tampered_foreign_and_expired_tokens_are_token_errors():
    details = mint_token(key_name="app.key", key_secret=KEYS["app.key"], client_id="alice",
                         capability={"*": ["*"]}, ttl_s=60)
    payload, _, signature = details["token"].partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["c"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    cases = {
        f"{forged}.{signature}": 40143,
        "no-dot-here": 40145,
        f"{payload}.": 40145,
        "%%%.abc": 40145,
    }
    for token, code in cases.items():
        with pytest.raises(HubError) as err:
            verify_token(token, KEYS)
        assert (err.value.code, err.value.status) == (code, 401), token
    with pytest.raises(HubError) as err:
        verify_token(details["token"], {"app.key": "another secret"})
    assert err.value.code == 40143
    with pytest.raises(HubError) as err:
        verify_token(details["token"], KEYS, at_ms=details["expires"])
    assert err.value.code == 40142
    # Every one of these lets the SDK renew its token (RSA4b: 40140 <= code < 40150).
    assert all(40140 <= code < 40150 for code in cases.values())


def test_key_credentials():
    creds = verify_key("app.key:secret-one", KEYS)
    assert not creds.is_token and creds.wildcard and creds.expires_ms is None
    for bad in ("app.key:wrong", "app.key", "nope:secret-one", ""):
        with pytest.raises(HubError) as err:
            verify_key(bad, KEYS)
        assert err.value.code == 40101


@pytest.mark.parametrize(("token_cid", "requested", "expected"), [
    ("*", "alice", "alice"),
    ("*", None, "*"),
    ("bob", None, "bob"),
    ("bob", "bob", "bob"),
    (None, None, None),
])
def test_client_id_resolution(token_cid, requested, expected):
    creds = Credentials("app.key", token_cid, Capability.parse(None), 0, 1, is_token=True)
    assert resolve_client_id(creds, requested) == expected


@pytest.mark.parametrize(("token_cid", "requested"), [("bob", "alice"), (None, "alice")])
def test_client_id_conflicts_are_incompatible_credentials(token_cid, requested):
    creds = Credentials("app.key", token_cid, Capability.parse(None), 0, 1, is_token=True)
    with pytest.raises(HubError) as err:
        resolve_client_id(creds, requested)
    assert err.value.code == 40102


def _signed_request(**fields) -> dict:
    """A TokenRequest signed by the SDK's own code (ably/types/tokenrequest.py)."""
    request = TokenRequest(**fields)
    request.sign_request(KEYS["app.key"].encode())
    return request.to_dict()


def test_token_request_signed_by_the_sdk_is_granted():
    body = _signed_request(key_name="app.key", client_id="lab", nonce="n1" * 8,
                           timestamp=now_ms(), ttl=120_000,
                           capability='{"ward:*": ["publish"]}')
    details = grant_token_request(body, KEYS, NonceCache(), key_name="app.key")
    creds = verify_token(details["token"], KEYS)
    assert creds.client_id == "lab"
    assert creds.capability.allows("ward:1", "publish")
    assert not creds.capability.allows("ward:1", "subscribe")
    assert details["expires"] - details["issued"] == 120_000


def test_token_request_with_nulls_defaults_to_key_capability_and_an_hour():
    body = _signed_request(key_name="app.key", nonce="abcdefabcdefabcd", timestamp=now_ms())
    details = grant_token_request(body, KEYS, NonceCache(), key_name="app.key")
    assert details["clientId"] is None
    assert details["expires"] - details["issued"] == 3_600_000
    assert verify_token(details["token"], KEYS).capability.allows("any", "history")


def test_token_request_checks():
    nonces = NonceCache()
    good = _signed_request(key_name="app.key", nonce="0123456789abcdef", timestamp=now_ms())
    grant_token_request(dict(good), KEYS, nonces, key_name="app.key")
    replay = grant_token_request
    with pytest.raises(HubError) as err:
        replay(dict(good), KEYS, nonces, key_name="app.key")
    assert err.value.code == 40105
    tampered = dict(good, clientId="mallory", nonce="fedcba9876543210")
    with pytest.raises(HubError) as err:
        grant_token_request(tampered, KEYS, nonces, key_name="app.key")
    assert err.value.code == 40101
    stale = _signed_request(key_name="app.key", nonce="x" * 16, timestamp=now_ms() - 3_600_000)
    with pytest.raises(HubError) as err:
        grant_token_request(stale, KEYS, nonces, key_name="app.key")
    assert err.value.code == 40104
    with pytest.raises(HubError) as err:
        grant_token_request(good, KEYS, nonces, key_name="app.other")
    assert err.value.status == 400
    with pytest.raises(HubError):
        grant_token_request(["not", "a", "map"], KEYS, nonces, key_name="app.key")


def test_nonce_cache_is_bounded():
    cache = NonceCache(capacity=3)
    for i in range(10):
        assert cache.check_and_add(f"n{i}", expires_ms=10**15, at_ms=0)
    assert len(cache) <= 3


def _channel(**caps) -> Channel:
    return Channel("room", history_limit=caps.get("limit", 5),
                   history_max_bytes=caps.get("bytes", 10_000))


def test_history_is_capped_by_count_and_bytes():
    channel = _channel(limit=3)
    for i in range(5):
        channel.append({"id": f"m{i}", "timestamp": i}, size=10)
    assert [m.seq for m in channel.history] == [3, 4, 5]
    channel = _channel(limit=100, bytes=25)
    for i in range(5):
        channel.append({"id": f"m{i}", "timestamp": i}, size=10)
    assert [m.seq for m in channel.history] == [4, 5]
    assert channel.history_bytes == 20


def test_history_after_a_serial_reports_gaps():
    channel = _channel(limit=3)
    first = channel.last_serial
    serials = [channel.append({"id": f"m{i}", "timestamp": i}, 1).serial for i in range(5)]
    missed, complete = channel.history_after(serials[2])
    assert [m.serial for m in missed] == serials[3:] and complete
    missed, complete = channel.history_after(serials[-1])
    assert missed == [] and complete
    missed, complete = channel.history_after(first)  # messages 1-2 were trimmed
    assert [m.serial for m in missed] == serials[2:] and not complete
    other = _channel()
    assert other.history_after(serials[1]) == ([], False)  # another incarnation
    assert channel.history_after("garbage") == ([], False)


def test_history_query_pages_both_ways():
    channel = _channel(limit=10)
    for i in range(5):
        channel.append({"id": f"m{i}", "timestamp": 100 + i}, 1)
    page, cursor = channel.query(limit=2, backwards=True, start=None, end=None, cursor=None)
    assert [m.seq for m in page] == [5, 4] and cursor == 4
    page, cursor = channel.query(limit=2, backwards=True, start=None, end=None, cursor=cursor)
    assert [m.seq for m in page] == [3, 2]
    page, cursor = channel.query(limit=10, backwards=False, start=102, end=103, cursor=None)
    assert [m.seq for m in page] == [3, 4] and cursor is None


def _connection(limit: int = 3) -> Connection:
    creds = Credentials("app.key", None, Capability.parse(None), None, None, is_token=False)
    return Connection(connection_id="c1", key="c1!k", credentials=creds, client_id=None,
                      buffer_limits=(limit, 1000), queue_limits=(100, 100_000),
                      ack_cache_size=2)


def test_outbox_overflow_marks_connection_unresumable():
    conn = _connection(limit=3)
    message = OutFrame({"action": Action.MESSAGE, "channel": "room"})
    ack = OutFrame({"action": Action.ACK, "msgSerial": 0})
    assert conn.enqueue(ack)  # no socket: non-bufferable frames are not kept
    assert len(conn.outbox) == 0
    for _ in range(3):
        assert conn.enqueue(message)
    assert not conn.enqueue(message)
    assert conn.overflowed and not conn.resumable and len(conn.outbox) == 0


def test_ack_memory_is_bounded():
    conn = _connection()
    for serial in range(5):
        conn.remember_ack(serial, OutFrame({"action": Action.ACK, "msgSerial": serial}))
    assert conn.remembered_ack(0) is None and conn.remembered_ack(4) is not None


def test_binary_payloads_become_base64_for_json_peers_only():
    frame = OutFrame({"action": Action.MESSAGE, "messages": [
        {"data": b"\x00\xff", "encoding": None},
        {"data": b"\x01", "encoding": "cipher+aes-128-cbc"},
        {"data": "text"},
    ]})
    as_json = json.loads(frame.encoded(binary=False))
    assert as_json["messages"][0] == {"data": "AP8=", "encoding": "base64"}
    assert as_json["messages"][1]["encoding"] == "cipher+aes-128-cbc/base64"
    assert as_json["messages"][2] == {"data": "text"}
    as_msgpack = msgpack.unpackb(frame.encoded(binary=True), raw=False)
    assert as_msgpack["messages"][0]["data"] == b"\x00\xff"


@pytest.mark.parametrize(("raw", "binary"), [
    (b"\xc1", True), ("{not json", False), ("[1, 2]", False), ('{"action": "x"}', False),
    (msgpack.packb([1]), True), ('{"action": true}', False), (b"\xff\xfe", False),
])
def test_undecodable_frames_are_malformed(raw, binary):
    with pytest.raises(MalformedFrame):
        decode_frame(raw, binary)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_other_errors(raw):
    try:
        decode_frame(raw, True)
    except MalformedFrame:
        pass
