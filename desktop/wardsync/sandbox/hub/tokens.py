"""Keys, self-contained tokens and the TokenRequest check.

A hub token is `<payload>.<signature>`: base64url JSON claims (key name, clientId, capability,
issued, expires, a random id) and base64url HMAC-SHA256 of the payload text under the key's
secret. Anything holding the secret (the sandbox FHIR server, say) can mint tokens with
`mint_token` without talking to the hub, and tokens stay valid across hub restarts.

TokenRequests (Ably REST `POST /keys/{keyName}/requestToken`, spec TE/RSA9) carry a MAC:
base64(HMAC-SHA256(secret, "keyName\\nttl\\ncapability\\nclientId\\ntimestamp\\nnonce\\n")), with
empty strings for absent fields, as `ably/types/tokenrequest.py` signs it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wardsync.sandbox.hub.capability import FULL, Capability
from wardsync.sandbox.hub.config import (
    DEFAULT_TOKEN_TTL_S,
    MAX_TOKEN_TTL_S,
    NONCE_CACHE_SIZE,
    TOKEN_REQUEST_MAX_SKEW_S,
)
from wardsync.sandbox.hub.wire import (
    INCOMPATIBLE_CREDENTIALS,
    INVALID_CLIENT_ID,
    INVALID_CREDENTIALS,
    INVALID_PARAMETER,
    NONCE_REPLAYED,
    TIMESTAMP_NOT_CURRENT,
    TOKEN_EXPIRED,
    TOKEN_FORMAT,
    TOKEN_UNRECOGNISED,
    HubError,
    is_text,
)

WILDCARD_CLIENT_ID = "*"


def now_ms() -> int:
    return int(time.time() * 1000)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64url(hmac.new(secret.encode(), payload.encode("ascii"), hashlib.sha256).digest())


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an authenticated caller may do.

    `client_id` is the token's clientId (None: anonymous, `*`: may assume any). Key (Basic)
    holders are trusted like a wildcard token and have no expiry.
    """

    key_name: str
    client_id: str | None
    capability: Capability
    issued_ms: int | None
    expires_ms: int | None
    is_token: bool

    @property
    def wildcard(self) -> bool:
        return not self.is_token or self.client_id == WILDCARD_CLIENT_ID


def mint_token(
    *,
    key_name: str,
    key_secret: str,
    client_id: str | None,
    capability: Mapping[str, Sequence[str]] | str,
    ttl_s: float,
    issued_ms: int | None = None,
) -> dict[str, Any]:
    """Mint a signed token; returns TokenDetails JSON (TD1): token, expires, issued, capability
    (canonical JSON text) and clientId. Raises ValueError for a bad capability or ttl."""
    cap = Capability.parse(capability)
    if not 0 < ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_TOKEN_TTL_S:.0f}]")
    if client_id is not None and (not is_text(client_id) or not client_id):
        raise ValueError("client_id must be a non-empty string or None")
    issued = now_ms() if issued_ms is None else issued_ms
    expires = issued + int(ttl_s * 1000)
    claims = {
        "k": key_name, "c": client_id, "x": cap.to_json(), "i": issued, "e": expires,
        "j": secrets.token_hex(6),
    }
    payload = _b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return {
        "token": f"{payload}.{_sign(key_secret, payload)}",
        "expires": expires,
        "issued": issued,
        "capability": cap.to_json(),
        "clientId": client_id,
    }


def verify_token(token: str, keys: Mapping[str, str], *, at_ms: int | None = None) -> Credentials:
    """Check signature and expiry; raises HubError 40145 (format), 40143 (unrecognised: bad
    signature or unknown key) or 40142 (expired). All are token errors (40140-40149), so the
    SDK fetches a new token and retries (RSA4b)."""
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature:
        raise HubError(TOKEN_FORMAT, 401, "invalid token format")
    try:
        claims = json.loads(_unb64url(payload))
        key_name, client_id = claims["k"], claims["c"]
        issued, expires = int(claims["i"]), int(claims["e"])
        capability = Capability.parse(claims["x"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise HubError(TOKEN_FORMAT, 401, "invalid token format") from exc
    secret = keys.get(key_name) if isinstance(key_name, str) else None
    if secret is None or not hmac.compare_digest(_sign(secret, payload), signature):
        raise HubError(TOKEN_UNRECOGNISED, 401, "token unrecognised (bad signature or key)")
    if expires <= (now_ms() if at_ms is None else at_ms):
        raise HubError(TOKEN_EXPIRED, 401, "token expired")
    if client_id is not None and not is_text(client_id):
        raise HubError(TOKEN_FORMAT, 401, "invalid token format")
    return Credentials(key_name, client_id, capability, issued, expires, is_token=True)


def verify_key(key: str, keys: Mapping[str, str]) -> Credentials:
    """Check a `keyName:keySecret` string (Basic auth); raises HubError 40101."""
    key_name, colon, secret = key.partition(":")
    expected = keys.get(key_name)
    if not colon or expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
        raise HubError(INVALID_CREDENTIALS, 401, "invalid key")
    return Credentials(key_name, None, FULL, None, None, is_token=False)


def resolve_client_id(credentials: Credentials, requested: str | None) -> str | None:
    """The connection's clientId given the credentials and the `clientId` query parameter.

    Raises HubError 40102 when the token names a different identity (RSA15c).
    """
    if requested == "":
        requested = None
    if requested is not None and not is_text(requested):
        raise HubError(INVALID_CLIENT_ID, 400, "clientId must be valid text")
    if not credentials.is_token:
        return requested
    if credentials.client_id == WILDCARD_CLIENT_ID:
        return requested or WILDCARD_CLIENT_ID
    if requested is not None and requested != credentials.client_id:
        raise HubError(
            INCOMPATIBLE_CREDENTIALS, 401,
            "clientId does not match the token's clientId",
        )
    return credentials.client_id


def may_act_as(connection_client_id: str | None, credentials: Credentials, client_id: str) -> bool:
    """May this connection publish or enter presence as `client_id` (RTL6g, RTP15f)?"""
    if client_id == WILDCARD_CLIENT_ID:
        return False
    if connection_client_id not in (None, WILDCARD_CLIENT_ID):
        return client_id == connection_client_id
    return credentials.wildcard


class NonceCache:
    """Nonces seen within the TokenRequest timestamp window, bounded to NONCE_CACHE_SIZE."""

    def __init__(self, capacity: int = NONCE_CACHE_SIZE) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def check_and_add(self, nonce: str, expires_ms: int, at_ms: int) -> bool:
        """False if `nonce` was already used; otherwise remember it until `expires_ms`."""
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry > at_ms and len(self._seen) < self._capacity:
                break
            del self._seen[oldest]
        if nonce in self._seen:
            return False
        self._seen[nonce] = expires_ms
        return True

    def __len__(self) -> int:
        return len(self._seen)


def _mac_text(body: Mapping[str, Any]) -> str:
    def field(name: str) -> str:
        value = body.get(name)
        return str(value) if value else ""

    timestamp = body.get("timestamp")
    return "\n".join([
        field("keyName"), field("ttl"), field("capability"), field("clientId"),
        f"{timestamp or 0}", field("nonce"), "",
    ])


def grant_token_request(
    body: object,
    keys: Mapping[str, str],
    nonces: NonceCache,
    *,
    key_name: str,
    at_ms: int | None = None,
) -> dict[str, Any]:
    """Check a signed TokenRequest and mint the token it asks for (TokenDetails JSON)."""
    at = now_ms() if at_ms is None else at_ms
    if not isinstance(body, Mapping):
        raise HubError(INVALID_PARAMETER, 400, "TokenRequest must be an object")
    if body.get("keyName") != key_name:
        raise HubError(INVALID_PARAMETER, 400, "TokenRequest keyName does not match the URL")
    secret = keys.get(key_name)
    mac = body.get("mac")
    if secret is None or not isinstance(mac, str):
        raise HubError(INVALID_CREDENTIALS, 401, "invalid TokenRequest credentials")
    expected = base64.b64encode(
        hmac.new(secret.encode(), _mac_text(body).encode(), hashlib.sha256).digest()
    ).decode("ascii")
    if not hmac.compare_digest(expected, mac):
        raise HubError(INVALID_CREDENTIALS, 401, "TokenRequest mac does not verify")
    timestamp, nonce, ttl = body.get("timestamp"), body.get("nonce"), body.get("ttl")
    client_id, capability = body.get("clientId"), body.get("capability")
    if not isinstance(timestamp, int) or abs(timestamp - at) > TOKEN_REQUEST_MAX_SKEW_S * 1000:
        raise HubError(TIMESTAMP_NOT_CURRENT, 401, "TokenRequest timestamp not current")
    if not isinstance(nonce, str) or not nonce:
        raise HubError(INVALID_PARAMETER, 400, "TokenRequest nonce missing")
    if not nonces.check_and_add(nonce, timestamp + int(TOKEN_REQUEST_MAX_SKEW_S * 1000), at):
        raise HubError(NONCE_REPLAYED, 401, "TokenRequest nonce replayed")
    if ttl is None:
        ttl_s = DEFAULT_TOKEN_TTL_S
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0:
        ttl_s = ttl / 1000
    else:
        raise HubError(INVALID_PARAMETER, 400, "TokenRequest ttl must be positive milliseconds")
    if client_id is not None and (not isinstance(client_id, str) or not client_id):
        raise HubError(INVALID_PARAMETER, 400, "TokenRequest clientId must be a string")
    try:
        return mint_token(
            key_name=key_name, key_secret=secret, client_id=client_id,
            capability=capability if capability else FULL.to_json(),
            ttl_s=ttl_s, issued_ms=at,
        )
    except ValueError as exc:
        raise HubError(INVALID_PARAMETER, 400, f"invalid TokenRequest: {exc}") from exc
