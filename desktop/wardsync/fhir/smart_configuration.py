"""Discovery documents a FHIR deployment publishes: SMART's `.well-known/smart-configuration`
beside the FHIR base (SMART App Launch 2.0 §2.1) and any other well-known JSON document (an
issuer's OpenID configuration, OpenID Connect Discovery 1.0 §4).

One GET for all of them, used by the desktop's sign-in (auth/smart.py) and by the relay
(relay/backend_auth.py, relay/jwks.py); each reads the fields it needs from the object.
Errors name the document, the URL and the HTTP status or exception type: never a body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

# SMART App Launch 2.0 §2.1: "{fhir base}/.well-known/smart-configuration".
SMART_CONFIGURATION_PATH = ".well-known/smart-configuration"


class DiscoveryError(RuntimeError):
    """A discovery document could not be fetched or lacks what the caller needs."""


def smart_configuration_url(fhir_base: str) -> str:
    """Where the SMART configuration of the FHIR server at `fhir_base` is published."""
    return f"{fhir_base.rstrip('/')}/{SMART_CONFIGURATION_PATH}"


async def fetch_json_document(
    http: httpx.AsyncClient, url: str, what: str,
    error: Callable[[str], Exception] = DiscoveryError,
) -> dict[str, Any]:
    """GET a well-known JSON document (`what` names it in errors); raises `error(message)`
    when it is unreachable, not 200 or not a JSON object."""
    try:
        resp = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise error(f"{what} unreachable ({url}): {type(exc).__name__}") from exc
    if resp.status_code != 200:
        raise error(f"{what} ({url}) -> HTTP {resp.status_code}")
    try:
        body: Any = resp.json()
    except ValueError as exc:
        raise error(f"{what} ({url}) is not JSON") from exc
    if not isinstance(body, dict):
        raise error(f"{what} ({url}) is not a JSON object")
    return body


async def fetch_smart_configuration(
    http: httpx.AsyncClient, fhir_base: str,
    error: Callable[[str], Exception] = DiscoveryError,
) -> dict[str, Any]:
    """The SMART configuration of the FHIR server at `fhir_base`, as a JSON object."""
    return await fetch_json_document(http, smart_configuration_url(fhir_base),
                                     "SMART configuration", error)


def optional_string(doc: Mapping[str, Any], name: str) -> str | None:
    """`doc[name]` when it is a string, else None (an absent or malformed optional field)."""
    value = doc.get(name)
    return value if isinstance(value, str) else None
