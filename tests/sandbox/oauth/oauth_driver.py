"""Drives the sandbox OAuth server over real HTTP the way a browser and a client app would.

`OAuthBed` bundles a running server (aiohttp on 127.0.0.1:0, only the OAuth routes), an httpx
client pointed at it and a fake clock the test can move forward.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from aiohttp import web

from wardsync.sandbox.oauth import (
    OAuthClient,
    OAuthServer,
    default_clients,
    default_demo_users,
)

WARD = "ward-7a"
REDIRECT_URI = "http://127.0.0.1:53123/callback"  # nothing listens: tests read Location only
DESKTOP = "wardsync-desktop"
DESKTOP_SCOPES = "openid fhirUser offline_access user/Patient.rs user/Observation.rs"
START_TIME = 1_800_000_000.0


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = START_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_pkce() -> tuple[str, str]:
    """(verifier, S256 challenge) computed independently of the server's code (RFC 7636 B)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _FormReader(HTMLParser):
    """Collects the <form> action and its <input>/<button> names, as a browser would."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: dict[str, list[str]] = {}
        self.errors: list[str] = []
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = a.get("action")
        elif tag == "input" and "name" in a:
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "button" and "name" in a:
            self.buttons.setdefault(a["name"], []).append(a.get("value", ""))
        elif a.get("role") == "alert":
            self._in_error = True

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.errors.append(data)
            self._in_error = False


def read_form(html: str) -> _FormReader:
    reader = _FormReader()
    reader.feed(html)
    return reader


def redirect_params(response: httpx.Response) -> dict[str, str]:
    """The query parameters of a 302 to the loopback redirect URI."""
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI.split("?")[0]), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@dataclass
class Authorization:
    """What a client keeps between the authorize redirect and the token request."""

    verifier: str
    challenge: str
    state: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class OAuthBed:
    server: OAuthServer
    http: httpx.AsyncClient
    clock: FakeClock
    base: str
    secrets: dict[str, str]

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    def authorize_params(self, **overrides: str | None) -> tuple[Authorization, dict[str, str]]:
        verifier, challenge = make_pkce()
        auth = Authorization(verifier, challenge, secrets.token_urlsafe(12))
        params = {
            "response_type": "code",
            "client_id": DESKTOP,
            "redirect_uri": REDIRECT_URI,
            "scope": DESKTOP_SCOPES,
            "state": auth.state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "aud": self.fhir_base,
        }
        for key, value in overrides.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = value
        auth.params = params
        return auth, params

    async def submit_login(
        self,
        params: dict[str, str],
        *,
        username: str = "demo.clinician",
        password: str = "demo",
        decision: str = "approve",
    ) -> httpx.Response:
        """GET the authorize page, fill the form as a person would, POST it."""
        page = await self.http.get("/oauth/authorize", params=params)
        assert page.status_code == 200, page.text
        form = read_form(page.text)
        assert form.action == "/oauth/authorize"
        assert decision in form.buttons["decision"]
        data = {**form.fields, "username": username, "password": password, "decision": decision}
        return await self.http.post(form.action, data=data)

    async def login_code(self, **kwargs: Any) -> tuple[Authorization, str]:
        """Run the browser part of the code flow; the authorization code."""
        overrides = kwargs.pop("overrides", {})
        auth, params = self.authorize_params(**overrides)
        response = await self.submit_login(params, **kwargs)
        got = redirect_params(response)
        assert got["state"] == auth.state
        return auth, got["code"]

    async def exchange(self, auth: Authorization, code: str, **overrides: str) -> httpx.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": auth.params["redirect_uri"],
            "client_id": DESKTOP,
            "code_verifier": auth.verifier,
            **overrides,
        }
        return await self.http.post("/oauth/token", data=data)

    async def login_tokens(self, **kwargs: Any) -> dict[str, Any]:
        """The whole code flow; the token response body."""
        auth, code = await self.login_code(**kwargs)
        response = await self.exchange(auth, code)
        assert response.status_code == 200, response.text
        return response.json()

    async def refresh(self, refresh_token: str, **extra: str) -> httpx.Response:
        data = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": DESKTOP,
            **extra,
        }
        return await self.http.post("/oauth/token", data=data)


async def start_oauth_app(
    server: OAuthServer,
) -> tuple[web.AppRunner, str]:
    app = web.Application()
    server.install(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def build_server(
    clock: Callable[[], float],
    base_holder: dict[str, str],
    client_secrets: dict[str, str],
    *,
    signing_key: bytes,
    db_path: str | Path = ":memory:",
    extra_clients: tuple[OAuthClient, ...] = (),
    **kwargs: Any,
) -> OAuthServer:
    return OAuthServer(
        issuer=lambda: base_holder["base"],
        fhir_base=lambda: f"{base_holder['base']}/fhir",
        signing_key=signing_key,
        users=default_demo_users(),
        clients=[*default_clients(client_secrets), *extra_clients],
        ward=WARD,
        db_path=db_path,
        clock=clock,
        **kwargs,
    )
