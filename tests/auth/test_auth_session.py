"""SMART sign-in through the loopback redirect, single-flight refresh, revocation, keyring."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, urlsplit

import httpx
import keyring
import pytest

from tests.sandbox_fixtures import DESKTOP_CLIENT, SCOPES, demo_sign_in
from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.keyring_store import SHARD_CHARS, RefreshTokenStore
from wardsync.auth.login import sign_in
from wardsync.auth.loopback import LoopbackRedirect
from wardsync.auth.session import Session
from wardsync.core.errors import SignInError
from wardsync.fhir.client import FhirClient
from wardsync.fhir.errors import AuthError
from wardsync.sandbox.server import Sandbox


async def test_sign_in_through_loopback_redirect(sandbox: Sandbox, http: httpx.AsyncClient):
    session = await demo_sign_in(sandbox, http)
    tokens = session.tokens
    assert tokens.fhir_user == "Practitioner/demo-clinician"
    assert tokens.practitioner_id == "demo-clinician"
    assert tokens.display_name == "Dr Demo Clinician"
    assert tokens.ward == sandbox.ward
    assert tokens.refresh_token and "offline_access" in tokens.scope
    grant = sandbox.oauth.verify_bearer(await session.access_token())
    assert grant is not None and grant.subject == "Practitioner/demo-clinician"


async def test_denied_sign_in_is_a_clear_error(sandbox: Sandbox, http: httpx.AsyncClient):
    with pytest.raises(SignInError) as err:
        await sign_in(
            http, fhir_base=sandbox.fhir_base, client_id=DESKTOP_CLIENT, scopes=SCOPES,
            open_url=DemoBrowser(http, username="demo.nurse", password="demo",
                                 decision="deny"),
        )
    assert err.value.oauth_error == "access_denied"


async def test_many_concurrent_callers_share_one_refresh(
    sandbox: Sandbox, http: httpx.AsyncClient
):
    session = await demo_sign_in(sandbox, http)
    saved: list[str] = []
    now = [0.0]
    s = Session(session.tokens, http=http, config=session._config, client_id=DESKTOP_CLIENT,
                save_refresh_token=saved.append, clock=lambda: now[0])
    old_access, old_refresh = s.tokens.access_token, s.tokens.refresh_token
    now[0] = s.tokens.expires_at  # every caller now needs a fresh token
    results = await asyncio.gather(*(s.access_token() for _ in range(50)))
    assert s.refreshes == 1
    assert len(set(results)) == 1 and results[0] != old_access
    # Rotation: the new refresh token was saved; the old one no longer works.
    assert saved == [s.tokens.refresh_token] and saved[0] != old_refresh
    resp = await http.post(sandbox.token_url, data={
        "grant_type": "refresh_token", "refresh_token": old_refresh, "client_id": DESKTOP_CLIENT})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    await s.aclose()


async def test_rejected_token_after_refresh_elsewhere_is_not_refreshed_twice(
    clinician: Session,
):
    current = await clinician.access_token()
    assert await clinician.refresh_after_rejection("an-older-token") == current
    assert clinician.refreshes == 0


async def test_revoked_session_signs_out_and_fhir_says_sign_in_again(
    sandbox: Sandbox, http: httpx.AsyncClient
):
    session = await demo_sign_in(sandbox, http)
    signed_out: list[SignInError] = []
    s = Session(session.tokens, http=http, config=session._config, client_id=DESKTOP_CLIENT,
                on_signed_out=signed_out.append)
    assert sandbox.oauth.revoke_user_sessions("demo.clinician") >= 1
    client = FhirClient(sandbox.fhir_base, s, http=http)
    with pytest.raises(AuthError) as err:
        await client.read("Patient", "pat-01")
    assert "sign in again" in err.value.user_message
    assert len(signed_out) == 1 and signed_out[0].oauth_error == "invalid_grant"
    with pytest.raises(SignInError):
        await s.access_token()  # no retry storm: the session stays signed out
    await s.aclose()


async def test_loopback_redirect_checks_state_and_ignores_other_paths():
    async with LoopbackRedirect() as redirect, httpx.AsyncClient() as http:
        other = await http.get(f"http://127.0.0.1:{redirect.port}/favicon.ico")
        assert other.status_code == 404
        early = await http.get(f"{redirect.redirect_uri}?code=abc&state=expected-state")
        assert early.status_code == 400, "nothing is accepted before the state is known"
        redirect.expect_state("expected-state")
        page = await http.get(f"{redirect.redirect_uri}?code=abc&state=forged")
        assert page.status_code == 400
        ok = await http.get(f"{redirect.redirect_uri}?code=good&state=expected-state")
        assert ok.status_code == 200
        assert await redirect.wait_for_code("expected-state", timeout_s=5) == "good"
        assert redirect.refused == 2


@pytest.mark.parametrize("forged_query", [
    "error=access_denied",  # no state at all
    "error=access_denied&state=guess",
    "code=attacker-code&state=guess",
    "code=attacker-code&state=",
])
async def test_a_local_process_cannot_abort_or_hijack_a_sign_in(
    sandbox: Sandbox, http: httpx.AsyncClient, forged_query: str
) -> None:
    """Attack: another local process sends a callback to the listener's port while the user
    is signing in in the browser. Before the fix the first request completed the sign-in
    (aborting it, or feeding it the attacker's code)."""
    browser = DemoBrowser(http, username="demo.clinician", password="demo")
    answers: list[int] = []

    async def attacker_then_browser(url: str) -> None:
        query = dict(parse_qsl(urlsplit(url).query))
        forged = await http.get(f"{query['redirect_uri']}?{forged_query}")
        answers.append(forged.status_code)
        await browser(url)

    _, tokens = await sign_in(
        http, fhir_base=sandbox.fhir_base, client_id=DESKTOP_CLIENT, scopes=SCOPES,
        open_url=attacker_then_browser, timeout_s=10,
    )
    assert answers == [400]
    assert tokens.fhir_user == "Practitioner/demo-clinician"


def test_refresh_token_is_sharded_in_the_real_keyring():
    backend = keyring.get_keyring()
    assert "SecretService" in type(backend).__module__, "tests run with gnome-keyring"
    store = RefreshTokenStore("test-user@ward-7a", service="WardSync-test")
    secret = "r" * (SHARD_CHARS * 4 + 17)  # five shards, each under Windows' 2560-byte limit
    store.save(secret)
    assert backend.get_password("WardSync-test", "test-user@ward-7a#n") == "5"
    assert all(
        len(backend.get_password("WardSync-test", f"test-user@ward-7a#{i}")) <= SHARD_CHARS
        for i in range(5)
    )
    assert RefreshTokenStore("test-user@ward-7a", service="WardSync-test").load() == secret
    store.save("short")  # rotation to a shorter token removes the extra shards
    assert store.load() == "short"
    assert backend.get_password("WardSync-test", "test-user@ward-7a#1") is None
    store.delete()
    assert store.load() is None


async def test_short_tokens_are_refreshed_a_third_before_expiry_not_on_every_call(
    clinician: Session, http: httpx.AsyncClient
) -> None:
    from wardsync.auth.smart import TokenSet

    now = [1000.0]
    t = clinician.tokens
    short = TokenSet(access_token=t.access_token, expires_at=now[0] + 30,
                     refresh_token=t.refresh_token, lifetime_s=30.0)
    s = Session(short, http=http, config=clinician._config, client_id=DESKTOP_CLIENT,
                clock=lambda: now[0])
    assert s.refresh_lead_s == 10.0
    now[0] += 19.0
    await s.access_token()
    assert s.refreshes == 0  # 11 s left: still good
    now[0] += 2.0
    await s.access_token()
    assert s.refreshes == 1  # inside the last third: refreshed once
    await s.aclose()
