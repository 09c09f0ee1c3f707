"""Refresh-token rotation, theft detection, session lifetime and persistence across restarts."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
from oauth_driver import FakeClock, OAuthBed, build_server, start_oauth_app


async def test_refresh_rotates_the_refresh_token(oauth: OAuthBed):
    first = await oauth.login_tokens()
    oauth.clock.advance(600)

    response = await oauth.refresh(first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"]
    assert second["fhirContext"] == first["fhirContext"]
    grant = oauth.server.verify_bearer(second["access_token"])
    assert grant is not None
    assert grant.subject == "Practitioner/demo-clinician"
    assert grant.expires_at == oauth.clock.now + 900

    # The new refresh token works in turn.
    third = await oauth.refresh(second["refresh_token"])
    assert third.status_code == 200
    assert third.json()["refresh_token"] not in (first["refresh_token"], second["refresh_token"])


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(oauth: OAuthBed):
    first = await oauth.login_tokens()
    second = (await oauth.refresh(first["refresh_token"])).json()
    assert oauth.server.verify_bearer(second["access_token"]) is not None

    # An attacker (or a confused client) replays the old token.
    replay = await oauth.refresh(first["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"

    # RFC 9700 §4.14.2: the legitimate holder's current tokens die too.
    assert oauth.server.verify_bearer(second["access_token"]) is None
    assert oauth.server.verify_bearer(first["access_token"]) is None
    after = await oauth.refresh(second["refresh_token"])
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"


async def test_theft_of_one_session_leaves_other_sessions_alone(oauth: OAuthBed):
    victim = await oauth.login_tokens()
    other = await oauth.login_tokens()
    await oauth.refresh(victim["refresh_token"])
    await oauth.refresh(victim["refresh_token"])  # reuse: victim's family revoked
    assert oauth.server.verify_bearer(other["access_token"]) is not None
    assert (await oauth.refresh(other["refresh_token"])).status_code == 200


async def test_refresh_may_narrow_the_scope_but_never_widen_it(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    narrowed = await oauth.refresh(tokens["refresh_token"], scope="user/Patient.rs")
    assert narrowed.status_code == 200
    body = narrowed.json()
    assert body["scope"] == "user/Patient.rs"
    grant = oauth.server.verify_bearer(body["access_token"])
    assert grant is not None and grant.scopes == frozenset({"user/Patient.rs"})

    # The family keeps the original grant: the next refresh may return to it...
    full = await oauth.refresh(body["refresh_token"])
    assert full.status_code == 200
    assert "user/Observation.rs" in full.json()["scope"].split()
    # ...but not go beyond it.
    wider = await oauth.refresh(full.json()["refresh_token"], scope="user/Observation.cruds")
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_scope"


async def test_session_ends_after_the_refresh_lifetime(oauth: OAuthBed):
    tokens = await oauth.login_tokens()
    # Rotation does not extend the session: keep refreshing until the shift is over.
    refresh_token = tokens["refresh_token"]
    for _ in range(7):
        oauth.clock.advance(3600)
        response = await oauth.refresh(refresh_token)
        assert response.status_code == 200
        refresh_token = response.json()["refresh_token"]
    oauth.clock.advance(3601)
    expired = await oauth.refresh(refresh_token)
    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"


async def test_unknown_refresh_token_is_invalid_grant(oauth: OAuthBed):
    response = await oauth.refresh(secrets.token_urlsafe(32))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_revoke_user_sessions_ends_every_session_of_that_user(oauth: OAuthBed):
    a = await oauth.login_tokens()
    b = await oauth.login_tokens()
    nurse = await oauth.login_tokens(username="demo.nurse")

    assert oauth.server.revoke_user_sessions("demo.clinician") == 2

    for tokens in (a, b):
        assert oauth.server.verify_bearer(tokens["access_token"]) is None
        assert (await oauth.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    assert oauth.server.verify_bearer(nurse["access_token"]) is not None
    assert (await oauth.refresh(nurse["refresh_token"])).status_code == 200
    assert oauth.server.revoke_user_sessions("demo.clinician") == 0


async def test_sessions_and_revocations_survive_a_restart(tmp_path: Path, client_secrets):
    """Same key and data directory: tokens keep working, revoked ones stay revoked."""
    db = tmp_path / "oauth.sqlite3"
    key = secrets.token_bytes(32)
    clock = FakeClock()
    holder: dict[str, str] = {}

    server = build_server(clock, holder, client_secrets, signing_key=key, db_path=db)
    runner, holder["base"] = await start_oauth_app(server)
    try:
        async with httpx.AsyncClient(base_url=holder["base"]) as http:
            bed = OAuthBed(server, http, clock, holder["base"], client_secrets)
            kept = await bed.login_tokens()
            revoked = await bed.login_tokens(username="demo.nurse")
            assert server.revoke(revoked["refresh_token"]) is True
    finally:
        await runner.cleanup()

    restarted = build_server(clock, holder, client_secrets, signing_key=key, db_path=db)
    runner, holder["base"] = await start_oauth_app(restarted)
    try:
        async with httpx.AsyncClient(base_url=holder["base"]) as http:
            bed = OAuthBed(restarted, http, clock, holder["base"], client_secrets)
            assert restarted.verify_bearer(kept["access_token"]) is not None
            assert restarted.verify_bearer(revoked["access_token"]) is None
            assert (await bed.refresh(kept["refresh_token"])).status_code == 200
            assert (await bed.refresh(revoked["refresh_token"])).status_code == 400
    finally:
        await runner.cleanup()

    # A different key: nothing issued before verifies.
    stranger = build_server(
        clock, holder, client_secrets, signing_key=secrets.token_bytes(32), db_path=db
    )
    try:
        assert stranger.verify_bearer(kept["access_token"]) is None
    finally:
        stranger.close()
