"""What one signed-in workstation process owns, assembled from settings (no widgets here).

Demo mode (no FHIR server configured, or `--demo`): the embedded sandbox runs as a child
process and the demo clinician is signed in through the sandbox's SMART flow. Hospital mode:
the configured FHIR server, a session restored from the OS keyring when possible, otherwise a
sign-in in the system browser (RFC 8252).

Critical-result alerts: the workstation's `AlertCenter` starts with the sync stack and stops
before it. The site's critical limits replace the built-in ones test by test; the escalation
window is `alerts.escalation_after_min`, except that the demo uses `DEMO_ESCALATION_AFTER_MIN`
unless that setting was given, so escalation can be seen within minutes. Sign-in asks for
`auth.scopes` exactly (the built-in list includes what acknowledgements, escalations and edits
write; a site list without them shows those writes as not recorded).

Two phases: the backend (HTTP client, demo sandbox) lives as long as the app; the session (the
signed-in user's tokens, sync stack, alerts, audit trail) ends at "switch user", which drops all
in-memory clinical data, leaves presence and closes the realtime connection before the next
user signs in.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import webbrowser
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from wardsync._version import __version__
from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.keyring_store import KeyringUnavailable, RefreshTokenStore
from wardsync.auth.login import OpenUrl, sign_in
from wardsync.auth.session import Session
from wardsync.auth.smart import TokenSet, discover, refresh
from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS
from wardsync.core.errors import SignInError
from wardsync.core.metrics import MetricsSink
from wardsync.fhir.client import tls_context
from wardsync.infra.sandbox_process import SandboxProcess
from wardsync.infra.settings import DEFAULT_SOURCE, Settings
from wardsync.sync.alerts import AlertCenter, Clinician
from wardsync.sync.audit import AuditTrail
from wardsync.sync.edits import RecordEdits
from wardsync.sync.presence import PresenceService, identity_from_tokens
from wardsync.sync.workstation import Workstation, WorkstationConfig

log = logging.getLogger(__name__)

DEMO_USER = "demo.clinician"
DEMO_PASSWORD = "demo"
DEMO_ESCALATION_AFTER_MIN = 2.0


@dataclass(frozen=True)
class Backend:
    """Where the servers are, as the app uses them."""

    fhir_base: str
    ward: str
    realtime_endpoint: str | None
    realtime_token_url: str | None
    demo: bool


def workstation_config(settings: Settings, backend: Backend, *, verify: Any = True
                       ) -> WorkstationConfig:
    """The sync stack's configuration for `backend` from the app's settings: one definition
    for the app and for the headless stations of benchmarks and tools. A backend without a
    realtime endpoint gives a polling-only workstation."""
    s = settings
    return WorkstationConfig(
        fhir_base=backend.fhir_base, ward=backend.ward,
        realtime_endpoint=backend.realtime_endpoint,
        realtime_token_url=backend.realtime_token_url,
        polling_interval_s=s["sync.polling_interval_s"],
        degraded_after_s=s["sync.degraded_after_s"], gap_grace_s=s["sync.gap_grace_s"],
        pull_debounce_s=s["sync.pull_debounce_ms"] / 1000.0,
        backoff_cap_s=s["sync.backoff_cap_s"], fhir_timeout_s=s["fhir.timeout_s"],
        vitals_window_h=s["ui.vitals_window_h"],
        require_tls=s["security.require_tls"], verify=verify,
    )


async def _system_browser(url: str) -> None:
    await asyncio.to_thread(webbrowser.open, url)


class AppServices:
    """The demo sandbox child, the HTTP client, and the signed-in user's session and sync stack."""

    def __init__(self, settings: Settings, metrics: MetricsSink, *, demo: bool,
                 open_url: OpenUrl | None = None,
                 on_signed_out: Callable[[SignInError], None] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.demo = demo
        self._open_url = open_url or _system_browser
        self._on_signed_out = on_signed_out
        self.sandbox: SandboxProcess | None = None
        self.backend: Backend | None = None
        self.http: httpx.AsyncClient | None = None
        self.session: Session | None = None
        self.workstation: Workstation | None = None
        self.alerts: AlertCenter | None = None
        self.audit: AuditTrail | None = None
        self.presence: PresenceService | None = None
        self.edits: RecordEdits | None = None
        self.keyring_message: str = ""
        self.workstation_name = platform.node() or "workstation"
        self._verify: Any = True

    @property
    def user_name(self) -> str:
        return self.session.user_display_name if self.session else ""

    @property
    def demo_users(self) -> list[dict[str, str]]:
        """The sandbox's demo accounts (demo mode only), for the switch-user choice."""
        return list(self.sandbox.info.get("demo_users", [])) if self.sandbox else []

    def sign_in_scopes(self) -> tuple[str, ...]:
        return tuple(self.settings["auth.scopes"])

    def escalation_after_s(self) -> float:
        """The site's escalation window in seconds (shorter in the demo unless configured)."""
        key = "alerts.escalation_after_min"
        minutes = self.settings[key]
        if self.demo and self.settings.source_of(key) == DEFAULT_SOURCE:
            minutes = DEMO_ESCALATION_AFTER_MIN
        return float(minutes) * 60.0

    async def start(self, schedule: Callable[[Callable[[], None]], Any] | None = None,
                    progress: Callable[[str], Awaitable[None] | None] | None = None,
                    *, username: str = DEMO_USER) -> None:
        """Backend, then a session; raises SignInError / SandboxStartError / FhirError."""
        await self.start_backend(progress)
        await self.start_session(schedule, progress, username=username)

    async def start_backend(
        self, progress: Callable[[str], Awaitable[None] | None] | None = None
    ) -> None:
        s = self.settings
        self._verify = tls_context(str(s["fhir.ca_bundle"]) if s["fhir.ca_bundle"] else None)
        self.http = httpx.AsyncClient(timeout=s["fhir.timeout_s"], verify=self._verify)
        if self.demo:
            await _say(progress, "Starting the demo server (synthetic data)…")
            self.sandbox = await SandboxProcess.start()
            info = self.sandbox.info
            self.metrics.emit("sandbox_ready", sandbox=self.sandbox.public_info)
            self.backend = Backend(info["fhir_base"], info["ward"], info["ably_endpoint"],
                                   info["ably_token_url"], demo=True)

    def use_backend(self, backend: Backend, http: httpx.AsyncClient | None = None) -> None:
        """Servers that already run (a benchmark driver's or a test's sandbox) instead of
        `start_backend`: no demo child is started; `http` defaults to a client built from the
        settings, as `start_backend` builds it."""
        s = self.settings
        self._verify = tls_context(str(s["fhir.ca_bundle"]) if s["fhir.ca_bundle"] else None)
        self.http = http or httpx.AsyncClient(timeout=s["fhir.timeout_s"], verify=self._verify)
        self.backend = backend

    async def sign_in(self, *, username: str = DEMO_USER, interactive: bool = False
                      ) -> Session:
        """A sign-in (demo: as `username`; hospital: the stored session, unless `interactive`
        asks for the browser — unlocking and switching user always re-authenticate)."""
        assert self.http is not None
        s = self.settings
        if self.demo:
            assert self.backend is not None
            password = next((u.get("password", DEMO_PASSWORD) for u in self.demo_users
                             if u.get("username") == username), DEMO_PASSWORD)
            config, tokens = await sign_in(
                self.http, fhir_base=self.backend.fhir_base, client_id=s["auth.client_id"],
                scopes=self.sign_in_scopes(),
                open_url=DemoBrowser(self.http, username=username, password=password),
            )
            return Session(tokens, http=self.http, config=config, client_id=s["auth.client_id"],
                           on_signed_out=self._on_signed_out)
        return await self._hospital_session(s["fhir.base_url"], use_stored=not interactive)

    async def start_session(self, schedule: Callable[[Callable[[], None]], Any] | None = None,
                            progress: Callable[[str], Awaitable[None] | None] | None = None,
                            *, username: str = DEMO_USER,
                            session: Session | None = None) -> None:
        """Sign in (unless `session` is given) and start this user's sync stack and alerts."""
        s = self.settings
        await _say(progress, "Signing in…")
        self.session = session or await self.sign_in(username=username)
        if not self.demo:
            ward = s["realtime.ward"] or self.session.tokens.ward
            if not ward:
                raise SignInError("no ward is configured for this workstation (realtime.ward)")
            self.backend = Backend(s["fhir.base_url"], ward, s["realtime.endpoint"],
                                   s["realtime.token_url"], demo=False)
        await _say(progress, "Connecting…")
        b = self.backend
        assert b is not None
        self.workstation = Workstation(
            workstation_config(s, b, verify=self._verify),
            self.session, schedule=schedule, metrics=self.metrics, http=self.http,
        )
        await self.workstation.start()
        tokens = self.session.tokens
        self.audit = AuditTrail(
            self.workstation.fhir, practitioner_id=tokens.practitioner_id or "unknown",
            workstation_id=self.workstation_name, app_version=__version__,
            timer=self.workstation.timer,
        )
        self.alerts = AlertCenter(
            self.workstation,
            clinician=Clinician.from_fhir_user(tokens.fhir_user, self.user_name),
            escalation_after_s=self.escalation_after_s(),
            limits=DEFAULT_CRITICAL_LIMITS.merged(s["alerts.critical_limits"]),
        )
        await self.alerts.start()
        self.presence = PresenceService(
            self.workstation, identity_from_tokens(tokens),
            lock_idle_s=s["security.edit_lock_idle_min"] * 60.0,
        )
        await self.presence.start()
        self.edits = RecordEdits(
            self.workstation, Clinician.from_fhir_user(tokens.fhir_user, self.user_name))

    async def end_session(self) -> None:
        """Switch user / sign out: audit flushed, alerts and sync stack stopped (presence left,
        realtime closed), all in-memory clinical data dropped, tokens forgotten."""
        if self.audit is not None:
            await self.audit.flush()
            self.audit = None
        if self.edits is not None:
            self.edits.drafts.clear()  # drafts are the user's, in memory only: gone with them
            self.edits = None
        if self.presence is not None:
            await self.presence.aclose()  # leave every record channel now
            self.presence = None
        if self.alerts is not None:
            await self.alerts.aclose()
            self.alerts = None
        if self.workstation is not None:
            self.workstation.store.clear()
            await self.workstation.aclose()
            self.workstation = None
        if self.session is not None:
            await self.session.aclose()
            self.session = None

    async def _hospital_session(self, fhir_base: str, *, use_stored: bool = True) -> Session:
        assert self.http is not None
        s = self.settings
        client_id = s["auth.client_id"]
        store: RefreshTokenStore | None
        try:
            store = RefreshTokenStore(f"{client_id}@{fhir_base}")
        except KeyringUnavailable as exc:
            store, self.keyring_message = None, exc.user_message
        config = await discover(self.http, fhir_base)
        tokens: TokenSet | None = None
        saved = store.load() if store and use_stored else None
        if saved and store is not None:
            try:
                stub = TokenSet(access_token="", expires_at=0, refresh_token=saved)
                tokens = await refresh(self.http, config, client_id=client_id, tokens=stub)
            except SignInError:
                log.info("stored session no longer valid; signing in again")
                store.delete()
        if tokens is None:
            config, tokens = await sign_in(
                self.http, fhir_base=fhir_base, client_id=client_id, scopes=self.sign_in_scopes(),
                open_url=self._open_url,
            )
        if store and tokens.refresh_token:
            store.save(tokens.refresh_token)
        return Session(tokens, http=self.http, config=config, client_id=client_id,
                       save_refresh_token=store.save if store else None,
                       on_signed_out=self._on_signed_out)

    async def aclose(self) -> None:
        """Stop in reverse order: the session, the HTTP client, the demo server."""
        await self.end_session()
        if self.http is not None:
            await self.http.aclose()
        if self.sandbox is not None:
            await self.sandbox.stop()


async def _say(progress: Callable[[str], Awaitable[None] | None] | None, text: str) -> None:
    if progress is not None:
        result = progress(text)
        if result is not None:
            await result
