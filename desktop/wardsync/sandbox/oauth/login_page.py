"""The sandbox's HTML login-and-approve page and its error page.

The form is deliberately plain so that tests and the demo app can drive it with httpx:

    POST /oauth/authorize   (application/x-www-form-urlencoded)
      the authorization request's own parameters, carried as hidden fields:
        response_type, client_id, redirect_uri, scope, state, code_challenge,
        code_challenge_method, aud, nonce (each only if it was in the request)
      username   demo user name (e.g. demo.clinician)
      password   its password ("demo")
      decision   "approve" or "deny"

Every value is HTML-escaped; the page forbids framing so it cannot be click-jacked
(RFC 6749 §10.13).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "aud",
    "nonce",
)
FIELD_USERNAME = "username"
FIELD_PASSWORD = "password"
FIELD_DECISION = "decision"
DECISION_APPROVE = "approve"
DECISION_DENY = "deny"

# RFC 6749 §10.13 (clickjacking) and no caching of a page that handles credentials.
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

_STYLE = (
    "body{font-family:sans-serif;max-width:32rem;margin:3rem auto;color:#222}"
    ".demo{background:#fff3cd;padding:.5rem;border:1px solid #e0c36a}"
    ".error{color:#a00;font-weight:bold}label{display:block;margin:.5rem 0}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        "<p class='demo'>DEMO — synthetic data. WardSync sandbox sign-in.</p>"
        f"{body}</body></html>"
    )


def render_login(
    *,
    params: Mapping[str, str],
    client_name: str,
    scopes: Sequence[str],
    ward: str,
    usernames: Sequence[str],
    demo_password: str | None = None,
    error: str | None = None,
    username: str = "",
) -> str:
    """The login/approve form for an authorization request that has passed validation.

    `demo_password` is shown when every demo user shares it (synthetic accounts only)."""
    hidden = "".join(
        f"<input type='hidden' name='{name}' value='{escape(params[name], quote=True)}'>"
        for name in AUTHORIZE_PARAMS
        if name in params
    )
    scope_items = "".join(f"<li><code>{escape(s)}</code></li>" for s in scopes)
    error_html = f"<p class='error' role='alert'>{escape(error)}</p>" if error else ""
    accounts = ", ".join(escape(u) for u in usernames)
    password_hint = (
        f" (password <code>{escape(demo_password)}</code>)" if demo_password is not None else ""
    )
    body = (
        f"<h1>Sign in to {escape(client_name)}</h1>"
        f"<p>Ward: <b>{escape(ward)}</b>. The application asks for:</p><ul>{scope_items}</ul>"
        f"{error_html}"
        "<form method='post' action='/oauth/authorize'>"
        f"{hidden}"
        f"<label>User name <input name='{FIELD_USERNAME}' autocomplete='username' "
        f"value='{escape(username, quote=True)}' autofocus></label>"
        f"<label>Password <input type='password' name='{FIELD_PASSWORD}' "
        "autocomplete='current-password'></label>"
        f"<button type='submit' name='{FIELD_DECISION}' value='{DECISION_APPROVE}'>Approve"
        "</button> "
        f"<button type='submit' name='{FIELD_DECISION}' value='{DECISION_DENY}'>Deny</button>"
        "</form>"
        f"<p>Demo accounts: {accounts}{password_hint}.</p>"
    )
    return _page("WardSync sandbox sign-in", body)


def render_error(message: str) -> str:
    """A page for an authorization error that must not be redirected (RFC 6749 §4.1.2.1)."""
    body = (
        "<h1>Sign-in request rejected</h1>"
        f"<p class='error' role='alert'>{escape(message)}</p>"
        "<p>The application that sent you here is misconfigured. Close this page.</p>"
    )
    return _page("Sign-in request rejected", body)
