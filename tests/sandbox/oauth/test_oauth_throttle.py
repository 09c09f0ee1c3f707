"""Sign-in throttling on the login form: per account and per address, with a clear message,
on the server's fake clock (oauth/throttle.py)."""

from __future__ import annotations

import httpx
from oauth_driver import OAuthBed, read_form, redirect_params

from wardsync.sandbox.oauth.throttle import (
    MAX_FAILURES_PER_ACCOUNT,
    MAX_FAILURES_PER_ADDRESS,
    WINDOW_S,
)


async def _guess(oauth: OAuthBed, username: str, password: str,
                 http: httpx.AsyncClient | None = None) -> httpx.Response:
    _, params = oauth.authorize_params()
    if http is None:
        return await oauth.submit_login(params, username=username, password=password)
    page = await http.get("/oauth/authorize", params=params)
    data = {**read_form(page.text).fields, "username": username, "password": password,
            "decision": "approve"}
    return await http.post("/oauth/authorize", data=data)


async def test_guessing_one_accounts_password_is_stopped(oauth: OAuthBed) -> None:
    """Attack: try passwords for demo.clinician until one works. It used to be unlimited."""
    for i in range(MAX_FAILURES_PER_ACCOUNT):
        response = await _guess(oauth, "demo.clinician", f"guess-{i}")
        assert response.status_code == 200, f"attempt {i} is an ordinary failure"
    # The next attempt is refused, even with the right password: the lock answers nothing.
    refused = await _guess(oauth, "demo.clinician", "demo")
    assert refused.status_code == 429
    assert "Location" not in refused.headers
    assert int(refused.headers["Retry-After"]) == WINDOW_S
    [message] = read_form(refused.text).errors
    assert message.startswith("Too many failed sign-ins for this account. Try again in 15 ")
    # Another account from the same address is not affected by this account's lock.
    assert (await _guess(oauth, "demo.nurse", "demo")).status_code == 302

    oauth.clock.advance(WINDOW_S - 1)
    still = await _guess(oauth, "demo.clinician", "demo")
    assert still.status_code == 429 and still.headers["Retry-After"] == "1"
    oauth.clock.advance(1)
    assert redirect_params(await _guess(oauth, "demo.clinician", "demo"))["code"]


async def test_a_success_clears_the_accounts_failures(oauth: OAuthBed) -> None:
    for _ in range(MAX_FAILURES_PER_ACCOUNT - 1):
        await _guess(oauth, "demo.clinician", "typo")
    assert (await _guess(oauth, "demo.clinician", "demo")).status_code == 302
    for _ in range(MAX_FAILURES_PER_ACCOUNT - 1):
        assert (await _guess(oauth, "demo.clinician", "typo")).status_code == 200
    assert (await _guess(oauth, "demo.clinician", "demo")).status_code == 302


async def test_spraying_many_names_from_one_address_is_stopped(oauth: OAuthBed) -> None:
    """Attack: one guess per made-up name, from one address, to dodge the account limit."""
    for i in range(MAX_FAILURES_PER_ADDRESS):
        assert (await _guess(oauth, f"user{i}", "demo")).status_code == 200
    refused = await _guess(oauth, "demo.nurse", "demo")
    assert refused.status_code == 429
    [message] = read_form(refused.text).errors
    assert "for this computer" in message
    # Another address (127.0.0.2 is loopback too) signs in as usual.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=oauth.base, transport=transport) as other:
        assert (await _guess(oauth, "demo.nurse", "demo", http=other)).status_code == 302
