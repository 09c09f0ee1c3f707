"""The SMART standalone launch: authorization code + PKCE driven through the login form."""

from __future__ import annotations

import base64
import json

from oauth_driver import (
    DESKTOP,
    REDIRECT_URI,
    WARD,
    OAuthBed,
    make_pkce,
    read_form,
    redirect_params,
)


def _jwt_payload(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_full_code_flow_issues_a_token_the_fhir_server_accepts(oauth: OAuthBed):
    auth, code = await oauth.login_code()
    response = await oauth.exchange(auth, code)

    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert set(body["scope"].split()) == {
        "openid",
        "fhirUser",
        "offline_access",
        "user/Patient.rs",
        "user/Observation.rs",
    }
    assert body["fhirUser"] == "Practitioner/demo-clinician"
    assert body["fhirContext"] == [{"reference": f"Location/{WARD}"}]
    assert body["refresh_token"]

    grant = oauth.server.verify_bearer(body["access_token"])
    assert grant is not None
    assert grant.subject == "Practitioner/demo-clinician"
    assert grant.client_id == DESKTOP
    assert grant.display_name == "Dr Demo Clinician"
    assert grant.ward == WARD
    assert grant.extra["role"] == "Doctor"
    assert grant.permits("Observation", "r") and grant.permits("Patient", "s")
    assert not grant.permits("Observation", "c")
    assert grant.expires_at == oauth.clock.now + 900

    id_token = _jwt_payload(body["id_token"])
    assert id_token["sub"] == "Practitioner/demo-clinician"
    assert id_token["fhirUser"] == f"{oauth.fhir_base}/Practitioner/demo-clinician"
    assert id_token["name"] == "Dr Demo Clinician"
    assert id_token["aud"] == DESKTOP
    assert id_token["iss"] == oauth.base
    assert id_token["exp"] > oauth.clock.now


async def test_nurse_login_carries_the_nurse_identity(oauth: OAuthBed):
    body = await oauth.login_tokens(username="demo.nurse")
    grant = oauth.server.verify_bearer(body["access_token"])
    assert grant is not None
    assert grant.subject == "Practitioner/demo-nurse"
    assert grant.display_name == "Nurse Demo Nightingale"
    assert grant.extra["role"] == "Nurse"


async def test_the_redirect_names_the_issuer_and_keeps_the_state(oauth: OAuthBed):
    auth, params = oauth.authorize_params()
    got = redirect_params(await oauth.submit_login(params))
    assert got["state"] == auth.state
    assert got["iss"] == oauth.base  # RFC 9207
    assert len(got["code"]) >= 43


async def test_without_openid_or_offline_access_there_is_no_id_or_refresh_token(oauth: OAuthBed):
    body = await oauth.login_tokens(overrides={"scope": "user/Patient.rs"})
    assert "id_token" not in body
    assert "refresh_token" not in body
    assert body["scope"] == "user/Patient.rs"


async def test_nonce_is_echoed_in_the_id_token(oauth: OAuthBed):
    body = await oauth.login_tokens(overrides={"nonce": "n-0S6_WzA2Mj"})
    assert _jwt_payload(body["id_token"])["nonce"] == "n-0S6_WzA2Mj"


async def test_wrong_code_verifier_is_rejected(oauth: OAuthBed):
    auth, code = await oauth.login_code()
    other_verifier, _ = make_pkce()
    response = await oauth.exchange(auth, code, code_verifier=other_verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert response.headers["Cache-Control"] == "no-store"


async def test_missing_code_verifier_is_rejected(oauth: OAuthBed):
    _auth, code = await oauth.login_code()
    response = await oauth.http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "client_id": DESKTOP,
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_plain_pkce_method_is_refused_at_the_authorize_endpoint(oauth: OAuthBed):
    auth, params = oauth.authorize_params(code_challenge_method="plain")
    params["code_challenge"] = auth.verifier  # what plain would send
    response = await oauth.http.get("/oauth/authorize", params=params)
    got = redirect_params(response)
    assert got["error"] == "invalid_request"
    assert "S256" in got["error_description"]
    assert got["state"] == auth.state
    assert "code" not in got


async def test_missing_pkce_is_refused(oauth: OAuthBed):
    _, params = oauth.authorize_params(code_challenge=None, code_challenge_method=None)
    got = redirect_params(await oauth.http.get("/oauth/authorize", params=params))
    assert got["error"] == "invalid_request"


async def test_missing_state_is_refused(oauth: OAuthBed):
    _, params = oauth.authorize_params(state=None)
    got = redirect_params(await oauth.http.get("/oauth/authorize", params=params))
    assert got["error"] == "invalid_request"
    assert "state" not in got


async def test_other_response_types_are_refused(oauth: OAuthBed):
    _, params = oauth.authorize_params(response_type="token")
    got = redirect_params(await oauth.http.get("/oauth/authorize", params=params))
    assert got["error"] == "unsupported_response_type"


async def test_aud_must_be_this_fhir_base(oauth: OAuthBed):
    _, params = oauth.authorize_params(aud="https://elsewhere.example/fhir")
    got = redirect_params(await oauth.http.get("/oauth/authorize", params=params))
    assert got["error"] == "invalid_request"
    assert "aud" in got["error_description"]
    # ...and omitting aud is allowed.
    body = await oauth.login_tokens(overrides={"aud": None})
    assert oauth.server.verify_bearer(body["access_token"]) is not None


async def test_reused_code_is_rejected_and_revokes_what_it_issued(oauth: OAuthBed):
    auth, code = await oauth.login_code()
    first = await oauth.exchange(auth, code)
    assert first.status_code == 200
    tokens = first.json()
    assert oauth.server.verify_bearer(tokens["access_token"]) is not None

    second = await oauth.exchange(auth, code)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: the tokens issued from the code are revoked too.
    assert oauth.server.verify_bearer(tokens["access_token"]) is None
    refreshed = await oauth.refresh(tokens["refresh_token"])
    assert refreshed.status_code == 400
    assert refreshed.json()["error"] == "invalid_grant"


async def test_redirect_uri_must_match_at_the_token_endpoint(oauth: OAuthBed):
    auth, code = await oauth.login_code()
    response = await oauth.exchange(auth, code, redirect_uri="http://127.0.0.1:53124/callback")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert "redirect_uri" in response.json()["error_description"]


async def test_loopback_redirect_accepts_any_port(oauth: OAuthBed):
    for uri in ("http://127.0.0.1:1/callback", "http://[::1]:65535/callback"):
        _auth, params = oauth.authorize_params(redirect_uri=uri)
        response = await oauth.submit_login(params)
        assert response.status_code == 302
        assert response.headers["Location"].startswith(uri + "?")


async def test_unregistered_redirect_uri_is_shown_as_a_page_never_redirected(oauth: OAuthBed):
    for bad in (
        "https://attacker.example/callback",
        "http://localhost:53123/callback",  # RFC 8252 §8.3: IP literals only
        "http://127.0.0.1:53123/other",
        "not a uri",
    ):
        _, params = oauth.authorize_params(redirect_uri=bad)
        response = await oauth.http.get("/oauth/authorize", params=params)
        assert response.status_code == 400, bad
        assert "Location" not in response.headers
        assert "redirect_uri" in response.text
        assert response.headers["X-Frame-Options"] == "DENY"


async def test_unknown_client_is_shown_as_a_page_never_redirected(oauth: OAuthBed):
    _, params = oauth.authorize_params(client_id="evil-app")
    response = await oauth.http.get("/oauth/authorize", params=params)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "client_id" in response.text
    # A confidential system client has no redirect URIs at all.
    _, params = oauth.authorize_params(client_id="lab-system")
    response = await oauth.http.get("/oauth/authorize", params=params)
    assert response.status_code == 400
    assert "Location" not in response.headers


async def test_wrong_password_shows_the_form_again_with_a_message(oauth: OAuthBed):
    auth, params = oauth.authorize_params()
    response = await oauth.submit_login(params, password="not-the-password")
    assert response.status_code == 200
    assert "Location" not in response.headers
    form = read_form(response.text)
    assert any("wrong password" in e for e in form.errors)
    # The form still carries the request, so a second try with the right password works.
    assert form.fields["state"] == auth.state
    assert form.fields["username"] == "demo.clinician"
    retry = await oauth.http.post(
        "/oauth/authorize",
        data={**form.fields, "password": "demo", "decision": "approve"},
    )
    got = redirect_params(retry)
    assert got["state"] == auth.state and got["code"]


async def test_unknown_user_gets_the_same_message_as_a_wrong_password(oauth: OAuthBed):
    _, params = oauth.authorize_params()
    response = await oauth.submit_login(params, username="nobody")
    assert response.status_code == 200
    assert any("wrong password" in e for e in read_form(response.text).errors)


async def test_deny_redirects_with_access_denied(oauth: OAuthBed):
    auth, params = oauth.authorize_params()
    got = redirect_params(await oauth.submit_login(params, password="", decision="deny"))
    assert got["error"] == "access_denied"
    assert got["state"] == auth.state
    assert "code" not in got


async def test_scope_is_narrowed_to_what_the_client_may_have(oauth: OAuthBed):
    requested = "openid user/Observation.rs system/Observation.cruds launch/patient bogus"
    body = await oauth.login_tokens(overrides={"scope": requested})
    assert body["scope"].split() == ["openid", "user/Observation.rs"]
    grant = oauth.server.verify_bearer(body["access_token"])
    assert grant is not None
    assert grant.scopes == frozenset({"openid", "user/Observation.rs"})


async def test_nothing_grantable_is_invalid_scope(oauth: OAuthBed):
    auth, params = oauth.authorize_params(scope="system/Observation.cruds")
    got = redirect_params(await oauth.http.get("/oauth/authorize", params=params))
    assert got["error"] == "invalid_scope"
    assert got["state"] == auth.state


async def test_code_expires_after_a_minute(oauth: OAuthBed):
    auth, code = await oauth.login_code()
    oauth.clock.advance(61)
    response = await oauth.exchange(auth, code)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


async def test_a_system_client_cannot_redeem_a_users_code(oauth: OAuthBed):
    auth, code = await oauth.login_code()
    response = await oauth.http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": auth.verifier,
        },
        auth=("lab-system", oauth.secrets["lab-system"]),
    )
    assert response.status_code == 400
    # The lab system is not allowed this grant at all.
    assert response.json()["error"] == "unauthorized_client"
    # The code is still good for its own client.
    assert (await oauth.exchange(auth, code)).status_code == 200


async def test_tampered_form_fields_are_revalidated_on_post(oauth: OAuthBed):
    _, params = oauth.authorize_params()
    page = await oauth.http.get("/oauth/authorize", params=params)
    form = read_form(page.text)
    data = {
        **form.fields,
        "redirect_uri": "https://attacker.example/callback",
        "username": "demo.clinician",
        "password": "demo",
        "decision": "approve",
    }
    response = await oauth.http.post("/oauth/authorize", data=data)
    assert response.status_code == 400
    assert "Location" not in response.headers


async def test_a_redirect_uri_a_browser_reads_as_another_host_gets_no_code(oauth: OAuthBed):
    """The attack: urlsplit sees 127.0.0.1, a browser sees evil.example (WHATWG treats "\\"
    as "/"), so the code would go to whoever holds the PKCE verifier. Neither the authorize
    page nor a forged form post redirects anywhere."""
    evil = "http://evil.example\\@127.0.0.1:53123/callback"
    auth, params = oauth.authorize_params(redirect_uri=evil)
    page = await oauth.http.get("/oauth/authorize", params=params)
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert "redirect_uri" in page.text

    form_post = await oauth.http.post("/oauth/authorize", data={
        **params, "username": "demo.clinician", "password": "demo", "decision": "approve",
    })
    assert form_post.status_code == 400
    assert "Location" not in form_post.headers
    assert auth.state not in form_post.text


async def test_error_redirects_keep_the_registered_query_and_encode_every_value(oauth: OAuthBed):
    _auth, params = oauth.authorize_params(
        redirect_uri="http://127.0.0.1:53123/callback", state="s&code=forged#x",
        code_challenge_method="plain",
    )
    response = await oauth.http.get("/oauth/authorize", params=params)
    got = redirect_params(response)
    assert got["state"] == "s&code=forged#x"
    assert "code" not in got
    assert got["error"] == "invalid_request"
    assert "#" not in response.headers["Location"]
