"""Discovery documents (SMART App Launch 2.0 §2.1) over loopback HTTP: the one GET that the
desktop's sign-in and the relay share, each failure a clear error in the caller's own type,
and what each of them then requires of the document."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from scripted_server import Answer, ScriptedServer, scripted_server

from wardsync.auth import smart
from wardsync.core.errors import SignInError
from wardsync.fhir.smart_configuration import (
    DiscoveryError,
    fetch_json_document,
    fetch_smart_configuration,
    smart_configuration_url,
)
from wardsync.relay import backend_auth

WELL_KNOWN = "/fhir/.well-known/smart-configuration"
DOCUMENT = {
    "issuer": "https://idp.example/realms/ward",
    "authorization_endpoint": "https://idp.example/auth",
    "token_endpoint": "https://idp.example/token",
    "introspection_endpoint": "https://idp.example/introspect",
    "code_challenge_methods_supported": ["S256"],
    "capabilities": ["launch-standalone"],
}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with scripted_server() as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


def test_the_document_lives_beside_the_fhir_base() -> None:
    expected = "https://ehr.example/fhir/.well-known/smart-configuration"
    assert smart_configuration_url("https://ehr.example/fhir") == expected
    assert smart_configuration_url("https://ehr.example/fhir/") == expected


async def test_the_document_is_fetched_as_json(server: ScriptedServer,
                                               http: httpx.AsyncClient) -> None:
    server.script(WELL_KNOWN, Answer(200, DOCUMENT))
    assert await fetch_smart_configuration(http, server.url("/fhir/")) == DOCUMENT
    assert server.requests[0].method == "GET"
    assert server.requests[0].headers["Accept"] == "application/json"


@pytest.mark.parametrize(("answer", "says"), [
    (Answer(404, {}), "-> HTTP 404"),
    (Answer(200, raw="<html>sign in</html>"), "is not JSON"),
    (Answer(200, ["token_endpoint"]), "is not a JSON object"),
])
async def test_a_bad_answer_is_a_discovery_error_naming_document_and_url(
    server: ScriptedServer, http: httpx.AsyncClient, answer: Answer, says: str,
) -> None:
    server.script(WELL_KNOWN, answer)
    url = server.url(WELL_KNOWN)
    with pytest.raises(DiscoveryError) as caught:
        await fetch_smart_configuration(http, server.url("/fhir"))
    assert str(caught.value) == f"SMART configuration ({url}) {says}"


async def test_the_caller_chooses_the_error_type(http: httpx.AsyncClient) -> None:
    url = "http://127.0.0.1:9/.well-known/openid-configuration"
    with pytest.raises(SignInError, match=r"^OpenID configuration unreachable .*ConnectError$"):
        await fetch_json_document(http, url, "OpenID configuration", SignInError)


async def test_the_relay_needs_a_token_endpoint_and_reads_the_rest_if_well_formed(
    server: ScriptedServer, http: httpx.AsyncClient,
) -> None:
    server.script(WELL_KNOWN, Answer(200, {**DOCUMENT, "issuer": 42}))
    endpoints = await backend_auth.discover(http, server.url("/fhir"))
    assert endpoints == backend_auth.SmartEndpoints(
        issuer=None, token_endpoint="https://idp.example/token",
        introspection_endpoint="https://idp.example/introspect")

    server.script(WELL_KNOWN, Answer(200, {"issuer": "https://idp.example"}))
    with pytest.raises(DiscoveryError, match="no token_endpoint"):
        await backend_auth.discover(http, server.url("/fhir"))


async def test_the_desktop_needs_pkce_s256_and_fails_as_a_sign_in_error(
    server: ScriptedServer, http: httpx.AsyncClient,
) -> None:
    server.script(WELL_KNOWN, Answer(200, DOCUMENT))
    config = await smart.discover(http, server.url("/fhir"))
    assert (config.authorization_endpoint, config.token_endpoint) == (
        "https://idp.example/auth", "https://idp.example/token")
    assert config.revocation_endpoint is None

    server.script(WELL_KNOWN, Answer(200, {**DOCUMENT, "code_challenge_methods_supported": []}))
    with pytest.raises(SignInError, match="PKCE S256"):
        await smart.discover(http, server.url("/fhir"))
    server.script(WELL_KNOWN, Answer(503, {}))
    with pytest.raises(SignInError, match="HTTP 503"):
        await smart.discover(http, server.url("/fhir"))
