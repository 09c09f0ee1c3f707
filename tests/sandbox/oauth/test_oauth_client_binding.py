"""Codes and refresh tokens are bound to the client they were issued to (RFC 6749 §4.1.3, §6)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from oauth_driver import DESKTOP, REDIRECT_URI, FakeClock, OAuthBed, build_server, start_oauth_app

from wardsync.sandbox.oauth import default_clients

OTHER_APP = "other-ward-app"


@pytest.fixture
async def two_apps(client_secrets: dict[str, str]) -> AsyncIterator[OAuthBed]:
    """The default clients plus a second public app registered exactly like the desktop."""
    desktop = next(c for c in default_clients(client_secrets) if c.client_id == DESKTOP)
    clock = FakeClock()
    holder: dict[str, str] = {}
    server = build_server(
        clock,
        holder,
        client_secrets,
        signing_key=secrets.token_bytes(32),
        extra_clients=(replace(desktop, client_id=OTHER_APP),),
    )
    runner, holder["base"] = await start_oauth_app(server)
    try:
        async with httpx.AsyncClient(base_url=holder["base"]) as http:
            yield OAuthBed(server, http, clock, holder["base"], client_secrets)
    finally:
        await runner.cleanup()


async def test_another_app_cannot_redeem_the_desktops_code(two_apps: OAuthBed):
    auth, code = await two_apps.login_code()
    stolen = await two_apps.exchange(auth, code, client_id=OTHER_APP)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    # The attempt by another client does not burn the code for its rightful owner.
    assert (await two_apps.exchange(auth, code)).status_code == 200


async def test_another_app_cannot_use_the_desktops_refresh_token(two_apps: OAuthBed):
    tokens = await two_apps.login_tokens()
    stolen = await two_apps.refresh(tokens["refresh_token"], client_id=OTHER_APP)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    assert (await two_apps.refresh(tokens["refresh_token"])).status_code == 200


async def test_another_app_cannot_revoke_the_desktops_tokens(two_apps: OAuthBed):
    """Nor learn anything from trying: RFC 7009 §2.2, the answer is the one for a token that
    does not exist (it used to be 400 invalid_grant, an oracle for live tokens of others)."""
    tokens = await two_apps.login_tokens()
    unknown = await two_apps.http.post(
        "/oauth/revoke", data={"token": "no-such-token", "client_id": OTHER_APP})
    assert unknown.status_code == 200
    for token in (tokens["access_token"], tokens["refresh_token"]):
        response = await two_apps.http.post(
            "/oauth/revoke", data={"token": token, "client_id": OTHER_APP}
        )
        assert response.status_code == unknown.status_code
        assert response.content == unknown.content
        assert response.headers.get("content-type") == unknown.headers.get("content-type")
    assert two_apps.server.verify_bearer(tokens["access_token"]) is not None
    assert (await two_apps.refresh(tokens["refresh_token"])).status_code == 200


async def test_the_other_app_gets_its_own_client_id_in_the_grant(two_apps: OAuthBed):
    auth, params = two_apps.authorize_params(client_id=OTHER_APP)
    response = await two_apps.submit_login(params)
    code = httpx.URL(response.headers["Location"]).params["code"]
    token = await two_apps.http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": OTHER_APP,
            "code_verifier": auth.verifier,
        },
    )
    assert token.status_code == 200, token.text
    grant = two_apps.server.verify_bearer(token.json()["access_token"])
    assert grant is not None and grant.client_id == OTHER_APP
