"""The signed-in session: one TokenSet, refreshed ahead of expiry, single-flight.

Many windows and pull loops ask for a token at once; at most one refresh runs and everyone
awaits it (docs/style.md §3, one owner). The refresh token is rotated by the server on every use, so
the new one is saved to the OS keyring before anyone gets the new access token. The access
token itself is never written anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx

from wardsync.auth.smart import SmartConfiguration, TokenSet, refresh
from wardsync.core.errors import SignInError

log = logging.getLogger(__name__)

# Refresh this long before the access token expires so no request goes out with a token that
# expires in flight.
REFRESH_AHEAD_S = 60.0


class Session:
    """A `TokenSource` (see wardsync.fhir.client) for one signed-in user."""

    def __init__(
        self,
        tokens: TokenSet,
        *,
        http: httpx.AsyncClient,
        config: SmartConfiguration,
        client_id: str,
        save_refresh_token: Callable[[str], None] | None = None,
        on_signed_out: Callable[[SignInError], None] | None = None,
        clock: Callable[[], float] = time.time,
        refresh_ahead_s: float = REFRESH_AHEAD_S,
        refresh_fn: Callable[..., Awaitable[TokenSet]] = refresh,
    ) -> None:
        self._tokens = tokens
        self._http = http
        self._config = config
        self._client_id = client_id
        self._save = save_refresh_token
        self._on_signed_out = on_signed_out
        self._clock = clock
        self._ahead = refresh_ahead_s
        self._refresh_fn = refresh_fn
        self._inflight: asyncio.Task[TokenSet] | None = None
        self.refreshes = 0
        self.signed_out: SignInError | None = None

    @property
    def tokens(self) -> TokenSet:
        return self._tokens

    @property
    def user_display_name(self) -> str:
        return self._tokens.display_name

    @property
    def refresh_lead_s(self) -> float:
        """How long before expiry to refresh: the configured lead, but never more than a third
        of the token's lifetime (a 30 s token must not be refreshed before every request)."""
        lifetime = self._tokens.lifetime_s
        return min(self._ahead, lifetime / 3) if lifetime > 0 else self._ahead

    async def access_token(self) -> str:
        if self.signed_out is not None:
            raise self.signed_out
        if self._clock() < self._tokens.expires_at - self.refresh_lead_s:
            return self._tokens.access_token
        return (await self._refresh()).access_token

    async def refresh_after_rejection(self, rejected: str) -> str:
        if self.signed_out is not None:
            raise self.signed_out
        if rejected != self._tokens.access_token:
            return self._tokens.access_token  # someone else already refreshed
        return (await self._refresh()).access_token

    async def _refresh(self) -> TokenSet:
        # One refresh task shared by every caller; a caller that is cancelled does not
        # cancel the refresh the others are waiting for.
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.get_running_loop().create_task(self._do_refresh())
        return await asyncio.shield(self._inflight)

    async def _do_refresh(self) -> TokenSet:
        try:
            new = await self._refresh_fn(
                self._http, self._config, client_id=self._client_id, tokens=self._tokens
            )
        except SignInError as exc:
            if exc.oauth_error in ("invalid_grant", "invalid_client", "unauthorized_client"):
                # The session is over (revoked, rotated elsewhere, expired): stop trying and
                # tell the UI, which asks the user to sign in and keeps unsaved work.
                self.signed_out = exc
                if self._on_signed_out is not None:
                    self._on_signed_out(exc)
            raise
        self.refreshes += 1
        if self._save is not None and new.refresh_token:
            self._save(new.refresh_token)
        self._tokens = new
        return new

    async def aclose(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)

    def replace(self, tokens: TokenSet) -> None:
        """A fresh sign-in for the same session (after a re-login prompt)."""
        self._tokens = tokens
        self.signed_out = None
