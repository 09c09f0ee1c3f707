"""The sandbox's OAuth 2.0 authorization server with SMART App Launch 2.0 discovery.

Routes (installed on the sandbox's aiohttp application):

    GET  /.well-known/smart-configuration        SMART discovery (SMART 2.0 §2.1)
    GET  /fhir/.well-known/smart-configuration   the same, relative to the FHIR base
    GET  /oauth/authorize    validate the request, show the login/approve form
    POST /oauth/authorize    the form (field names in `login_page`) -> 302 to the redirect URI
    POST /oauth/token        authorization_code (PKCE S256), refresh_token, client_credentials
    POST /oauth/revoke       token revocation (RFC 7009)
    POST /oauth/introspect   token introspection (RFC 7662), for confidential clients

Access tokens are self-contained HS256 JWTs (RFC 9068 layout, `typ: at+jwt`), so
`verify_bearer` checks them with no I/O and they stay valid across a restart with the same key.
Revocation is by token id (`jti`) or by family (`fam`, everything descended from one
authorization code); the revoked ids are held in memory and persisted in SQLite with the
refresh tokens, so a restart with the same data directory keeps sessions and revocations.
Nothing here logs a token, code, secret or password.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from wardsync.core.strict_url import parse_strict_url
from wardsync.sandbox.grants import Grant
from wardsync.sandbox.oauth import login_page, pkce, signed_tokens
from wardsync.sandbox.oauth.accounts import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH_TOKEN,
    DemoUser,
    OAuthClient,
)
from wardsync.sandbox.oauth.errors import (
    ACCESS_DENIED,
    INVALID_CLIENT,
    INVALID_GRANT,
    INVALID_REQUEST,
    INVALID_SCOPE,
    UNAUTHORIZED_CLIENT,
    UNSUPPORTED_GRANT_TYPE,
    UNSUPPORTED_RESPONSE_TYPE,
    OAuthError,
)
from wardsync.sandbox.oauth.form_body import basic_credentials, parse_form, unique_params
from wardsync.sandbox.oauth.scopes import is_within, narrow_scopes, split_scope
from wardsync.sandbox.oauth.session_store import Family, SessionStore
from wardsync.sandbox.oauth.throttle import SignInThrottle

log = logging.getLogger(__name__)

ROUTE_AUTHORIZE = "/oauth/authorize"
ROUTE_TOKEN = "/oauth/token"
ROUTE_REVOKE = "/oauth/revoke"
ROUTE_INTROSPECT = "/oauth/introspect"
# SMART 2.0 §2.1: discovery lives at {fhir base}/.well-known/smart-configuration; the FHIR
# server is mounted at /fhir. The root copy serves clients that start from the issuer.
SMART_CONFIGURATION_PATHS = (
    "/.well-known/smart-configuration",
    "/fhir/.well-known/smart-configuration",
)

ACCESS_TOKEN_TYP = "at+jwt"  # RFC 9068 §2.1
ID_TOKEN_TYP = "JWT"
# RFC 6749 §4.1.2: "A maximum authorization code lifetime of 10 minutes is RECOMMENDED";
# a loopback redirect is exchanged within a second, so one minute is ample.
AUTHORIZATION_CODE_TTL_S = 60.0
# A used code is remembered this long so that its reuse can still revoke what it issued
# (RFC 6749 §4.1.2) after the code itself has expired.
USED_CODE_MEMORY_S = 600.0
MAX_PENDING_CODES = 10_000
PRUNE_INTERVAL_S = 600.0
MIN_SIGNING_KEY_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
TOKEN_BYTES = 32  # 256 bits of randomness for codes and refresh tokens (RFC 6749 §10.10)

SMART_CAPABILITIES = (
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "sso-openid-connect",
    "context-standalone-encounter",
    "permission-offline",
    "permission-user",
    "permission-v1",
    "permission-v2",
)
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# RFC 6749 §5.1: token responses and errors must not be cached.
NO_STORE_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _digest(secret_value: str) -> str:
    """How codes and refresh tokens are looked up without being kept in the clear."""
    return hashlib.sha256(secret_value.encode("utf-8", "surrogatepass")).hexdigest()


def _as_supplier(value: str | Callable[[], str]) -> Callable[[], str]:
    if callable(value):
        return value
    return lambda: value


def _append_query(uri: str, params: Mapping[str, str]) -> str:
    """Add parameters to a redirect URI, keeping its own query (RFC 6749 §3.1.2).

    The URI is re-read strictly (core/strict_url.py) rather than split and re-joined: a
    `urlsplit`/`urlunsplit` round trip can turn a string a browser reads one way into one it
    reads another. Only a redirect URI already accepted by `accepts_redirect_uri` gets here;
    anything else raises UnsafeUrl instead of being sent.
    """
    return parse_strict_url(uri).with_query_params(list(params.items()))


@dataclass(slots=True)
class _AuthorizationCode:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str
    username: str
    nonce: str | None
    issued_at: float
    expires_at: float
    used: bool = False
    family_id: str | None = None


def _required(params: dict[str, str], name: str) -> str:
    """A parameter the request must carry (RFC 6749 §5.2 invalid_request when missing)."""
    value = params.get(name)
    if not value:
        raise OAuthError(INVALID_REQUEST, f"{name} is required")
    return value


class _PageError(Exception):
    """An authorization error shown to the user, never redirected (RFC 6749 §4.1.2.1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _RedirectError(Exception):
    """An authorization error sent back to the client's redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str):
        super().__init__(f"{error}: {description}")
        self.redirect_uri = redirect_uri
        self.state = state
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class _AuthorizationRequest:
    params: dict[str, str]
    client: OAuthClient
    redirect_uri: str
    state: str
    scopes: tuple[str, ...]


class OAuthServer:
    """OAuth 2.0 / SMART on FHIR authorization server for the sandbox.

    `issuer` and `fhir_base` may be callables because the port is known only after binding.
    `signing_key` (at least 32 bytes) signs every token; keep it with the data directory so
    tokens survive a restart. `clock` (epoch seconds) is injectable for expiry tests.
    """

    def __init__(
        self,
        *,
        issuer: str | Callable[[], str],
        fhir_base: str | Callable[[], str],
        signing_key: bytes,
        users: Iterable[DemoUser],
        clients: Iterable[OAuthClient],
        ward: str,
        access_token_ttl_s: float = 900,
        refresh_token_ttl_s: float = 8 * 3600,
        db_path: str | Path = ":memory:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(signing_key) < MIN_SIGNING_KEY_BYTES:
            raise ValueError(f"signing_key must be at least {MIN_SIGNING_KEY_BYTES} bytes")
        if access_token_ttl_s <= 0 or refresh_token_ttl_s <= 0:
            raise ValueError("token lifetimes must be positive")
        self._issuer = _as_supplier(issuer)
        self._fhir_base = _as_supplier(fhir_base)
        self._access_key = signed_tokens.derive_key(signing_key, "access-token")
        self._id_token_key = signed_tokens.derive_key(signing_key, "id-token")
        self._users = {u.username: u for u in users}
        self._clients = {c.client_id: c for c in clients}
        self._ward = ward
        self._access_ttl_s = float(access_token_ttl_s)
        self._refresh_ttl_s = float(refresh_token_ttl_s)
        self._clock = clock
        self._store = SessionStore(db_path)
        self._codes: dict[str, _AuthorizationCode] = {}
        self._revoked_jti: dict[str, float] = {}
        self._revoked_families: set[str] = set()
        self._last_prune = float("-inf")
        self._throttle = SignInThrottle(clock)
        self._reload_revocations(clock())
        passwords = {u.password for u in self._users.values()}
        self._demo_password = passwords.pop() if len(passwords) == 1 else None

    # ------------------------------------------------------------------ public API

    def install(self, app: web.Application) -> None:
        """Add the discovery, authorize, token and revocation routes to `app`, and close the
        session database when the app is cleaned up. The FHIR server's `/fhir` sub-application
        may be added before or after: aiohttp resolves the exact discovery path first."""
        for path in SMART_CONFIGURATION_PATHS:
            app.router.add_get(path, self._on_smart_configuration)
        app.router.add_get(ROUTE_AUTHORIZE, self._on_authorize_get)
        app.router.add_post(ROUTE_AUTHORIZE, self._on_authorize_post)
        app.router.add_post(ROUTE_TOKEN, self._on_token)
        app.router.add_post(ROUTE_REVOKE, self._on_revoke)
        app.router.add_post(ROUTE_INTROSPECT, self._on_introspect)
        app.on_cleanup.append(self._on_app_cleanup)

    def close(self) -> None:
        """Close the session database. Tokens already issued still verify."""
        self._store.close()

    def verify_bearer(self, token: str | None) -> Grant | None:
        """The grant an access token carries, or None if it is malformed, forged, expired or
        revoked. Pure computation on in-memory state: safe to call on every request."""
        if not token:
            return None
        claims = signed_tokens.decode(token, self._access_key, typ=ACCESS_TOKEN_TYP)
        if claims is None:
            return None
        try:
            expires_at = float(claims["exp"])
            jti = str(claims["jti"])
            subject = str(claims["sub"])
            client_id = str(claims["client_id"])
            scopes = frozenset(str(claims["scope"]).split())
        except (KeyError, TypeError, ValueError):
            return None
        if expires_at <= self._clock() or jti in self._revoked_jti:
            return None
        family = claims.get("fam")
        if family is not None and family in self._revoked_families:
            return None
        extra = {"jti": jti}
        for claim in ("username", "role", "fhirUser"):
            if isinstance(claims.get(claim), str):
                extra[claim] = claims[claim]
        ward = claims.get("ward")
        return Grant(
            client_id=client_id,
            subject=subject,
            scopes=scopes,
            expires_at=expires_at,
            display_name=str(claims.get("name", "")),
            ward=ward if isinstance(ward, str) else None,
            extra=extra,
        )

    def revoke(self, token: str) -> bool:
        """Revoke an access token (by its id) or a refresh token (its whole family, with the
        access tokens issued from it, RFC 7009 §2.1). True if something was revoked."""
        return self._revoke(token, requesting_client=None)

    def revoke_user_sessions(self, username: str) -> int:
        """Revoke every session (token family) of a user, e.g. on a shared-workstation
        sign-out. Returns how many sessions were revoked."""
        revoked = self._store.revoke_user_families(username, self._clock())
        self._revoked_families.update(revoked)
        if revoked:
            log.info("revoked %d session(s) of user %s", len(revoked), username)
        return len(revoked)

    # ------------------------------------------------------------------ discovery

    def _endpoint(self, path: str) -> str:
        parts = urlsplit(self._issuer())
        return f"{parts.scheme}://{parts.netloc}{path}"

    def smart_configuration(self) -> dict[str, Any]:
        """The SMART 2.0 discovery document (SMART App Launch 2.0 §2.1 "Metadata")."""
        scopes: dict[str, None] = {}
        for client in self._clients.values():
            scopes.update(dict.fromkeys(client.allowed_scopes))
        return {
            "issuer": self._issuer(),
            "authorization_endpoint": self._endpoint(ROUTE_AUTHORIZE),
            "token_endpoint": self._endpoint(ROUTE_TOKEN),
            "revocation_endpoint": self._endpoint(ROUTE_REVOKE),
            "introspection_endpoint": self._endpoint(ROUTE_INTROSPECT),
            "grant_types_supported": [
                GRANT_AUTHORIZATION_CODE,
                GRANT_REFRESH_TOKEN,
                GRANT_CLIENT_CREDENTIALS,
            ],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": list(pkce.SUPPORTED_METHODS),
            "token_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
            "revocation_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
            "introspection_endpoint_auth_methods_supported": list(CONFIDENTIAL_AUTH_METHODS),
            "id_token_signing_alg_values_supported": [signed_tokens.ALGORITHM],
            "scopes_supported": list(scopes),
            "capabilities": list(SMART_CAPABILITIES),
        }

    async def _on_smart_configuration(self, request: web.Request) -> web.Response:
        return web.json_response(self.smart_configuration())

    # ------------------------------------------------------------------ authorize

    def _validate_authorization_request(self, params: dict[str, str]) -> _AuthorizationRequest:
        """Check an authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3, SMART 2.0 §2.1.5).

        Problems with client_id or redirect_uri raise _PageError: the redirect target cannot
        be trusted, so the user is told instead (RFC 6749 §4.1.2.1). Others raise
        _RedirectError, to be sent to the client's redirect URI.
        """
        client = self._clients.get(params.get("client_id", ""))
        if client is None:
            raise _PageError("Unknown or missing client_id.")
        redirect_uri = params.get("redirect_uri", "")
        if not redirect_uri or not client.accepts_redirect_uri(redirect_uri):
            raise _PageError("Missing redirect_uri, or not one registered for this client.")
        state = params.get("state")

        def fail(error: str, description: str) -> _RedirectError:
            return _RedirectError(redirect_uri, state, error, description)

        if GRANT_AUTHORIZATION_CODE not in client.grant_types:
            raise fail(UNAUTHORIZED_CLIENT, "this client may not use the authorization code flow")
        if "response_type" not in params:
            raise fail(INVALID_REQUEST, "response_type is required")
        if params["response_type"] != "code":
            raise fail(UNSUPPORTED_RESPONSE_TYPE, "only response_type=code is supported")
        if not state:
            # SMART 2.0 §2.1.5: state is REQUIRED (CSRF protection, RFC 6749 §10.12).
            raise fail(INVALID_REQUEST, "state is required")
        method = params.get("code_challenge_method")
        if method is None or "code_challenge" not in params:
            # SMART 2.0 requires PKCE for every client (RFC 7636 §4.4.1).
            raise fail(INVALID_REQUEST, "PKCE is required: code_challenge with method S256")
        if method not in pkce.SUPPORTED_METHODS:
            # RFC 7636 §4.4.1: "transform algorithm not supported"; plain is refused.
            raise fail(INVALID_REQUEST, "code_challenge_method must be S256")
        if not pkce.is_valid_s256_challenge(params["code_challenge"]):
            raise fail(INVALID_REQUEST, "code_challenge is not a base64url SHA-256 digest")
        aud = params.get("aud")
        if aud is not None and aud.rstrip("/") != self._fhir_base().rstrip("/"):
            # SMART 2.0 §2.1.5: aud names the FHIR server; tokens must not leak elsewhere.
            raise fail(INVALID_REQUEST, "aud is not this sandbox's FHIR base URL")
        requested = split_scope(params.get("scope", ""))
        if not requested:
            raise fail(INVALID_SCOPE, "scope is missing or malformed")
        granted = narrow_scopes(requested, client.allowed_scopes)
        if not granted:
            raise fail(INVALID_SCOPE, "none of the requested scopes is allowed for this client")
        return _AuthorizationRequest(params, client, redirect_uri, state, tuple(granted))

    def _redirect(self, redirect_uri: str, params: dict[str, str]) -> web.Response:
        # RFC 9207: `iss` lets the client check which server answered (mix-up defence).
        params = {**params, "iss": self._issuer()}
        return web.Response(
            status=302,
            headers={"Location": _append_query(redirect_uri, params), **NO_STORE_HEADERS},
        )

    def _authorization_failed(self, err: OAuthError | _PageError | _RedirectError) -> web.Response:
        """An invalid authorization request: redirected back only when the redirect URI is
        trusted, otherwise shown to the user (RFC 6749 §4.1.2.1)."""
        if isinstance(err, _RedirectError):
            return self._redirect_error(err)
        return self._error_page(err.description if isinstance(err, OAuthError) else err.message)

    def _redirect_error(self, err: _RedirectError) -> web.Response:
        params = {"error": err.error, "error_description": err.description}
        if err.state:
            params["state"] = err.state
        return self._redirect(err.redirect_uri, params)

    @staticmethod
    def _error_page(message: str, status: int = 400) -> web.Response:
        return web.Response(
            status=status,
            text=login_page.render_error(message),
            content_type="text/html",
            headers=login_page.PAGE_HEADERS,
        )

    def _login_page(
        self, req: _AuthorizationRequest, *, error: str | None = None, username: str = ""
    ) -> web.Response:
        html = login_page.render_login(
            params=req.params,
            client_name=req.client.display_name or req.client.client_id,
            scopes=req.scopes,
            ward=self._ward,
            usernames=sorted(self._users),
            demo_password=self._demo_password,
            error=error,
            username=username,
        )
        return web.Response(text=html, content_type="text/html", headers=login_page.PAGE_HEADERS)

    async def _on_authorize_get(self, request: web.Request) -> web.Response:
        try:
            params = unique_params(request.query.items())
            req = self._validate_authorization_request(params)
        except (OAuthError, _PageError, _RedirectError) as err:
            return self._authorization_failed(err)
        return self._login_page(req)

    async def _on_authorize_post(self, request: web.Request) -> web.Response:
        try:
            form = parse_form(request.headers.get("Content-Type", ""), await request.read())
            req = self._validate_authorization_request(
                {k: v for k, v in form.items() if k in login_page.AUTHORIZE_PARAMS}
            )
        except (OAuthError, _PageError, _RedirectError) as err:
            return self._authorization_failed(err)

        decision = form.get(login_page.FIELD_DECISION)
        if decision == login_page.DECISION_DENY:
            return self._redirect_error(
                _RedirectError(req.redirect_uri, req.state, ACCESS_DENIED, "the user denied access")
            )
        username = form.get(login_page.FIELD_USERNAME, "")
        if decision != login_page.DECISION_APPROVE:
            return self._login_page(req, error="Choose Approve or Deny.", username=username)
        address = request.remote or "unknown"
        refused = self._throttle.retry_after_s(username, address)
        if refused is not None:
            return self._throttled(req, username, *refused)
        user = self._check_password(username, form.get(login_page.FIELD_PASSWORD, ""))
        if user is None:
            self._throttle.failed(username, address)
            log.info("sign-in failed for client %s", req.client.client_id)
            return self._login_page(
                req, error="Unknown user name or wrong password.", username=username
            )
        self._throttle.succeeded(username)
        code = self._issue_code(req, user)
        log.info("user %s approved client %s", user.username, req.client.client_id)
        return self._redirect(req.redirect_uri, {"code": code, "state": req.state})

    def _throttled(self, req: _AuthorizationRequest, username: str, kind: str,
                   wait_s: int) -> web.Response:
        """429 with the form again and a message a person can act on (RFC 6585 §4)."""
        minutes = max(1, math.ceil(wait_s / 60))
        who = "this account" if kind == "account" else "this computer"
        log.warning("sign-in throttled (%s) for client %s", kind, req.client.client_id)
        response = self._login_page(
            req, username=username,
            error=f"Too many failed sign-ins for {who}. Try again in {minutes} "
                  f"minute{'s' if minutes != 1 else ''}; ask IT if you have forgotten your "
                  "password.",
        )
        response.set_status(429)
        response.headers["Retry-After"] = str(wait_s)
        return response

    def _check_password(self, username: str, password: str) -> DemoUser | None:
        user = self._users.get(username)
        # Compare even for unknown users so timing does not reveal which names exist.
        expected = user.password if user is not None else secrets.token_hex(16)
        ok = hmac.compare_digest(
            password.encode("utf-8", "surrogatepass"), expected.encode("utf-8")
        )
        return user if ok and user is not None else None

    def _issue_code(self, req: _AuthorizationRequest, user: DemoUser) -> str:
        now = self._clock()
        self._forget_old_codes(now)
        code = secrets.token_urlsafe(TOKEN_BYTES)
        self._codes[_digest(code)] = _AuthorizationCode(
            client_id=req.client.client_id,
            redirect_uri=req.redirect_uri,
            scopes=req.scopes,
            code_challenge=req.params["code_challenge"],
            username=user.username,
            nonce=req.params.get("nonce"),
            issued_at=now,
            expires_at=now + AUTHORIZATION_CODE_TTL_S,
        )
        return code

    def _forget_old_codes(self, now: float) -> None:
        for key in [k for k, c in self._codes.items() if c.issued_at + USED_CODE_MEMORY_S < now]:
            del self._codes[key]
        while len(self._codes) >= MAX_PENDING_CODES:
            del self._codes[next(iter(self._codes))]

    # ------------------------------------------------------------------ token

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers=NO_STORE_HEADERS)

    @classmethod
    def _oauth_error(cls, err: OAuthError) -> web.Response:
        response = cls._json(err.to_json(), status=err.status)
        if err.status == 401:
            # RFC 6749 §5.2: a 401 carries the authentication scheme the client should use.
            response.headers["WWW-Authenticate"] = 'Basic realm="wardsync-sandbox"'
        return response

    async def _client_form(self, request: web.Request) -> tuple[dict[str, str], OAuthClient]:
        """The form body of a token or revocation request and the client that sent it."""
        params = parse_form(request.headers.get("Content-Type", ""), await request.read())
        return params, self._authenticate_client(request, params)

    def _authenticate_client(self, request: web.Request, params: dict[str, str]) -> OAuthClient:
        """The calling client (RFC 6749 §2.3): Basic header or body credentials for a
        confidential client, a bare client_id for a public one."""
        basic = basic_credentials(request.headers.get("Authorization"))
        secret: str | None
        if basic is not None:
            if "client_secret" in params:
                # RFC 6749 §2.3: "MUST NOT use more than one authentication method".
                raise OAuthError(INVALID_REQUEST, "use either Basic or client_secret, not both")
            client_id = basic[0]
            secret = basic[1]
            if params.get("client_id", client_id) != client_id:
                raise OAuthError(INVALID_CLIENT, "client_id does not match the credentials")
        else:
            client_id = params.get("client_id", "")
            secret = params.get("client_secret")
        client = self._clients.get(client_id)
        if client is None:
            raise OAuthError(INVALID_CLIENT, "unknown client or missing client_id")
        if client.secret is None:
            if secret:
                raise OAuthError(INVALID_CLIENT, "this public client has no secret")
            return client
        if secret is None or not hmac.compare_digest(
            secret.encode("utf-8", "surrogatepass"), client.secret.encode("utf-8")
        ):
            log.info("client authentication failed for %s", client_id)
            raise OAuthError(INVALID_CLIENT, "client authentication failed")
        return client

    async def _on_token(self, request: web.Request) -> web.Response:
        try:
            params, client = await self._client_form(request)
            grant_type = _required(params, "grant_type")
            handler = {
                GRANT_AUTHORIZATION_CODE: self._grant_authorization_code,
                GRANT_REFRESH_TOKEN: self._grant_refresh_token,
                GRANT_CLIENT_CREDENTIALS: self._grant_client_credentials,
            }.get(grant_type)
            if handler is None:
                raise OAuthError(UNSUPPORTED_GRANT_TYPE, "unsupported grant_type")
            if grant_type not in client.grant_types:
                raise OAuthError(UNAUTHORIZED_CLIENT, f"this client may not use {grant_type}")
            now = self._clock()
            self._prune(now)
            body = handler(client, params, now)
        except OAuthError as err:
            return self._oauth_error(err)
        return self._json(body)

    def _grant_authorization_code(
        self, client: OAuthClient, params: dict[str, str], now: float
    ) -> dict[str, Any]:
        """RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.5-4.6)."""
        code = _required(params, "code")
        record = self._codes.get(_digest(code))
        if record is None or record.client_id != client.client_id:
            raise OAuthError(INVALID_GRANT, "unknown or expired authorization code")
        if record.used:
            # RFC 6749 §4.1.2: a reused code is denied and what it issued is revoked,
            # since one of the two presenters is an attacker.
            if record.family_id is not None:
                self._revoke_family(record.family_id, now)
                log.warning(
                    "authorization code reused by client %s: session revoked", client.client_id
                )
            raise OAuthError(INVALID_GRANT, "authorization code already used")
        # Any attempt consumes the code: a guessed verifier gets one try only.
        record.used = True
        if now >= record.expires_at:
            raise OAuthError(INVALID_GRANT, "authorization code expired")
        if params.get("redirect_uri") != record.redirect_uri:
            raise OAuthError(INVALID_GRANT, "redirect_uri does not match the authorization")
        verifier = params.get("code_verifier")
        if not verifier:
            raise OAuthError(INVALID_GRANT, "code_verifier is required (PKCE)")
        if not pkce.verifier_matches(verifier, record.code_challenge):
            raise OAuthError(INVALID_GRANT, "code_verifier does not match code_challenge")
        user = self._users.get(record.username)
        if user is None:
            raise OAuthError(INVALID_GRANT, "the user no longer exists")
        family_id = secrets.token_urlsafe(16)
        self._store.create_family(
            Family(
                family_id=family_id,
                client_id=client.client_id,
                username=user.username,
                scope=" ".join(record.scopes),
                created_at=now,
                # A login lasts one shift: rotation does not extend it.
                expires_at=now + self._refresh_ttl_s,
                revoked_at=None,
            )
        )
        record.family_id = family_id
        refresh_token = None
        if "offline_access" in record.scopes and GRANT_REFRESH_TOKEN in client.grant_types:
            refresh_token = secrets.token_urlsafe(TOKEN_BYTES)
            self._store.add_refresh_token(_digest(refresh_token), family_id, now)
        log.info("issued tokens to user %s via client %s", user.username, client.client_id)
        return self._user_token_response(
            client, user, record.scopes, family_id, now, refresh_token, nonce=record.nonce
        )

    def _grant_refresh_token(
        self, client: OAuthClient, params: dict[str, str], now: float
    ) -> dict[str, Any]:
        """RFC 6749 §6 with rotation and reuse detection (RFC 9700 §4.14.2)."""
        presented = _required(params, "refresh_token")
        old_hash = _digest(presented)
        record = self._store.find_refresh_token(old_hash)
        if record is None or record.family.client_id != client.client_id:
            raise OAuthError(INVALID_GRANT, "unknown refresh token")
        family = record.family
        if family.revoked_at is not None:
            raise OAuthError(INVALID_GRANT, "refresh token revoked")
        if record.state != "active":
            # An already-rotated token came back: either the client or an attacker holds a
            # stolen copy. Revoke the whole family so neither can go on (RFC 9700 §4.14.2).
            self._revoke_family(family.family_id, now)
            log.warning("refresh token reuse for user %s: session revoked", family.username)
            raise OAuthError(INVALID_GRANT, "refresh token already used; session revoked")
        if now >= family.expires_at:
            raise OAuthError(INVALID_GRANT, "session expired; sign in again")
        user = self._users.get(family.username)
        if user is None:
            raise OAuthError(INVALID_GRANT, "the user no longer exists")
        scopes = tuple(family.scope.split())
        if "scope" in params:
            requested = split_scope(params["scope"])
            if not requested or not is_within(requested, scopes):
                # RFC 6749 §6: a refresh may narrow the scope, never widen it.
                raise OAuthError(INVALID_SCOPE, "scope exceeds the original grant")
            scopes = tuple(requested)
        new_refresh = secrets.token_urlsafe(TOKEN_BYTES)
        if not self._store.rotate_refresh_token(old_hash, _digest(new_refresh), now):
            self._revoke_family(family.family_id, now)
            raise OAuthError(INVALID_GRANT, "refresh token already used; session revoked")
        return self._user_token_response(
            client, user, scopes, family.family_id, now, new_refresh, nonce=None
        )

    def _grant_client_credentials(
        self, client: OAuthClient, params: dict[str, str], now: float
    ) -> dict[str, Any]:
        """RFC 6749 §4.4: a confidential client acting for itself; no refresh token."""
        if client.secret is None:
            raise OAuthError(UNAUTHORIZED_CLIENT, "a public client cannot use client_credentials")
        if "scope" in params:
            requested = split_scope(params["scope"])
            if not requested:
                raise OAuthError(INVALID_SCOPE, "scope is malformed")
            scopes = narrow_scopes(requested, client.allowed_scopes)
            if not scopes:
                raise OAuthError(INVALID_SCOPE, "none of the requested scopes is allowed")
        else:
            # RFC 6749 §3.3: with no scope asked, a pre-defined default applies.
            scopes = list(client.allowed_scopes)
        claims = {
            "sub": client.client_id,
            "name": client.display_name or client.client_id,
        }
        access_token, _expires_at = self._access_token(client, scopes, claims, now)
        log.info("issued a system token to client %s", client.client_id)
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": int(self._access_ttl_s),
            "scope": " ".join(scopes),
        }

    def _access_token(
        self, client: OAuthClient, scopes: Iterable[str], claims: dict[str, Any], now: float
    ) -> tuple[str, float]:
        expires_at = now + self._access_ttl_s
        payload = {
            "iss": self._issuer(),
            "aud": self._fhir_base(),
            "client_id": client.client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": expires_at,
            "jti": secrets.token_urlsafe(16),
            "ward": self._ward,
            **claims,
        }
        token = signed_tokens.encode(payload, self._access_key, typ=ACCESS_TOKEN_TYP)
        return token, expires_at

    def _user_token_response(
        self,
        client: OAuthClient,
        user: DemoUser,
        scopes: tuple[str, ...],
        family_id: str,
        now: float,
        refresh_token: str | None,
        *,
        nonce: str | None,
    ) -> dict[str, Any]:
        """The token response for a person (RFC 6749 §5.1, SMART 2.0 §2.1.8)."""
        access_token, expires_at = self._access_token(
            client,
            scopes,
            {
                "sub": user.fhir_user,
                "name": user.display_name,
                "fhirUser": user.fhir_user,
                "username": user.username,
                "role": user.role,
                "fam": family_id,
            },
            now,
        )
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": int(self._access_ttl_s),
            "scope": " ".join(scopes),
            "fhirUser": user.fhir_user,
            # SMART 2.0 §2.1.8 launch context: the ward this workstation serves.
            "fhirContext": [{"reference": f"Location/{self._ward}"}],
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        if "openid" in scopes:
            body["id_token"] = self._id_token(client, user, now, expires_at, nonce)
        return body

    def _id_token(
        self, client: OAuthClient, user: DemoUser, now: float, expires_at: float, nonce: str | None
    ) -> str:
        """OpenID Connect Core §2 ID token; `fhirUser` as an absolute URL (SMART 2.0 §2.3)."""
        claims: dict[str, Any] = {
            "iss": self._issuer(),
            "sub": user.fhir_user,
            "aud": client.client_id,
            "iat": now,
            "exp": expires_at,
            "name": user.display_name,
            "fhirUser": f"{self._fhir_base().rstrip('/')}/{user.fhir_user}",
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return signed_tokens.encode(claims, self._id_token_key, typ=ID_TOKEN_TYP)

    # ------------------------------------------------------------------ revocation

    async def _on_revoke(self, request: web.Request) -> web.Response:
        """RFC 7009 §2: 200 whether or not the token was valid, so a client cannot probe."""
        try:
            params, client = await self._client_form(request)
            token = _required(params, "token")
            self._revoke(token, requesting_client=client.client_id)
        except OAuthError as err:
            return self._oauth_error(err)
        return web.Response(status=200, headers=NO_STORE_HEADERS)

    def _revoke(self, token: str, *, requesting_client: str | None) -> bool:
        now = self._clock()
        claims = signed_tokens.decode(token, self._access_key, typ=ACCESS_TOKEN_TYP)
        if claims is not None:
            owner = claims.get("client_id")
            if requesting_client is not None and owner != requesting_client:
                return self._not_revoked_for_another_client()
            jti, exp = claims.get("jti"), claims.get("exp")
            if not isinstance(jti, str) or not isinstance(exp, int | float):
                return False
            if jti in self._revoked_jti or exp <= now:
                return False
            self._store.revoke_access_token(jti, float(exp))
            self._revoked_jti[jti] = float(exp)
            return True
        record = self._store.find_refresh_token(_digest(token))
        if record is None:
            return False
        if requesting_client is not None and record.family.client_id != requesting_client:
            return self._not_revoked_for_another_client()
        # RFC 7009 §2.1: revoking a refresh token also invalidates the access tokens of the
        # same grant.
        return self._revoke_family(record.family.family_id, now)

    @staticmethod
    def _not_revoked_for_another_client() -> bool:
        # RFC 7009 §2.1: only the client a token was issued to may revoke it. Refusing with an
        # error would tell the caller that the token is live and someone else's (an oracle);
        # to this client it is a token it cannot know, answered 200 like any invalid token
        # (§2.2), and left unrevoked.
        log.info("revocation of another client's token ignored")
        return False

    def _revoke_family(self, family_id: str, now: float) -> bool:
        self._revoked_families.add(family_id)
        return self._store.revoke_family(family_id, now)

    # ------------------------------------------------------------------ introspection

    async def _on_introspect(self, request: web.Request) -> web.Response:
        """RFC 7662 §2: is this access token active, and what does it carry?

        Only confidential clients may ask (§2.1: the endpoint MUST require authorization, to
        stop token scanning). Anything that does not verify (malformed, forged, expired,
        revoked, a refresh token) is just `{"active": false}` (§2.2).
        """
        try:
            params = parse_form(request.headers.get("Content-Type", ""), await request.read())
            client = self._authenticate_client(request, params)
            if client.secret is None:
                raise OAuthError(INVALID_CLIENT, "only confidential clients may introspect")
            token = params.get("token")
            if not token:
                raise OAuthError(INVALID_REQUEST, "token is required")
        except OAuthError as err:
            return self._oauth_error(err)
        return self._json(self.introspect(token))

    def introspect(self, token: str) -> dict[str, Any]:
        """The RFC 7662 §2.2 introspection response for `token`."""
        grant = self.verify_bearer(token)
        claims = signed_tokens.decode(token, self._access_key, typ=ACCESS_TOKEN_TYP)
        if grant is None or claims is None:
            return {"active": False}
        body: dict[str, Any] = {
            "active": True,
            "scope": " ".join(sorted(grant.scopes)),
            "client_id": grant.client_id,
            "token_type": "Bearer",
            "exp": int(grant.expires_at),
            "sub": grant.subject,
        }
        for claim in ("iat", "iss", "aud", "jti", "username", "fhirUser"):
            value = claims.get(claim)
            if isinstance(value, str):
                body[claim] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                body[claim] = int(value)
        if grant.ward is not None:
            # Sandbox extension: the ward this user's workstation serves (its fhirContext).
            body["ward"] = grant.ward
        return body

    # ------------------------------------------------------------------ housekeeping

    def _reload_revocations(self, now: float) -> None:
        self._revoked_jti = self._store.revoked_access_tokens(now)
        # A family's access tokens can outlive it by one access-token lifetime.
        self._revoked_families = set(self._store.revoked_family_ids(now - self._access_ttl_s))

    def _prune(self, now: float) -> None:
        if now - self._last_prune < PRUNE_INTERVAL_S:
            return
        self._last_prune = now
        self._forget_old_codes(now)
        self._store.prune(families_ended_before=now - self._access_ttl_s, now=now)
        self._reload_revocations(now)

    async def _on_app_cleanup(self, app: web.Application) -> None:
        self.close()
