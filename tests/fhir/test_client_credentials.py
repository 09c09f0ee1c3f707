"""`ClientCredentials` on the wire (RFC 6749 §4.4): one cached token renewed ahead of expiry on
fake time, Basic client authentication with form-urlencoded parts, one request for concurrent
callers, and each failure as the FHIR layer's typed error without the secret in it."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import httpx
import pytest
from scripted_server import Answer, ScriptedServer, scripted_server

from wardsync.core.timer import FakeTimer
from wardsync.fhir.client_credentials import (
    DEFAULT_TOKEN_LIFETIME_S,
    TOKEN_RENEW_MARGIN_S,
    ClientCredentials,
)
from wardsync.fhir.errors import AuthError, FhirError, ServerError, Unreachable

CLIENT_ID = "lab system"  # a space: form-urlencoded to "+" before Basic (RFC 6749 §2.3.1)
SECRET = "s3cret/with+odd:chars"
TOKEN = "/oauth/token"


def token(n: int, expires_in: object = 3600) -> Answer:
    return Answer(200, {"access_token": f"tok-{n}", "token_type": "Bearer",
                        "expires_in": expires_in})


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with scripted_server() as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


def credentials(server: ScriptedServer, http: httpx.AsyncClient, timer: FakeTimer,
                scope: str | None = "system/Observation.rs") -> ClientCredentials:
    return ClientCredentials(token_url=server.url(TOKEN), client_id=CLIENT_ID,
                             client_secret=SECRET, http=http, scope=scope,
                             monotonic=timer.monotonic)


async def test_one_token_is_cached_and_renewed_a_margin_before_expiry(
    server: ScriptedServer, http: httpx.AsyncClient,
) -> None:
    server.script(TOKEN, token(1), token(2))
    timer = FakeTimer()
    tokens = credentials(server, http, timer)

    assert await tokens.access_token() == "tok-1"
    await timer.advance(3600 - TOKEN_RENEW_MARGIN_S - 0.5)
    assert await tokens.access_token() == "tok-1"
    assert len(server.to(TOKEN)) == 1
    await timer.advance(0.5)
    assert await tokens.access_token() == "tok-2"

    request = server.to(TOKEN)[0]
    assert parse_qs(request.text) == {"grant_type": ["client_credentials"],
                                      "scope": ["system/Observation.rs"]}
    raw = base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")).decode()
    assert raw == "lab+system:s3cret%2Fwith%2Bodd%3Achars"
    # The same client authentication serves the server's other endpoints (introspection).
    probe = next(tokens.auth.auth_flow(httpx.Request("POST", server.url("/introspect"))))
    assert probe.headers["Authorization"] == request.headers["Authorization"]


async def test_a_short_lived_token_is_renewed_a_tenth_of_its_life_early(
    server: ScriptedServer, http: httpx.AsyncClient,
) -> None:
    server.script(TOKEN, token(1, expires_in="300"), token(2))  # Entra ID v1 sends a string
    timer = FakeTimer()
    tokens = credentials(server, http, timer, scope=None)
    assert await tokens.access_token() == "tok-1"
    await timer.advance(269.9)
    assert await tokens.access_token() == "tok-1"
    await timer.advance(0.1)
    assert await tokens.access_token() == "tok-2"
    assert parse_qs(server.to(TOKEN)[0].text) == {"grant_type": ["client_credentials"]}


async def test_no_expires_in_means_the_default_lifetime(
    server: ScriptedServer, http: httpx.AsyncClient,
) -> None:
    server.script(TOKEN, Answer(200, {"access_token": "tok-1"}), token(2))
    timer = FakeTimer()
    tokens = credentials(server, http, timer)
    await tokens.access_token()
    await timer.advance(DEFAULT_TOKEN_LIFETIME_S * 0.9 - 0.1)
    assert await tokens.access_token() == "tok-1"
    await timer.advance(0.1)
    assert await tokens.access_token() == "tok-2"


async def test_concurrent_callers_share_one_token_request(
    server: ScriptedServer, http: httpx.AsyncClient,
) -> None:
    server.script(TOKEN, token(1), token(2))
    tokens = credentials(server, http, FakeTimer())
    got = await asyncio.gather(*(tokens.access_token() for _ in range(5)))
    assert got == ["tok-1"] * 5
    assert len(server.to(TOKEN)) == 1


async def test_a_rejected_token_is_replaced_once_however_many_callers_report_it(
    server: ScriptedServer, http: httpx.AsyncClient,
) -> None:
    server.script(TOKEN, token(1), token(2), token(3))
    tokens = credentials(server, http, FakeTimer())
    rejected = await tokens.access_token()
    first, second = await asyncio.gather(tokens.refresh_after_rejection(rejected),
                                         tokens.refresh_after_rejection(rejected))
    assert first == second == "tok-2"
    assert len(server.to(TOKEN)) == 2
    tokens.invalidate("tok-1")  # an old token: the current one stays
    assert await tokens.access_token() == "tok-2"


@pytest.mark.parametrize(("answer", "error", "status", "text"), [
    (Answer(503, {"error": "temporarily_unavailable"}), ServerError, 503,
     "token endpoint -> 503"),
    (Answer(429, {}), ServerError, 429, "token endpoint -> 429"),
    (Answer(401, {"error": "invalid_client", "error_description": "bad secret " + SECRET}),
     AuthError, 401, "token endpoint -> 401 invalid_client"),
    (Answer(400, raw="<html>no</html>"), AuthError, 400, "token endpoint -> 400"),
    (Answer(200, {"token_type": "Bearer"}), AuthError, 200,
     "token endpoint returned no usable access_token"),
    (Answer(200, ["tok-1"]), AuthError, 200, "token endpoint returned no usable access_token"),
    (token(1, expires_in="soon"), AuthError, 200,
     "token endpoint returned an unusable expires_in"),
    (token(1, expires_in=-5), AuthError, 200, "token endpoint returned an unusable expires_in"),
    (token(1, expires_in=True), AuthError, 200,
     "token endpoint returned an unusable expires_in"),
])
async def test_each_failure_is_a_typed_error_naming_status_and_code_only(
    server: ScriptedServer, http: httpx.AsyncClient, answer: Answer, error: type[FhirError],
    status: int, text: str,
) -> None:
    server.script(TOKEN, answer)
    tokens = credentials(server, http, FakeTimer())
    with pytest.raises(error) as caught:
        await tokens.access_token()
    assert type(caught.value) is error and caught.value.status == status
    assert str(caught.value) == text
    assert caught.value.transient


async def test_an_unreachable_token_endpoint_is_unreachable(http: httpx.AsyncClient) -> None:
    tokens = ClientCredentials(token_url="http://127.0.0.1:9/token", client_id=CLIENT_ID,
                               client_secret=SECRET, http=http)
    with pytest.raises(Unreachable, match=r"^token endpoint unreachable: ConnectError$"):
        await tokens.access_token()
