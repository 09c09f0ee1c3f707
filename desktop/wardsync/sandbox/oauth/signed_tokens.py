"""Compact HS256 JSON Web Tokens (RFC 7519 over RFC 7515 JWS), just what the sandbox needs.

Only HS256 is produced or accepted: the header's `alg` must be exactly "HS256", so a token
claiming `none` or any other algorithm is rejected (RFC 8725 §3.1, algorithm verification).
Different token kinds are signed with different keys derived from the sandbox key, so an
id_token can never pass as an access token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

ALGORITHM = "HS256"
# Far longer than any token we issue; bounds the work spent on garbage (RFC 8725 §3.11 spirit).
MAX_TOKEN_CHARS = 8192


def derive_key(root_key: bytes, purpose: str) -> bytes:
    """A separate signing key per token kind, derived from the root key with HMAC-SHA256."""
    return hmac.new(root_key, f"wardsync-sandbox/{purpose}".encode(), hashlib.sha256).digest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    # RFC 7515 §2: base64url without padding; reject anything outside that alphabet.
    if not text or any(c not in _B64URL_ALPHABET for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def encode(claims: dict[str, Any], key: bytes, *, typ: str = "JWT") -> str:
    """Sign `claims` as a compact JWS with HS256."""
    header = {"alg": ALGORITHM, "typ": typ}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def decode(token: str, key: bytes, *, typ: str | None = None) -> dict[str, Any] | None:
    """The claims of a token signed with `key`, or None if it is malformed, carries another
    algorithm or type, or its signature does not verify. Expiry is the caller's business."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header_b64, claims_b64, signature_b64 = parts
    try:
        signature = _b64url_decode(signature_b64)
        expected = hmac.new(
            key, f"{header_b64}.{claims_b64}".encode("ascii"), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(signature, expected):
            return None
        header = json.loads(_b64url_decode(header_b64))
        claims = json.loads(_b64url_decode(claims_b64))
    except (ValueError, binascii.Error, UnicodeError):
        # json.JSONDecodeError is a ValueError; non-ASCII input fails .encode("ascii").
        return None
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        return None
    if typ is not None and header.get("typ") != typ:
        return None
    if not isinstance(claims, dict):
        return None
    return claims
