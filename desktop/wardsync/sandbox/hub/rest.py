"""The hub's REST API: the subset of Ably's REST API that the SDK's REST calls use (§9).

Bodies and replies are JSON or msgpack (`Content-Type` / `Accept`). Channel names arrive
`quote_plus`-encoded, so the raw path is split before decoding (`%2F` stays inside a name).
Errors are `{"error": {"code", "statusCode", "message"}}` with that HTTP status; 401 token
errors (40140-40149) make the SDK re-authorize once and retry (RSA4b).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any
from urllib.parse import unquote_plus, urlencode

import msgpack
from aiohttp import web

from wardsync.sandbox.hub.capability import HISTORY, SUBSCRIBE
from wardsync.sandbox.hub.channel import parse_serial
from wardsync.sandbox.hub.state import HubState, check_channel_name
from wardsync.sandbox.hub.tokens import (
    Credentials,
    grant_token_request,
    now_ms,
    verify_key,
    verify_token,
)
from wardsync.sandbox.hub.wire import (
    BAD_REQUEST,
    INVALID_CREDENTIALS,
    INVALID_PARAMETER,
    NOT_FOUND,
    NOT_PERMITTED,
    TOKEN_FORMAT,
    HubError,
    PresenceAction,
    encode_json,
    encode_msgpack,
)

MSGPACK = "application/x-msgpack"
JSON = "application/json"
DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000


def _reply(request: web.Request, body: Any, status: int = 200,
           headers: dict[str, str] | None = None) -> web.Response:
    if MSGPACK in request.headers.get("Accept", ""):
        return web.Response(body=encode_msgpack(body), status=status, content_type=MSGPACK,
                            headers=headers)
    return web.Response(text=encode_json(body), status=status, content_type=JSON,
                        headers=headers)


def _error(request: web.Request, error: HubError) -> web.Response:
    return _reply(request, {"error": error.to_wire()}, status=error.status, headers={
        "X-Ably-Errorcode": str(error.code), "X-Ably-Errormessage": error.message,
    })


async def _body(request: web.Request) -> object:
    raw = await request.read()
    try:
        if request.content_type == MSGPACK:
            return msgpack.unpackb(raw, raw=False)
        return json.loads(raw)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise HubError(BAD_REQUEST, 400, "request body is not valid JSON or msgpack") from exc


def _int_param(request: web.Request, name: str, default: int | None,
               low: int = 0, high: int | None = None) -> int | None:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise HubError(INVALID_PARAMETER, 400, f"{name} must be an integer") from exc
    if number < low or (high is not None and number > high):
        raise HubError(INVALID_PARAMETER, 400, f"{name} out of range")
    return number


class RestApi:
    """aiohttp handlers for /time, /keys/{keyName}/requestToken and /channels/..."""

    def __init__(self, state: HubState) -> None:
        self.state = state

    def authenticate(self, request: web.Request) -> tuple[Credentials, str | None]:
        """Credentials and the caller's clientId from `Authorization` (Bearer or Basic)."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            # The SDK sends base64(token) (RSA3b); a raw hub token (with its dot) works too.
            if "." not in value:
                try:
                    value = base64.b64decode(value, validate=True).decode("ascii")
                except (binascii.Error, UnicodeDecodeError) as exc:
                    raise HubError(TOKEN_FORMAT, 401, "invalid token format") from exc
            credentials = verify_token(value, self.state.keys)
            return credentials, credentials.client_id
        if scheme.lower() == "basic" and value:
            try:
                key = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise HubError(INVALID_CREDENTIALS, 401, "invalid Basic credentials") from exc
            credentials = verify_key(key, self.state.keys)
            client_id = request.headers.get("X-Ably-ClientId")
            if client_id:
                try:
                    client_id = base64.b64decode(client_id, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError) as exc:
                    raise HubError(INVALID_PARAMETER, 400, "invalid X-Ably-ClientId") from exc
            return credentials, client_id or None
        raise HubError(INVALID_CREDENTIALS, 401, "no credentials: send Authorization")

    async def time(self, request: web.Request) -> web.Response:
        return _reply(request, [now_ms()])

    async def request_token(self, request: web.Request) -> web.Response:
        try:
            body = await _body(request)
            details = grant_token_request(
                body, self.state.keys, self.state.nonces,
                key_name=unquote_plus(request.match_info["key_name"]),
            )
        except HubError as exc:
            return _error(request, exc)
        return _reply(request, details)

    async def channel(self, request: web.Request) -> web.Response:
        try:
            return await self._channel(request)
        except HubError as exc:
            return _error(request, exc)

    async def _channel(self, request: web.Request) -> web.Response:
        raw = request.rel_url.raw_path.removeprefix("/channels/")
        encoded_name, _, rest = raw.partition("/")
        name = check_channel_name(unquote_plus(encoded_name))
        credentials, client_id = self.authenticate(request)
        if rest == "messages" and request.method == "POST":
            return await self._publish(request, name, credentials, client_id)
        if rest == "messages" and request.method == "GET":
            return self._history(request, name, credentials)
        if rest == "presence" and request.method == "GET":
            return self._presence(request, name, credentials)
        raise HubError(NOT_FOUND, 404, "no such channel resource")

    async def _publish(self, request: web.Request, name: str, credentials: Credentials,
                       client_id: str | None) -> web.Response:
        body = await _body(request)
        messages = body if isinstance(body, list) else [body]
        proto_id = f"rest-{secrets.token_urlsafe(9)}"
        serials = self.state.publish(
            name, messages, credentials=credentials, client_id=client_id,
            connection_id=None, proto_id=proto_id,
        )
        return _reply(request, {"channel": name, "messageId": proto_id, "serials": serials},
                      status=201)

    def _history(self, request: web.Request, name: str, credentials: Credentials) -> web.Response:
        if not credentials.capability.allows(name, HISTORY):
            raise HubError(NOT_PERMITTED, 401, "history not permitted by capability")
        limit = _int_param(request, "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT)
        start = _int_param(request, "start", None)
        end = _int_param(request, "end", None)
        direction = request.query.get("direction", "backwards")
        if direction not in ("backwards", "forwards"):
            raise HubError(INVALID_PARAMETER, 400, "direction must be backwards or forwards")
        channel = self.state.channels.get(name)
        cursor = request.query.get("cursor")
        if channel is None:
            return _reply(request, [])
        seq: int | None = None
        if cursor is not None:
            parsed = parse_serial(cursor)
            if parsed is None or parsed[0] != channel.incarnation:
                return _reply(request, [])  # the cursor's channel is gone (restart, eviction)
            seq = parsed[1]
        page, next_seq = channel.query(
            limit=limit or DEFAULT_PAGE_LIMIT, backwards=direction == "backwards",
            start=start, end=end, cursor=seq,
        )
        headers = {}
        if next_seq is not None:
            params = {k: v for k, v in request.query.items() if k != "cursor"}
            params["cursor"] = channel.serial_of(next_seq)
            # RSC19: the SDK resolves the link relative to the request path.
            headers["Link"] = f'<./messages?{urlencode(params)}>; rel="next"'
        return _reply(request, [m.wire for m in page], headers=headers)

    def _presence(self, request: web.Request, name: str, credentials: Credentials) -> web.Response:
        if not credentials.capability.allows(name, SUBSCRIBE):
            raise HubError(NOT_PERMITTED, 401, "presence not permitted by capability")
        limit = _int_param(request, "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT)
        client_id = request.query.get("clientId")
        connection_id = request.query.get("connectionId")
        channel = self.state.channels.get(name)
        members = [] if channel is None else [
            m.to_wire(PresenceAction.PRESENT) for m in channel.members.values()
            if (client_id is None or m.client_id == client_id)
            and (connection_id is None or m.connection_id == connection_id)
        ]
        return _reply(request, members[:limit])
