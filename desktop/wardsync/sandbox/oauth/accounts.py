"""Who may log in and which applications may ask for tokens: demo users and OAuth clients.

Everything here is synthetic: the demo users are obviously fake people with a shared demo
password, and client secrets come from the caller so the sandbox can persist them in its data
directory and print the lab client's secret in its ready line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from wardsync.core.strict_url import UnsafeUrl, parse_strict_url

#: Where a client secret comes from: a function of the client id, or a mapping keyed by it.
SecretSource = Callable[[str], str] | Mapping[str, str]

DESKTOP_CLIENT_ID = "wardsync-desktop"
LAB_CLIENT_ID = "lab-system"
DEVICES_CLIENT_ID = "ward-devices"
RELAY_CLIENT_ID = "wardsync-relay"
# What the relay reads to turn changes into pokes, plus managing its own Subscriptions
# (an explicit system/Subscription scope: wildcards never cover Subscription).
RELAY_SCOPES = (
    "system/Observation.rs",
    "system/DiagnosticReport.rs",
    "system/Task.crus",
    "system/Communication.rs",
    "system/Encounter.rs",
    "system/Patient.rs",
    "system/Location.rs",
    "system/Subscription.cruds",
)

# What the public desktop client may be granted: exactly what the app uses (its default
# request, infra/settings_schema.py DEFAULT_SCOPES), never a wildcard. A public client's
# id is no secret: anything allowed here, anyone who signs in can do from any HTTP client
# (docs/security.md §4). A request for `user/*.cruds` is narrowed to these.
DESKTOP_SCOPES = (
    "openid",
    "fhirUser",
    "offline_access",
    "user/Patient.rs",
    "user/AllergyIntolerance.rs",
    "user/Observation.rs",
    "user/Observation.cu",  # nursing notes (laboratory results: never, write_policy.py)
    "user/DiagnosticReport.rs",
    "user/Encounter.rs",
    "user/Location.rs",
    "user/Condition.rs",
    "user/Immunization.rs",
    "user/MedicationRequest.rs",
    "user/Task.rs",
    "user/Task.cu",  # status, owner, notes; escalation of an unacknowledged critical result
    "user/Communication.rs",
    "user/Communication.c",  # critical-result acknowledgements, sent as oneself
    "user/Practitioner.rs",
    "user/AuditEvent.c",
)

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True)
class DemoUser:
    """A synthetic clinician who can log in on the sandbox's authorize page.

    `practitioner_id` is the logical id of the user's FHIR Practitioner resource;
    `role` is what the ward calls them ("Doctor", "Nurse").
    """

    username: str
    password: str
    practitioner_id: str
    display_name: str
    role: str

    @property
    def fhir_user(self) -> str:
        """The user as a relative FHIR reference (`Practitioner/demo-clinician`)."""
        return f"Practitioner/{self.practitioner_id}"


@dataclass(frozen=True)
class OAuthClient:
    """A registered application (RFC 6749 §2).

    `secret` is None for a public client (the desktop app, which must use PKCE), set for a
    confidential one (client_secret_basic or client_secret_post, RFC 6749 §2.3.1).
    `allowed_scopes` are patterns: a requested SMART scope is granted as far as some pattern
    covers it (`user/*.cruds` covers `user/Observation.rs`); other scopes must match exactly.
    `redirect_uris` are compared exactly, except that a loopback IP literal registered without
    a port matches any port (RFC 8252 §7.3).
    """

    client_id: str
    secret: str | None
    grant_types: frozenset[str]
    allowed_scopes: tuple[str, ...]
    redirect_uris: tuple[str, ...] = ()
    display_name: str = ""

    @property
    def is_public(self) -> bool:
        """True for a client that cannot keep a secret (RFC 6749 §2.1)."""
        return self.secret is None

    def accepts_redirect_uri(self, redirect_uri: str) -> bool:
        """True if `redirect_uri` is one registered for this client.

        Only URLs that Python and a browser read alike are considered at all
        (core/strict_url.py: no backslash, userinfo, whitespace, control character, odd IPv4
        form or dot segment), so the host checked here is the host the browser will be sent
        to with the code. Then exact string match (RFC 6749 §3.1.2.3), except for loopback
        redirects: a registered `http://127.0.0.1/callback` accepts
        `http://127.0.0.1:<any port>/callback`, because a native app binds an ephemeral port
        at login time (RFC 8252 §7.3).
        """
        try:
            asked = parse_strict_url(redirect_uri)
        except UnsafeUrl:
            return False
        if asked.fragment is not None:
            return False  # RFC 6749 §3.1.2: "MUST NOT include a fragment component"
        if redirect_uri in self.redirect_uris:
            return True
        if asked.scheme != "http" or not asked.is_loopback_literal or asked.port is None:
            return False
        for registered in self.redirect_uris:
            reg = parse_strict_url(registered)
            if (
                reg.scheme == "http"
                and reg.is_loopback_literal
                and reg.port is None
                and reg.host == asked.host
                and reg.path == asked.path
                and reg.query == asked.query
            ):
                return True
        return False


def default_demo_users() -> list[DemoUser]:
    """The sandbox's synthetic staff. Both use the password "demo"."""
    return [
        DemoUser(
            username="demo.clinician",
            password="demo",
            practitioner_id="demo-clinician",
            display_name="Dr Demo Clinician",
            role="Doctor",
        ),
        DemoUser(
            username="demo.nurse",
            password="demo",
            practitioner_id="demo-nurse",
            display_name="Nurse Demo Nightingale",
            role="Nurse",
        ),
    ]


def _secret_for(source: SecretSource, client_id: str) -> str:
    secret = source[client_id] if isinstance(source, Mapping) else source(client_id)
    if not isinstance(secret, str) or not secret:
        raise ValueError(f"the secret source gave no secret for client {client_id!r}")
    return secret


def _backend_client(
    client_id: str, secret_source: SecretSource, display_name: str, scopes: str,
) -> OAuthClient:
    """A confidential backend system using the client_credentials grant (RFC 6749 §4.4)
    with SMART system-level scopes."""
    return OAuthClient(
        client_id=client_id,
        secret=_secret_for(secret_source, client_id),
        grant_types=frozenset({GRANT_CLIENT_CREDENTIALS}),
        allowed_scopes=tuple(scopes.split()),
        display_name=display_name,
    )


def default_clients(secret_source: SecretSource) -> list[OAuthClient]:
    """The sandbox's registered applications.

    - `wardsync-desktop`: the desktop app, a public native client using the authorization
      code flow with PKCE and a loopback redirect (RFC 8252), user-level SMART scopes.
    - `lab-system`: a laboratory system writing results (client_credentials).
    - `ward-devices`: bedside monitors writing vital signs (client_credentials).
    - `wardsync-relay`: the relay beside the FHIR server (client_credentials): reads what it
      turns into pokes, writes escalation Tasks, manages its own Subscriptions.

    `secret_source(client_id)` (or `secret_source[client_id]`) supplies the confidential
    clients' secrets, so the caller decides where they are kept. The relay is registered
    only when a mapping source has a secret for it (a callable source always supplies one).
    """
    clients = [
        OAuthClient(
            client_id=DESKTOP_CLIENT_ID,
            secret=None,
            grant_types=frozenset({GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN}),
            allowed_scopes=DESKTOP_SCOPES,
            # Loopback IP literals, any port (RFC 8252 §7.3); both address families (§8.3).
            redirect_uris=(
                "http://127.0.0.1/callback",
                "http://127.0.0.1/",
                "http://[::1]/callback",
                "http://[::1]/",
            ),
            display_name="WardSync Desktop",
        ),
        _backend_client(
            LAB_CLIENT_ID, secret_source, "Laboratory system (synthetic)",
            "system/Observation.cru system/DiagnosticReport.cru system/Patient.rs "
            "system/Encounter.rs",
        ),
        _backend_client(
            DEVICES_CLIENT_ID, secret_source, "Ward bedside devices (synthetic)",
            "system/Observation.cru system/Patient.rs system/Encounter.rs system/Location.rs",
        ),
    ]
    if not isinstance(secret_source, Mapping) or RELAY_CLIENT_ID in secret_source:
        clients.append(OAuthClient(
            client_id=RELAY_CLIENT_ID,
            secret=_secret_for(secret_source, RELAY_CLIENT_ID),
            grant_types=frozenset({GRANT_CLIENT_CREDENTIALS}),
            allowed_scopes=RELAY_SCOPES,
            display_name="WardSync relay",
        ))
    return clients
