"""Sign-in orchestration: discovery, the authorization request, the redirect, the exchange."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import httpx

from wardsync.auth.loopback import LoopbackRedirect
from wardsync.auth.smart import (
    SmartConfiguration,
    TokenSet,
    authorization_request,
    discover,
    exchange_code,
)

# Opens the authorization URL: the system browser in the app (RFC 8252 §6), a scripted
# browser for the demo clinician in the sandbox, the approve form driven by tests.
OpenUrl = Callable[[str], Awaitable[None]]


async def sign_in(
    http: httpx.AsyncClient,
    *,
    fhir_base: str,
    client_id: str,
    scopes: Sequence[str],
    open_url: OpenUrl,
    timeout_s: float = 300.0,
) -> tuple[SmartConfiguration, TokenSet]:
    """Run one SMART standalone launch and return the configuration and the tokens."""
    config = await discover(http, fhir_base)
    async with LoopbackRedirect() as redirect:
        request = authorization_request(
            config, client_id=client_id, redirect_uri=redirect.redirect_uri, scopes=scopes,
            aud=fhir_base,
        )
        redirect.expect_state(request.state)  # before any response can arrive
        await open_url(request.url)
        code = await redirect.wait_for_code(request.state, timeout_s)
    tokens = await exchange_code(http, config, request, client_id=client_id, code=code)
    return config, tokens
