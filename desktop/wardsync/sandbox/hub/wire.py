"""Ably realtime protocol v5 vocabulary, errors and the JSON / msgpack frame codec.

Action, flag and presence numbers follow the Ably protocol (ably-python 3.1.4
`transport/websockettransport.py`, `types/flags.py`); error codes follow ably-common
`protocol/errors.json`.
"""

from __future__ import annotations

import base64
import json
from enum import IntEnum, IntFlag
from typing import Any

import msgpack


class Action(IntEnum):
    """ProtocolMessage actions (TR2)."""

    HEARTBEAT = 0
    ACK = 1
    NACK = 2
    CONNECT = 3
    CONNECTED = 4
    DISCONNECT = 5
    DISCONNECTED = 6
    CLOSE = 7
    CLOSED = 8
    ERROR = 9
    ATTACH = 10
    ATTACHED = 11
    DETACH = 12
    DETACHED = 13
    PRESENCE = 14
    MESSAGE = 15
    SYNC = 16
    AUTH = 17
    ACTIVATE = 18
    OBJECT = 19
    OBJECT_SYNC = 20
    ANNOTATION = 21


class Flag(IntFlag):
    """ProtocolMessage flags and channel modes (TR3)."""

    HAS_PRESENCE = 1 << 0
    HAS_BACKLOG = 1 << 1
    RESUMED = 1 << 2
    TRANSIENT = 1 << 4
    ATTACH_RESUME = 1 << 5
    PRESENCE = 1 << 16
    PUBLISH = 1 << 17
    SUBSCRIBE = 1 << 18
    PRESENCE_SUBSCRIBE = 1 << 19
    ANNOTATION_PUBLISH = 1 << 21
    ANNOTATION_SUBSCRIBE = 1 << 22


MODE_MASK = (
    Flag.PRESENCE | Flag.PUBLISH | Flag.SUBSCRIBE | Flag.PRESENCE_SUBSCRIBE
    | Flag.ANNOTATION_PUBLISH | Flag.ANNOTATION_SUBSCRIBE
)


class PresenceAction(IntEnum):
    """PresenceMessage actions (TP2)."""

    ABSENT = 0
    PRESENT = 1
    ENTER = 2
    LEAVE = 3
    UPDATE = 4


# Error codes used by the hub (ably-common protocol/errors.json).
BAD_REQUEST = 40000
INVALID_PARAMETER = 40003
MESSAGE_TOO_LARGE = 40009
INVALID_CHANNEL_NAME = 40010
INVALID_CLIENT_ID = 40012
INVALID_MESSAGE_DATA = 40013
INVALID_CREDENTIALS = 40101
INCOMPATIBLE_CREDENTIALS = 40102
TIMESTAMP_NOT_CURRENT = 40104
NONCE_REPLAYED = 40105
CONNECTION_LIMIT = 40111
CHANNEL_LIMIT = 40114
TOKEN_EXPIRED = 40142
TOKEN_UNRECOGNISED = 40143
TOKEN_FORMAT = 40145
NOT_PERMITTED = 40160
NOT_FOUND = 40400
DISCONNECTED = 80003
CONNECTION_EXPIRED = 80008
PROTOCOL_ERROR = 80013
CHANNELS_PER_CONNECTION = 90010
PRESENCE_NO_CLIENT_ID = 91000
PRESENCE_NOT_ATTACHED = 91001
PRESENCE_MEMBER_LIMIT = 91003


class HubError(Exception):
    """An Ably ErrorInfo (TI1): always carries both `code` and `statusCode` on the wire.

    The SDK compares `statusCode` and `code` unguarded (connectionmanager.py:439,
    util/helper.py:30), so neither may ever be missing.
    """

    def __init__(self, code: int, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "statusCode": self.status, "message": self.message}


def is_text(value: object) -> bool:
    """A str that is valid Unicode (JSON input may carry lone surrogates; msgpack and
    UTF-8 websocket frames cannot)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class MalformedFrame(ValueError):
    """A frame that cannot be understood at all; it is counted and dropped."""


def decode_frame(raw: str | bytes, binary: bool) -> dict[str, Any]:
    """Decode one inbound websocket frame into a ProtocolMessage dict.

    Binary frames on a msgpack connection are msgpack; text frames are always JSON (the SDK
    itself json-decodes either kind, websockettransport.py:222-225).
    """
    try:
        if binary and isinstance(raw, bytes):
            obj = msgpack.unpackb(raw, raw=False)
        else:
            obj = json.loads(raw)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise MalformedFrame(f"undecodable frame: {type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise MalformedFrame("frame is not a map")
    action = obj.get("action")
    if not isinstance(action, int) or isinstance(action, bool):
        raise MalformedFrame("frame has no integer action")
    return obj


def _json_default(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__}")


def _base64_payloads(items: list[Any]) -> list[Any]:
    """Make msgpack binary payloads JSON-safe: base64 the data and append `/base64`.

    A JSON peer cannot receive raw bytes, and the SDK decodes encodings right to left
    (types/mixins.py), so `base64` must be the last step.
    """
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("data"), (bytes, bytearray)):
            item = dict(item)
            item["data"] = base64.b64encode(item["data"]).decode("ascii")
            encoding = item.get("encoding")
            item["encoding"] = f"{encoding}/base64" if encoding else "base64"
        out.append(item)
    return out


def to_json_safe(message: dict[str, Any]) -> dict[str, Any]:
    """Copy of a ProtocolMessage (or a stored message) whose binary payloads are base64."""
    out = dict(message)
    for key in ("messages", "presence"):
        items = out.get(key)
        if isinstance(items, list):
            out[key] = _base64_payloads(items)
    if isinstance(out.get("data"), (bytes, bytearray)):
        out = _base64_payloads([out])[0]
    return out


def encode_json(obj: Any) -> str:
    """JSON text for a peer that speaks JSON; stray bytes become base64 strings."""
    if isinstance(obj, list):
        obj = [to_json_safe(item) if isinstance(item, dict) else item for item in obj]
    elif isinstance(obj, dict):
        obj = to_json_safe(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def encode_msgpack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class OutFrame:
    """One outbound ProtocolMessage, encoded at most once per format.

    A broadcast shares one OutFrame between every recipient. `bufferable` frames (MESSAGE
    and PRESENCE) survive in a connection's resume buffer while it has no socket; the others
    (ACK, ATTACHED, SYNC, heartbeats...) are regenerated by the client's own retries
    (docs/realtime-protocol.md §7).
    """

    __slots__ = ("_json", "_msgpack", "bufferable", "message", "size")

    def __init__(self, message: dict[str, Any], *, size: int = 64) -> None:
        self.message = message
        self.size = size
        self.bufferable = message.get("action") in (Action.MESSAGE, Action.PRESENCE)
        self._json: str | None = None
        self._msgpack: bytes | None = None

    def encoded(self, binary: bool) -> str | bytes:
        if binary:
            if self._msgpack is None:
                self._msgpack = encode_msgpack(self.message)
            return self._msgpack
        if self._json is None:
            self._json = encode_json(self.message)
        return self._json


def error_frame(error: HubError, channel: str | None = None) -> OutFrame:
    """ERROR(9); with `channel` it fails only that channel (RTN15i), else the connection."""
    message: dict[str, Any] = {"action": Action.ERROR, "error": error.to_wire()}
    if channel is not None:
        message["channel"] = channel
    return OutFrame(message)
