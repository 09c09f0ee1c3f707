"""The sandbox's own realtime token exchange (`POST /realtime/token`, the one a desktop uses
with `wardsync sandbox --no-relay`) follows the relay's rules: the attacks it must refuse."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.sandbox_fixtures import DESKTOP_CLIENT, demo_sign_in, running_sandbox
from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.login import sign_in

ACCESS_TTL_S = 900.0
REALTIME_TTL_S = 3600.0


async def test_the_realtime_token_never_outlives_the_access_token(
    seeded_data_dir: Path, tmp_path: Path
) -> None:
    """Attack: sign out (or let the 900 s access token lapse) and keep the realtime token.
    It used to live 3600 s whatever the access token's remaining life."""
    async with (
        running_sandbox(seeded_data_dir, tmp_path, relay=False, access_token_ttl_s=ACCESS_TTL_S,
                        realtime_token_ttl_s=REALTIME_TTL_S) as sandbox,
        httpx.AsyncClient(timeout=10) as http,
    ):
        token_url = sandbox.ready_info()["ably_token_url"]
        assert token_url == f"{sandbox.base_url}/realtime/token"
        session = await demo_sign_in(sandbox, http)
        try:
            access = session.tokens.access_token
            grant = sandbox.oauth.verify_bearer(access)
            assert grant is not None
            response = await http.post(token_url, headers={"Authorization": f"Bearer {access}"})
            assert response.status_code == 200, response.text
            details = response.json()
            assert details["expires"] <= grant.expires_at * 1000 + 1000
            assert details["expires"] - details["issued"] <= ACCESS_TTL_S * 1000 + 1000
            assert details["expires"] > (time.time() + ACCESS_TTL_S - 60) * 1000
            assert json.loads(details["capability"]) == {
                f"ward:{sandbox.ward}": ["subscribe"], "record:*": ["presence", "subscribe"]}
        finally:
            await session.aclose()


async def test_a_token_with_only_openid_gets_no_realtime_token(
    seeded_data_dir: Path, tmp_path: Path
) -> None:
    """Attack: sign in asking for identity only (`openid fhirUser`, no clinical scope) and
    trade that token for a realtime token: it used to be accepted."""
    async with (
        running_sandbox(seeded_data_dir, tmp_path, relay=False) as sandbox,
        httpx.AsyncClient(timeout=10) as http,
    ):
        _, tokens = await sign_in(
            http, fhir_base=sandbox.fhir_base, client_id=DESKTOP_CLIENT,
            scopes=("openid", "fhirUser"),
            open_url=DemoBrowser(http, username="demo.clinician", password="demo"),
        )
        assert sandbox.oauth.verify_bearer(tokens.access_token) is not None
        response = await http.post(f"{sandbox.base_url}/realtime/token",
                                   headers={"Authorization": f"Bearer {tokens.access_token}"})
        assert response.status_code == 403
        assert response.json() == {"error": "insufficient_scope"}
        assert response.headers["Cache-Control"] == "no-store"
        # And no token at all is a 401 that says why (RFC 6750 §3).
        anonymous = await http.post(f"{sandbox.base_url}/realtime/token")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
