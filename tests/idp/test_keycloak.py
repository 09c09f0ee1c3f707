"""Against a real Keycloak (tests/idp/keycloak.py): the desktop's SMART sign-in (PKCE S256,
loopback redirect), the sandbox FHIR server trusting Keycloak's tokens (issuer, JWKS, aud) as
a site's training ward does, and the relay verifying them by RFC 7662 introspection and by
JWKS."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.idp import keycloak as kc
from tests.relay.relay_fixtures import relay_config, running_relay, write_secret
from tests.sandbox.test_sandbox_cli import start as start_sandbox
from tests.sandbox.test_sandbox_cli import stop as stop_sandbox
from tests.sandbox_fixtures import running_sandbox
from tests.sync.test_sync_live import NORMAL_LYTES
from wardsync.auth.login import sign_in
from wardsync.auth.smart import TokenSet
from wardsync.core import codes
from wardsync.sandbox.server import Sandbox

# The first test also waits for Keycloak to boot (about a minute; more when it rebuilds).
pytestmark = [pytest.mark.slow, pytest.mark.idp, pytest.mark.timeout(420)]


class KeycloakBrowser:
    """The browser's part of the sign-in: load Keycloak's login page, submit its form, follow
    the redirect to the app's loopback listener. Keycloak marks its session cookies `Secure`;
    browsers send those to http://127.0.0.1 (a secure context), httpx does not, so they are
    carried by hand. `seen` keeps the authorization request for assertions."""

    def __init__(self, http: httpx.AsyncClient, username: str, password: str) -> None:
        self.http = http
        self.username = username
        self.password = password
        self.seen: dict[str, list[str]] = {}

    async def __call__(self, url: str) -> None:
        self.seen = parse_qs(urlsplit(url).query)
        page = await self.http.get(url)
        assert page.status_code == 200, page.text[:500]
        action = re.search(r'<form id="kc-form-login"[^>]*action="([^"]+)"', page.text)
        assert action is not None, "Keycloak's login form not found"
        cookies = "; ".join(f"{k}={v}" for k, v in page.cookies.items())
        resp = await self.http.post(
            html.unescape(action.group(1)), headers={"Cookie": cookies},
            data={"username": self.username, "password": self.password, "credentialId": ""})
        assert resp.status_code == 302, f"login refused: HTTP {resp.status_code}"
        await self.http.get(resp.headers["location"])  # the loopback redirect (RFC 8252 §7.3)


def claims_of(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def forged(token: str) -> str:
    head, body, sig = token.split(".")
    claims = claims_of(token)
    claims["ward"] = "ward-other"
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{body}.{sig}"


@pytest.fixture
async def training_ward(keycloak: kc.Keycloak, seeded_data_dir: Path,
                        tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The sandbox trusting Keycloak instead of its own sign-in, without its own relay: the
    relay under test is the only one poking."""
    async with running_sandbox(seeded_data_dir, tmp_path, auth_issuer=keycloak.issuer,
                               auth_audience=kc.FHIR_AUDIENCE, relay=False) as sb:
        yield sb


async def keycloak_sign_in(sandbox: Sandbox, http: httpx.AsyncClient
                           ) -> tuple[TokenSet, KeycloakBrowser]:
    browser = KeycloakBrowser(http, kc.USERNAME, kc.PASSWORD)
    _, tokens = await sign_in(http, fhir_base=sandbox.fhir_base, client_id=kc.DESKTOP_CLIENT,
                              scopes=kc.SCOPES, open_url=browser, timeout_s=30)
    return tokens, browser


async def test_the_desktop_signs_in_at_keycloak_and_reads_the_training_ward(
    keycloak: kc.Keycloak, training_ward: Sandbox, http: httpx.AsyncClient
) -> None:
    smart = (await http.get(f"{training_ward.fhir_base}/.well-known/smart-configuration")).json()
    openid = keycloak.openid_configuration()
    assert smart["issuer"] == keycloak.issuer
    assert smart["authorization_endpoint"] == openid["authorization_endpoint"]
    assert smart["token_endpoint"] == openid["token_endpoint"]
    assert smart["code_challenge_methods_supported"] == ["S256"]

    tokens, browser = await keycloak_sign_in(training_ward, http)
    # PKCE S256 and an ephemeral-port loopback redirect (RFC 7636 §4.3, RFC 8252 §7.3).
    assert browser.seen["code_challenge_method"] == ["S256"]
    redirect = urlsplit(browser.seen["redirect_uri"][0])
    assert (redirect.scheme, redirect.hostname, redirect.path) == ("http", "127.0.0.1",
                                                                  "/callback")
    assert redirect.port not in (None, 80)
    assert tokens.fhir_user == kc.FHIR_USER
    assert "user/*.cruds" in tokens.scope
    claims = claims_of(tokens.access_token)
    assert claims["iss"] == keycloak.issuer and kc.FHIR_AUDIENCE in claims["aud"]

    # The FHIR server verifies Keycloak's token by its JWKS and maps its SMART scopes.
    bearer = {"Authorization": f"Bearer {tokens.access_token}"}
    read = await http.get(f"{training_ward.fhir_base}/Patient/pat-04", headers=bearer)
    assert read.status_code == 200 and read.json()["id"] == "pat-04"
    refused = await http.get(f"{training_ward.fhir_base}/Patient/pat-04",
                             headers={"Authorization": f"Bearer {forged(tokens.access_token)}"})
    assert refused.status_code == 401
    # The realtime token exchange of the sandbox accepts the same token.
    realtime = await http.post(training_ward.ready_info()["ably_token_url"], headers=bearer)
    assert realtime.status_code == 200 and realtime.json()["clientId"] == "demo-clinician"


async def test_the_training_ward_checks_the_audience_and_refuses_its_own_sign_in(
    keycloak: kc.Keycloak, training_ward: Sandbox, seeded_data_dir: Path, tmp_path: Path,
    http: httpx.AsyncClient
) -> None:
    tokens, _ = await keycloak_sign_in(training_ward, http)
    # The same valid Keycloak token at a server expecting another audience: refused.
    async with running_sandbox(seeded_data_dir, tmp_path, auth_issuer=keycloak.issuer,
                               auth_audience="another-fhir-server") as other:
        resp = await http.get(f"{other.fhir_base}/Patient/pat-04",
                              headers={"Authorization": f"Bearer {tokens.access_token}"})
        assert resp.status_code == 401
    # The sandbox's own system clients keep writing (the laboratory's results go on).
    report, _ = await training_ward.lab.post_panel("pat-04", codes.ELECTROLYTES_PANEL.code,
                                                   NORMAL_LYTES)
    assert report["id"]


@pytest.mark.parametrize("mode", ["introspection", "jwks"])
async def test_the_relay_verifies_keycloak_tokens(
    mode: str, keycloak: kc.Keycloak, training_ward: Sandbox, tmp_path: Path,
    http: httpx.AsyncClient
) -> None:
    config = relay_config(training_ward, tmp_path, tmp_path / "relay")
    # The relay's own client at Keycloak: client_credentials for FHIR, and introspection.
    config.fhir.client_id = kc.RELAY_CLIENT
    config.fhir.client_secret_file = write_secret(tmp_path, "kc-relay", kc.RELAY_SECRET)
    config.fhir.scope = "system/*.rs"
    if mode == "jwks":
        config.tokens.jwt_audience = kc.RELAY_CLIENT
    tokens, _ = await keycloak_sign_in(training_ward, http)
    async with running_relay(config) as relay:
        url = relay.ready_info()["token_url"]
        resp = await http.post(url, headers={"Authorization": f"Bearer {tokens.access_token}"})
        assert resp.status_code == 200, resp.text
        details = resp.json()
        assert details["clientId"] == "demo-clinician"
        assert json.loads(details["capability"]) == {
            f"ward:{kc.WARD}": ["subscribe"], "record:*": ["presence", "subscribe"]}
        expires_in_s = details["expires"] / 1000 - float(claims_of(tokens.access_token)["exp"])
        assert expires_in_s <= 1.0  # never outlives the access token
        bad = await http.post(url, headers={
            "Authorization": f"Bearer {forged(tokens.access_token)}"})
        assert bad.status_code == 401
        # The relay's poll reads the training ward with its Keycloak service-account token.
        assert relay.reconciler is not None
        await relay.reconciler.round()
        assert relay.reconciler.last_success_wall is not None


async def test_wardsync_sandbox_auth_issuer_flags(keycloak: kc.Keycloak, tmp_path: Path,
                                                  http: httpx.AsyncClient) -> None:
    """The command line: `wardsync sandbox --auth-issuer URL --auth-audience AUD`, with its
    own relay, which gets its client's token from the sandbox and verifies the workstations'
    Keycloak tokens by Keycloak's JWKS."""
    proc, info = start_sandbox("--port", "0", "--data-dir", str(tmp_path / "d"),
                               "--no-simulator", "--auth-issuer", keycloak.issuer,
                               "--auth-audience", kc.FHIR_AUDIENCE)
    try:
        smart = (await http.get(info["smart_config"])).json()
        assert smart["issuer"] == keycloak.issuer
        assert smart["jwks_uri"] == keycloak.openid_configuration()["jwks_uri"]
        assert info["ably_token_url"] == info["relay"]["token_url"]
        browser = KeycloakBrowser(http, kc.USERNAME, kc.PASSWORD)
        _, tokens = await sign_in(http, fhir_base=info["fhir_base"], client_id=kc.DESKTOP_CLIENT,
                                  scopes=kc.SCOPES, open_url=browser, timeout_s=30)
        bearer = {"Authorization": f"Bearer {tokens.access_token}"}
        realtime = await http.post(info["ably_token_url"], headers=bearer)
        assert realtime.status_code == 200, realtime.text
        assert realtime.json()["clientId"] == "demo-clinician"
        forged_token = {"Authorization": f"Bearer {forged(tokens.access_token)}"}
        assert (await http.post(info["ably_token_url"], headers=forged_token)).status_code == 401
    finally:
        assert stop_sandbox(proc) == 0
