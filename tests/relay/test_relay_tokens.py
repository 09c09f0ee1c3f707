"""`POST /realtime/token` on the relay: verified by RFC 7662 introspection at the sandbox's
authorization server, least-privilege Ably tokens, and the attacks it must refuse."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from ably import AblyException, AblyRealtime

from tests.relay.relay_fixtures import (
    FAST_SDK,
    clinician_session,
    relay_config,
    running_relay,
    scrape,
)
from tests.sandbox_fixtures import DESKTOP_CLIENT, running_sandbox
from tests.waiting import wait_for
from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.login import sign_in
from wardsync.relay.service import Relay
from wardsync.sandbox.server import Sandbox


@pytest.fixture
async def relay(ward: Sandbox, tmp_path: Path) -> AsyncIterator[Relay]:
    async with running_relay(relay_config(ward, tmp_path, tmp_path / "relay")) as running:
        yield running


async def _exchange(http: httpx.AsyncClient, relay: Relay, token: str | None,
                    **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers.update(kwargs.pop("headers", {}))
    return await http.post(relay.ready_info()["token_url"], headers=headers, **kwargs)


async def test_a_clinicians_token_gets_exactly_the_ward_capability(
    ward: Sandbox, relay: Relay, http: httpx.AsyncClient
):
    session = await clinician_session(ward, http)
    try:
        response = await _exchange(http, relay, await session.access_token())
        assert response.status_code == 200, response.text
        assert response.headers["Cache-Control"] == "no-store"
        details = response.json()
        assert json.loads(details["capability"]) == {
            f"ward:{ward.ward}": ["subscribe"], "record:*": ["presence", "subscribe"]}
        assert details["clientId"] == "demo-clinician"
        access_exp = ward.oauth.verify_bearer(await session.access_token()).expires_at
        assert details["expires"] <= access_exp * 1000 + 1000  # never outlives the sign-in
        assert details["expires"] > time.time() * 1000
    finally:
        await session.aclose()


async def test_the_minted_token_cannot_reach_another_wards_channel_or_publish(
    ward: Sandbox, relay: Relay, http: httpx.AsyncClient
):
    session = await clinician_session(ward, http)
    token = await session.access_token()

    async def auth_callback(_params: dict) -> dict:
        return (await _exchange(http, relay, token)).json()

    client = AblyRealtime(endpoint=f"{ward.ready_info()['ably_endpoint']}/", tls=False,
                          auth_callback=auth_callback, **FAST_SDK)
    try:
        own = client.channels.get(f"ward:{ward.ward}")
        await own.attach()
        with pytest.raises(AblyException) as publish:
            await own.publish("poke", {"forged": True})
        assert (publish.value.code, publish.value.status_code) == (40160, 401)
        other = client.channels.get("ward:another-ward")
        with pytest.raises(AblyException) as attach:
            await other.attach()
        assert (attach.value.code, attach.value.status_code) == (40160, 401)
        record = client.channels.get("record:Patient:pat-01")
        await record.attach()
        await record.presence.enter({"viewing": True})
    finally:
        await client.close()
        await session.aclose()


async def test_forged_revoked_and_missing_tokens_get_401(
    ward: Sandbox, relay: Relay, http: httpx.AsyncClient
):
    session = await clinician_session(ward, http)
    try:
        token = await session.access_token()
        header, payload, signature = token.split(".")
        forged_claims = payload[:-2] + ("AA" if not payload.endswith("AA") else "BB")
        for bad in (f"{header}.{forged_claims}.{signature}", "garbage", token[::-1]):
            response = await _exchange(http, relay, bad)
            assert response.status_code == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        assert (await _exchange(http, relay, None)).status_code == 401
        basic = await _exchange(http, relay, None, headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401
        assert (await _exchange(http, relay, token)).status_code == 200
        ward.oauth.revoke(token)  # e.g. the clinician signed out
        assert (await _exchange(http, relay, token)).status_code == 401
        assert await scrape(http, relay.ready_info()["metrics_url"],
                            "wardsync_relay_token_exchanges_total", outcome="inactive") == 4
    finally:
        await session.aclose()


async def test_tokens_without_the_desktops_user_scopes_get_403(
    ward: Sandbox, relay: Relay, http: httpx.AsyncClient
):
    _, tokens = await sign_in(
        http, fhir_base=ward.fhir_base, client_id=DESKTOP_CLIENT, scopes=("openid", "fhirUser"),
        open_url=DemoBrowser(http, username="demo.clinician", password="demo"),
    )
    response = await _exchange(http, relay, tokens.access_token)
    assert response.status_code == 403
    assert response.json() == {"error": "insufficient_scope"}
    info = ward.ready_info()["lab_client"]
    lab = await http.post(ward.token_url, data={"grant_type": "client_credentials"},
                          auth=(info["client_id"], info["client_secret"]))
    # A system client (no fhirUser) is not a workstation user either.
    assert (await _exchange(http, relay, lab.json()["access_token"])).status_code == 403


async def test_oversized_and_malformed_requests_are_refused(
    ward: Sandbox, relay: Relay, http: httpx.AsyncClient
):
    huge = await _exchange(http, relay, "x" * 9000)
    assert huge.status_code == 400
    body = await _exchange(http, relay, "token", content=b"{" * 5000)
    assert body.status_code == 413
    spaced = await _exchange(http, relay, "two parts")
    assert spaced.status_code == 401
    wrong_method = await http.get(relay.ready_info()["token_url"])
    assert wrong_method.status_code == 405


async def test_an_expired_token_gets_401(seeded_data_dir: Path, tmp_path: Path):
    async with (
        running_sandbox(seeded_data_dir, tmp_path, access_token_ttl_s=2.0,
                        relay=False) as short,
        httpx.AsyncClient(timeout=10) as http,
    ):
        config = relay_config(short, tmp_path, tmp_path / "relay")
        async with running_relay(config) as relay:
            session = await clinician_session(short, http)
            try:
                token = session.tokens.access_token
                first = await _exchange(http, relay, token)
                assert first.status_code == 200
                # Capped by the access token's remaining life, not the relay's hour.
                assert first.json()["expires"] <= (time.time() + 2.5) * 1000
                await wait_for(lambda: short.oauth.verify_bearer(token) is None, 5, "expiry")
                assert (await _exchange(http, relay, token)).status_code == 401
            finally:
                await session.aclose()
