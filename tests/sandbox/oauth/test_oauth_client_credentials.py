"""client_credentials for the laboratory system and ward devices (RFC 6749 §4.4, §2.3.1)."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

from oauth_driver import WARD, OAuthBed

LAB_SCOPES = {
    "system/Observation.cru",
    "system/DiagnosticReport.cru",
    "system/Patient.rs",
    "system/Encounter.rs",
}


def _basic(client_id: str, secret: str) -> dict[str, str]:
    # RFC 6749 §2.3.1: each part form-urlencoded, then base64 of "id:secret".
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


async def test_client_secret_basic(oauth: OAuthBed):
    response = await oauth.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=_basic("lab-system", oauth.secrets["lab-system"]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == LAB_SCOPES
    assert "refresh_token" not in body  # RFC 6749 §4.4.3
    grant = oauth.server.verify_bearer(body["access_token"])
    assert grant is not None
    assert grant.subject == "lab-system"
    assert grant.client_id == "lab-system"
    assert grant.ward == WARD
    assert grant.permits("DiagnosticReport", "c") and grant.permits("Observation", "u")
    assert not grant.permits("Observation", "d")
    assert not grant.permits("Location", "r")


async def test_client_secret_post(oauth: OAuthBed):
    response = await oauth.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "ward-devices",
            "client_secret": oauth.secrets["ward-devices"],
            "scope": "system/Observation.cru system/Location.rs",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Observation.cru system/Location.rs"
    grant = oauth.server.verify_bearer(response.json()["access_token"])
    assert grant is not None and grant.subject == "ward-devices"
    assert grant.permits("Location", "s") and not grant.permits("DiagnosticReport", "r")


async def test_wrong_secret_is_401_invalid_client(oauth: OAuthBed):
    for kwargs in (
        {"headers": _basic("lab-system", "guess")},
        {"headers": _basic("no-such-client", "guess")},
        {"data_extra": {"client_id": "lab-system", "client_secret": "guess"}},
        {"data_extra": {"client_id": "lab-system"}},  # confidential client without a secret
        {"data_extra": {}},  # no client at all
        {"headers": {"Authorization": "Basic !!!not-base64"}},
    ):
        data = {"grant_type": "client_credentials", **kwargs.get("data_extra", {})}
        response = await oauth.http.post(
            "/oauth/token", data=data, headers=kwargs.get("headers", {})
        )
        assert response.status_code == 401, kwargs
        assert response.json()["error"] == "invalid_client"
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert response.headers["Cache-Control"] == "no-store"
        assert oauth.secrets["lab-system"] not in response.text


async def test_two_authentication_methods_at_once_are_refused(oauth: OAuthBed):
    secret = oauth.secrets["lab-system"]
    response = await oauth.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_secret": secret},
        headers=_basic("lab-system", secret),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_scope_is_narrowed_to_what_the_lab_may_have(oauth: OAuthBed):
    response = await oauth.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/Observation.cruds system/*.rs user/Patient.rs",
        },
        headers=_basic("lab-system", oauth.secrets["lab-system"]),
    )
    assert response.status_code == 200, response.text
    granted = response.json()["scope"].split()
    # .cruds narrowed to .cru; system/*.rs expanded to the readable types it may see.
    assert granted[0] == "system/Observation.cru"
    assert set(granted) == {
        "system/Observation.cru",
        "system/Observation.r",
        "system/DiagnosticReport.r",
        "system/Patient.rs",
        "system/Encounter.rs",
    }
    grant = oauth.server.verify_bearer(response.json()["access_token"])
    assert grant is not None and not grant.permits("Observation", "d")


async def test_scope_with_nothing_allowed_is_invalid_scope(oauth: OAuthBed):
    response = await oauth.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "system/Location.cruds"},
        headers=_basic("lab-system", oauth.secrets["lab-system"]),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


async def test_public_desktop_client_cannot_use_client_credentials(oauth: OAuthBed):
    response = await oauth.http.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": "wardsync-desktop"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


async def test_lab_cannot_use_the_code_grant(oauth: OAuthBed):
    response = await oauth.http.post(
        "/oauth/token",
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": "x"},
        headers=_basic("lab-system", oauth.secrets["lab-system"]),
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
