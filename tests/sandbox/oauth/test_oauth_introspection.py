"""Token introspection (RFC 7662) for confidential clients such as the relay."""

from __future__ import annotations

from oauth_driver import WARD, OAuthBed

RELAY = "wardsync-relay"


async def _introspect(oauth: OAuthBed, token: str, client: str = RELAY, secret: str | None = None):
    return await oauth.http.post(
        "/oauth/introspect", data={"token": token},
        auth=(client, secret if secret is not None else oauth.secrets[client]),
    )


async def test_discovery_advertises_the_introspection_endpoint(oauth: OAuthBed):
    config = (await oauth.http.get("/fhir/.well-known/smart-configuration")).json()
    assert config["introspection_endpoint"] == f"{oauth.base}/oauth/introspect"
    assert "none" not in config["introspection_endpoint_auth_methods_supported"]


async def test_an_active_user_token_says_who_and_what(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    response = await _introspect(oauth, tokens["access_token"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert body["fhirUser"] == "Practitioner/demo-clinician"
    assert body["sub"] == "Practitioner/demo-clinician"
    assert body["client_id"] == "wardsync-desktop"
    assert set(body["scope"].split()) == set(tokens["scope"].split())
    assert body["token_type"] == "Bearer" and body["ward"] == WARD
    assert body["exp"] > oauth.clock() and body["aud"] == oauth.fhir_base


async def test_revoked_expired_forged_and_refresh_tokens_are_inactive(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    access = tokens["access_token"]
    forged = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
    for token in (forged, "not-a-token", tokens["refresh_token"]):
        assert (await _introspect(oauth, token)).json() == {"active": False}
    oauth.server.revoke(access)
    assert (await _introspect(oauth, access)).json() == {"active": False}
    fresh = (await oauth.login_tokens())["access_token"]
    oauth.clock.advance(3600)
    assert (await _introspect(oauth, fresh)).json() == {"active": False}


async def test_only_authenticated_confidential_clients_may_introspect(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    wrong = await _introspect(oauth, tokens["access_token"], secret="wrong")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    public = await oauth.http.post("/oauth/introspect", data={
        "token": tokens["access_token"], "client_id": "wardsync-desktop"})
    assert public.status_code == 401 and public.json()["error"] == "invalid_client"
    missing = await oauth.http.post("/oauth/introspect", data={},
                                    auth=(RELAY, oauth.secrets[RELAY]))
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
