"""Arbitrary input never makes the OAuth endpoints fail with a server error."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oauth_driver import REDIRECT_URI, OAuthBed

FIELD_NAMES = [
    "grant_type",
    "code",
    "redirect_uri",
    "client_id",
    "client_secret",
    "code_verifier",
    "refresh_token",
    "scope",
    "token",
    "response_type",
    "state",
    "code_challenge",
    "code_challenge_method",
    "aud",
    "nonce",
    "username",
    "password",
    "decision",
]
FIELD_VALUES = [
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "wardsync-desktop",
    "lab-system",
    "code",
    "S256",
    "plain",
    "approve",
    "deny",
    "demo.clinician",
    "demo",
    REDIRECT_URI,
    "openid offline_access user/*.cruds",
    "system/*.*",
    "A" * 43,
]

names = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=20))
values = st.one_of(st.sampled_from(FIELD_VALUES), st.text(max_size=200))
form_pairs = st.lists(st.tuples(names, values), max_size=12)
raw_bodies = st.binary(max_size=512)
content_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=latin-1",
        "application/json",
        "multipart/form-data; boundary=x",
        "text/plain",
        "",
    ]
)
headers_auth = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(
        lambda s: f"Basic {s}".rstrip()  # h11 refuses trailing header whitespace
    ),
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _post_form(
    http: httpx.AsyncClient, path: str, pairs: list[tuple[str, str]], headers: dict[str, str]
) -> httpx.Response:
    return await http.post(path, content=urlencode(pairs), headers={**FORM, **headers})


FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(pairs=form_pairs, auth=headers_auth, path=st.sampled_from(["/oauth/token", "/oauth/revoke"]))
async def test_token_and_revoke_endpoints_never_fail_on_arbitrary_forms(
    oauth: OAuthBed, pairs: list[tuple[str, str]], auth: str | None, path: str
):
    headers = {"Authorization": auth} if auth else {}
    response = await _post_form(oauth.http, path, pairs, headers)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"], str) and body["error"]


@FUZZ
@given(
    body=raw_bodies,
    content_type=content_types,
    path=st.sampled_from(["/oauth/token", "/oauth/revoke", "/oauth/authorize"]),
)
async def test_endpoints_never_fail_on_arbitrary_bytes(
    oauth: OAuthBed, body: bytes, content_type: str, path: str
):
    response = await oauth.http.post(path, content=body, headers={"Content-Type": content_type})
    assert response.status_code < 500, response.text


@FUZZ
@given(pairs=form_pairs, method=st.sampled_from(["GET", "POST"]))
async def test_authorize_never_fails_on_arbitrary_parameters(
    oauth: OAuthBed, pairs: list[tuple[str, str]], method: str
):
    if method == "GET":
        response = await oauth.http.get("/oauth/authorize", params=pairs)
    else:
        response = await _post_form(oauth.http, "/oauth/authorize", pairs, {})
    assert response.status_code < 500, response.text
    if response.status_code == 302:
        # Only ever to a redirect URI registered for the desktop client.
        assert response.headers["Location"].startswith(("http://127.0.0.1", "http://[::1]"))


@FUZZ
@given(pairs=form_pairs)
async def test_a_valid_authorization_request_with_arbitrary_extras_never_fails(
    oauth: OAuthBed, pairs: list[tuple[str, str]]
):
    _, params = oauth.authorize_params()
    extras = [(k, v) for k, v in pairs if k not in params]
    response = await _post_form(oauth.http, "/oauth/authorize", [*params.items(), *extras], {})
    assert response.status_code < 500, response.text


@FUZZ
@given(
    grant_type=st.sampled_from(["authorization_code", "refresh_token", "client_credentials"]),
    pairs=form_pairs,
    as_lab=st.booleans(),
)
async def test_token_endpoint_never_fails_for_a_known_client_with_arbitrary_fields(
    oauth: OAuthBed, grant_type: str, pairs: list[tuple[str, str]], as_lab: bool
):
    fixed = {"grant_type": grant_type}
    headers: dict[str, str] = {}
    if as_lab:
        raw = f"lab-system:{oauth.secrets['lab-system']}".encode()
        headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    else:
        fixed["client_id"] = "wardsync-desktop"
    # Only the client's own credentials are fixed; every other field is arbitrary.
    extras = [(k, v) for k, v in pairs if k not in (*fixed, "client_id", "client_secret")]
    response = await _post_form(oauth.http, "/oauth/token", [*fixed.items(), *extras], headers)
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400), response.text
