"""The app's own URL handling at sign-in: discovery endpoints, the authorization URL, the
loopback redirect. A URL that Python and the browser would read differently never gets a
user's password, a code or a verifier (core/strict_url.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiohttp import web

from tests.core.test_strict_url import whatwg_view
from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.login import sign_in
from wardsync.auth.loopback import LoopbackRedirect
from wardsync.auth.smart import SmartConfiguration, authorization_request
from wardsync.core.errors import SignInError

FHIR_BASE = "https://fhir.hospital.example/fhir"


def _doc(**endpoints: str) -> dict[str, Any]:
    return {
        "issuer": "https://idp.hospital.example",
        "authorization_endpoint": "https://idp.hospital.example/authorize",
        "token_endpoint": "https://idp.hospital.example/token",
        "code_challenge_methods_supported": ["S256"],
        **endpoints,
    }


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("authorization_endpoint", "https://idp.hospital.example\\@evil.example/authorize"),
        ("authorization_endpoint", "https://evil.example\\@idp.hospital.example/authorize"),
        ("authorization_endpoint", "https://user@idp.hospital.example/authorize"),
        ("authorization_endpoint", "https://idp.hospital.example/auth\torize"),
        ("authorization_endpoint", "https://idp.hospital.example/authorize#frag"),
        ("authorization_endpoint", "http://idp.hospital.example/authorize"),  # no TLS
        ("token_endpoint", "https://idp.hospital.example\\@evil.example/token"),
        ("token_endpoint", "https://0x7f.1/token"),
        ("token_endpoint", "http://evil.example/token"),
        ("revocation_endpoint", "https://evil.example\\@idp.hospital.example/revoke"),
    ],
)
def test_discovery_with_an_endpoint_read_differently_or_without_tls_is_refused(key, url):
    with pytest.raises(SignInError) as refused:
        SmartConfiguration.from_json(_doc(**{key: url}), fhir_base=FHIR_BASE)
    assert key in str(refused.value)
    assert url not in str(refused.value)


def test_plain_http_is_accepted_for_loopback_and_for_the_fhir_base_host_only():
    local = SmartConfiguration.from_json(_doc(
        authorization_endpoint="http://127.0.0.1:8080/oauth/authorize",
        token_endpoint="http://[::1]:8080/oauth/token",
    ))
    assert local.token_endpoint == "http://[::1]:8080/oauth/token"
    ward = SmartConfiguration.from_json(
        _doc(token_endpoint="http://sandbox.ward.example:8080/oauth/token"),
        fhir_base="http://sandbox.ward.example:8080/fhir",
    )
    assert ward.token_endpoint == "http://sandbox.ward.example:8080/oauth/token"


def test_the_authorization_url_keeps_the_endpoints_query_and_its_host():
    config = SmartConfiguration.from_json(
        _doc(authorization_endpoint="https://idp.hospital.example/authorize?realm=ward"),
        fhir_base=FHIR_BASE,
    )
    request = authorization_request(
        config, client_id="wardsync-desktop", redirect_uri="http://127.0.0.1:5000/callback",
        scopes=["openid", "user/Patient.rs"], aud=FHIR_BASE,
    )
    assert request.url.count("?") == 1
    assert whatwg_view(request.url)[1] == "idp.hospital.example"
    query = parse_qs(urlsplit(request.url).query)
    assert query["realm"] == ["ward"]
    assert query["redirect_uri"] == ["http://127.0.0.1:5000/callback"]
    assert query["scope"] == ["openid user/Patient.rs"]
    assert query["state"] == [request.state]


@pytest.fixture
async def poisoned_discovery() -> AsyncIterator[str]:
    """A FHIR server whose discovery document sends the browser elsewhere."""

    async def smart_configuration(_request: web.Request) -> web.Response:
        return web.json_response(_doc(
            authorization_endpoint="http://127.0.0.1\\@evil.example/authorize",
            token_endpoint="http://127.0.0.1:9/token",
        ))

    app = web.Application()
    app.router.add_get("/fhir/.well-known/smart-configuration", smart_configuration)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        await runner.cleanup()


async def test_sign_in_never_opens_a_poisoned_authorization_url(poisoned_discovery: str):
    opened: list[str] = []

    async def open_url(url: str) -> None:
        opened.append(url)

    async with httpx.AsyncClient() as http:
        with pytest.raises(SignInError, match="authorization_endpoint is not a safe URL"):
            await sign_in(http, fhir_base=poisoned_discovery, client_id="wardsync-desktop",
                          scopes=["openid"], open_url=open_url, timeout_s=5)
    assert opened == []


async def test_a_fhir_base_read_differently_is_refused_before_any_request():
    async with httpx.AsyncClient() as http:
        with pytest.raises(SignInError, match="FHIR base URL is not a safe URL"):
            await sign_in(http, fhir_base="http://127.0.0.1:9\\@evil.example/fhir",
                          client_id="wardsync-desktop", scopes=["openid"],
                          open_url=_never_called, timeout_s=5)


async def _never_called(url: str) -> None:
    raise AssertionError("the browser must not be opened")


async def test_the_loopback_redirect_is_a_loopback_literal_in_either_family():
    async with LoopbackRedirect("::1") as redirect:
        assert redirect.redirect_uri == f"http://[::1]:{redirect.port}/callback"
        assert whatwg_view(redirect.redirect_uri)[1] == "[::1]"
    with pytest.raises(ValueError, match="loopback IP literal"):
        LoopbackRedirect("localhost")
    with pytest.raises(ValueError, match="loopback IP literal"):
        LoopbackRedirect("10.0.0.1")


@pytest.fixture
async def tricky_sign_in_pages() -> AsyncIterator[tuple[str, list[str]]]:
    """Sign-in pages that post the password elsewhere or redirect the code elsewhere; the
    list records every request that reached the server."""
    seen: list[str] = []

    def page(action: str) -> str:
        return (f"<form method='post' action='{action}'><input type='hidden' name='state' "
                "value='s'></form>")

    async def offsite(request: web.Request) -> web.Response:
        seen.append(request.path)
        port = request.url.port
        return web.Response(text=page(f"http://127.0.0.1:{port + 1 if port else 1}/steal"),
                            content_type="text/html")

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text=page("/approve"), content_type="text/html")

    async def approve(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(status=302,
                            headers={"Location": "http://127.0.0.1\\@evil.example/cb?code=x"})

    app = web.Application()
    app.router.add_get("/offsite", offsite)
    app.router.add_get("/elsewhere", elsewhere)
    app.router.add_post("/approve", approve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_the_demo_browser_posts_only_to_its_page_and_follows_only_loopback(
    tricky_sign_in_pages: tuple[str, list[str]],
):
    base, seen = tricky_sign_in_pages
    async with httpx.AsyncClient() as http:
        browser = DemoBrowser(http, username="demo.clinician", password="demo")
        with pytest.raises(SignInError, match="posts somewhere other"):
            await browser(f"{base}/offsite")
        with pytest.raises(SignInError, match="redirected somewhere other"):
            await browser(f"{base}/elsewhere")
    assert seen == ["/offsite", "/elsewhere", "/approve"]
