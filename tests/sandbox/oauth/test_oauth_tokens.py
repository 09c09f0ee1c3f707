"""Access-token verification, discovery documents, revocation and error responses."""

from __future__ import annotations

import base64
import json
import secrets

import httpx
import pytest
from aiohttp import web
from oauth_driver import FakeClock, OAuthBed, build_server, start_oauth_app

from wardsync.sandbox.oauth import OAuthServer, default_clients, default_demo_users


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


async def _lab_token(oauth: OAuthBed) -> str:
    response = await oauth.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("lab-system", oauth.secrets["lab-system"]),
    )
    assert response.status_code == 200
    return response.json()["access_token"]


# ---------------------------------------------------------------- verify_bearer


async def test_access_token_expires_on_the_injected_clock(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    oauth.clock.advance(899)
    assert oauth.server.verify_bearer(tokens["access_token"]) is not None
    oauth.clock.advance(1)
    assert oauth.server.verify_bearer(tokens["access_token"]) is None


async def test_access_token_lifetime_is_configurable(client_secrets):
    clock = FakeClock()
    holder: dict[str, str] = {}
    server = build_server(
        clock, holder, client_secrets, signing_key=secrets.token_bytes(32), access_token_ttl_s=30
    )
    runner, holder["base"] = await start_oauth_app(server)
    try:
        async with httpx.AsyncClient(base_url=holder["base"]) as http:
            response = await http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("lab-system", client_secrets["lab-system"]),
            )
            assert response.json()["expires_in"] == 30
            token = response.json()["access_token"]
            clock.advance(29.9)
            assert server.verify_bearer(token) is not None
            clock.advance(0.1)
            assert server.verify_bearer(token) is None
    finally:
        await runner.cleanup()


def test_fixed_issuer_strings_are_accepted(client_secrets):
    server = OAuthServer(
        issuer="http://127.0.0.1:8080",
        fhir_base="http://127.0.0.1:8080/fhir",
        signing_key=secrets.token_bytes(32),
        users=default_demo_users(),
        clients=default_clients(client_secrets),
        ward="ward-7a",
    )
    try:
        doc = server.smart_configuration()
        assert doc["issuer"] == "http://127.0.0.1:8080"
        assert doc["token_endpoint"] == "http://127.0.0.1:8080/oauth/token"
    finally:
        server.close()


async def test_forged_and_malformed_tokens_are_rejected(oauth: OAuthBed):
    token = await _lab_token(oauth)
    header, claims, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))

    widened = _b64({**payload, "scope": "system/*.cruds"})
    unsigned = _b64({"alg": "none", "typ": "at+jwt"})
    for bad in (
        None,
        "",
        "not-a-jwt",
        f"{header}.{widened}.{signature}",  # claims changed, signature kept
        f"{unsigned}.{claims}.",  # alg none (RFC 8725 §3.1)
        f"{header}.{claims}.{signature[:-2]}AA",
        token + "x",
        "ü.ü.ü",
        "a" * 100_000,
    ):
        assert oauth.server.verify_bearer(bad) is None, bad
    assert oauth.server.verify_bearer(token) is not None


async def test_an_id_token_is_not_an_access_token(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    assert oauth.server.verify_bearer(tokens["id_token"]) is None


def test_short_signing_keys_are_refused(client_secrets):
    with pytest.raises(ValueError, match="32 bytes"):
        OAuthServer(
            issuer="http://127.0.0.1:1",
            fhir_base="http://127.0.0.1:1/fhir",
            signing_key=b"short",
            users=default_demo_users(),
            clients=default_clients(client_secrets),
            ward="ward-7a",
        )


# ---------------------------------------------------------------- discovery


@pytest.mark.parametrize(
    "path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"]
)
async def test_smart_configuration(oauth: OAuthBed, path: str):
    response = await oauth.http.get(path)
    assert response.status_code == 200
    doc = response.json()
    assert doc["issuer"] == oauth.base
    assert doc["authorization_endpoint"] == f"{oauth.base}/oauth/authorize"
    assert doc["token_endpoint"] == f"{oauth.base}/oauth/token"
    assert doc["revocation_endpoint"] == f"{oauth.base}/oauth/revoke"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert set(doc["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
    }
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(
        doc["token_endpoint_auth_methods_supported"]
    )
    assert {
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "permission-v2",
        "sso-openid-connect",
    } <= set(doc["capabilities"])
    assert {"openid", "fhirUser", "offline_access", "system/Observation.cru"} <= set(
        doc["scopes_supported"]
    )

    # The endpoints it names are the ones that work.
    assert (await oauth.http.get(doc["authorization_endpoint"])).status_code == 400
    assert (await oauth.http.post(doc["token_endpoint"])).status_code == 400


# ---------------------------------------------------------------- revocation


async def test_revoking_an_access_token(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    response = await oauth.http.post(
        "/oauth/revoke",
        data={
            "token": tokens["access_token"],
            "token_type_hint": "access_token",
            "client_id": "wardsync-desktop",
        },
    )
    assert response.status_code == 200
    assert oauth.server.verify_bearer(tokens["access_token"]) is None
    # Revoking an access token leaves the session's refresh token usable.
    refreshed = await oauth.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 200
    assert oauth.server.verify_bearer(refreshed.json()["access_token"]) is not None


async def test_revoking_a_refresh_token_ends_the_session(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    response = await oauth.http.post(
        "/oauth/revoke",
        data={"token": tokens["refresh_token"], "client_id": "wardsync-desktop"},
    )
    assert response.status_code == 200
    # RFC 7009 §2.1: the access tokens of the same grant go as well.
    assert oauth.server.verify_bearer(tokens["access_token"]) is None
    assert (await oauth.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"


async def test_revoking_a_system_token_with_client_authentication(oauth: OAuthBed):
    token = await _lab_token(oauth)
    unauthenticated = await oauth.http.post(
        "/oauth/revoke", data={"token": token, "client_id": "lab-system"}
    )
    assert unauthenticated.status_code == 401
    assert oauth.server.verify_bearer(token) is not None

    response = await oauth.http.post(
        "/oauth/revoke", data={"token": token}, auth=("lab-system", oauth.secrets["lab-system"])
    )
    assert response.status_code == 200
    assert oauth.server.verify_bearer(token) is None


async def test_revoking_an_unknown_token_is_200(oauth: OAuthBed):
    # RFC 7009 §2.2: invalid tokens do not cause an error.
    response = await oauth.http.post(
        "/oauth/revoke", data={"token": "nonsense", "client_id": "wardsync-desktop"}
    )
    assert response.status_code == 200
    missing = await oauth.http.post("/oauth/revoke", data={"client_id": "wardsync-desktop"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"


async def test_programmatic_revoke(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    assert oauth.server.revoke(tokens["access_token"]) is True
    assert oauth.server.revoke(tokens["access_token"]) is False  # already revoked
    assert oauth.server.verify_bearer(tokens["access_token"]) is None
    assert oauth.server.revoke("garbage") is False


# ---------------------------------------------------------------- errors


async def test_token_endpoint_errors_are_rfc6749_json(oauth: OAuthBed):
    cases = [
        ({"client_id": "wardsync-desktop"}, "invalid_request"),  # no grant_type
        ({"grant_type": "password", "client_id": "wardsync-desktop"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "client_id": "wardsync-desktop"}, "invalid_request"),
        (
            {"grant_type": "authorization_code", "client_id": "wardsync-desktop", "code": "x"},
            "invalid_grant",
        ),
        ({"grant_type": "refresh_token", "client_id": "wardsync-desktop"}, "invalid_request"),
    ]
    for data, error in cases:
        response = await oauth.http.post("/oauth/token", data=data)
        assert response.status_code == 400, data
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["Cache-Control"] == "no-store"
        body = response.json()
        assert body["error"] == error, (data, body)
        assert body["error_description"]


async def test_token_endpoint_refuses_non_form_bodies_and_repeated_parameters(oauth: OAuthBed):
    as_json = await oauth.http.post(
        "/oauth/token", json={"grant_type": "client_credentials", "client_id": "lab-system"}
    )
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"

    repeated = await oauth.http.post(
        "/oauth/token",
        content=b"grant_type=refresh_token&grant_type=client_credentials&client_id=lab-system",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400
    assert "repeated" in repeated.json()["error_description"]


async def test_revocations_outlive_housekeeping(oauth: OAuthBed):
    """Pruning reloads the revocation sets from the database; nothing live may be lost."""
    revoked_access = await oauth.login_tokens()
    revoked_session = await oauth.login_tokens(username="demo.nurse")
    assert oauth.server.revoke(revoked_access["access_token"])
    assert oauth.server.revoke(revoked_session["refresh_token"])

    oauth.clock.advance(700)  # past the housekeeping interval, before the tokens expire
    await _lab_token(oauth)  # a token request runs housekeeping

    assert oauth.server.verify_bearer(revoked_access["access_token"]) is None
    assert oauth.server.verify_bearer(revoked_session["access_token"]) is None
    refreshed = await oauth.refresh(revoked_access["refresh_token"])
    assert refreshed.status_code == 200
    assert oauth.server.verify_bearer(refreshed.json()["access_token"]) is not None


async def test_discovery_under_fhir_is_not_shadowed_by_a_fhir_sub_application(client_secrets):
    """The FHIR server mounts a sub-app at /fhir with `/{type}/{id}` routes; the SMART
    document at /fhir/.well-known/smart-configuration must still be the OAuth server's."""

    async def fhir_read(request: web.Request) -> web.Response:
        return web.json_response({"resourceType": request.match_info["type"]})

    holder: dict[str, str] = {}
    server = build_server(FakeClock(), holder, client_secrets, signing_key=secrets.token_bytes(32))
    fhir = web.Application()
    fhir.router.add_get("/{type}/{id}", fhir_read)
    app = web.Application()
    app.add_subapp("/fhir", fhir)  # mounted first, the less favourable order
    server.install(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    holder["base"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with httpx.AsyncClient(base_url=holder["base"]) as http:
            doc = (await http.get("/fhir/.well-known/smart-configuration")).json()
            assert doc["token_endpoint"] == f"{holder['base']}/oauth/token"
            assert (await http.get("/fhir/Patient/p1")).json() == {"resourceType": "Patient"}
    finally:
        await runner.cleanup()
