"""Strict parsing of `application/x-www-form-urlencoded` request bodies and client credentials.

Hand-rolled rather than `request.post()` so that any byte sequence gives either parameters or
an `invalid_request` error (never a server error), and so that repeated parameters are refused:
"Request and response parameters MUST NOT be included more than once" (RFC 6749 §3.1, §3.2).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote_plus

from wardsync.sandbox.oauth.errors import INVALID_CLIENT, INVALID_REQUEST, OAuthError

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 50


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """Parameters of a form body; OAuthError(invalid_request) for anything else
    (RFC 6749 §3.2: the token endpoint takes form-encoded parameters)."""
    if content_type.split(";", 1)[0].strip().lower() != FORM_CONTENT_TYPE:
        raise OAuthError(INVALID_REQUEST, f"the body must be {FORM_CONTENT_TYPE}")
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError(INVALID_REQUEST, "the form body is too large")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError(INVALID_REQUEST, "the form body is not valid UTF-8 form encoding") from exc
    return unique_params(pairs)


def unique_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A dict of the pairs; OAuthError(invalid_request) naming a repeated parameter."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise OAuthError(INVALID_REQUEST, f"parameter {name!r} is repeated")
        if "\x00" in value:
            raise OAuthError(INVALID_REQUEST, f"parameter {name!r} contains a NUL character")
        params[name] = value
    return params


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(client_id, client_secret) from an `Authorization: Basic` header, or None if there is
    no Basic header. Both parts are form-urlencoded before base64 (RFC 6749 §2.3.1)."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise OAuthError(INVALID_CLIENT, "malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError(INVALID_CLIENT, "malformed Basic credentials")
    return unquote_plus(client_id), unquote_plus(secret)
