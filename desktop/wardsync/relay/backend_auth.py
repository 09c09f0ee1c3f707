"""The relay's own identity towards the FHIR and authorization servers: SMART Backend
Services style client credentials (RFC 6749 §4.4; SMART App Launch 2.0 "Backend Services"),
with the endpoints discovered from `{fhir base}/.well-known/smart-configuration`.

The token source itself is the FHIR layer's `ClientCredentials` (fhir/client_credentials.py),
shared with the sandbox's writing systems; the discovery GET is fhir/smart_configuration.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from wardsync.fhir.smart_configuration import (
    DiscoveryError,
    fetch_smart_configuration,
    optional_string,
)


@dataclass(frozen=True, slots=True)
class SmartEndpoints:
    """The endpoints the relay needs from the SMART configuration (SMART 2.0 §2.1)."""

    issuer: str | None
    token_endpoint: str
    introspection_endpoint: str | None


async def discover(http: httpx.AsyncClient, fhir_base: str) -> SmartEndpoints:
    """GET `{fhir_base}/.well-known/smart-configuration` (SMART App Launch 2.0 §2.1)."""
    body = await fetch_smart_configuration(http, fhir_base)
    token_endpoint = optional_string(body, "token_endpoint")
    if token_endpoint is None:
        raise DiscoveryError("SMART configuration has no token_endpoint")
    return SmartEndpoints(
        issuer=optional_string(body, "issuer"),
        token_endpoint=token_endpoint,
        introspection_endpoint=optional_string(body, "introspection_endpoint"),
    )
