"""Demo and training sign-in: plays the browser's part on the sandbox's approve page.

Used only when WardSync runs on its embedded sandbox (synthetic data): the demo clinician is
signed in through the same SMART authorization-code + PKCE flow as a real user, with the
sandbox's documented form (fields `username`, `password`, `decision`, plus the authorization
request echoed as hidden inputs) filled in instead of shown in a browser. Against a hospital
server the app always opens the system browser (RFC 8252 §6).
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx

from wardsync.core.errors import SignInError
from wardsync.core.strict_url import UnsafeUrl, parse_strict_url


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.hidden: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        elif tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value", "")


class DemoBrowser:
    """An `open_url` for `sign_in` that approves as a demo user and follows the redirect."""

    def __init__(self, http: httpx.AsyncClient, *, username: str, password: str,
                 decision: str = "approve") -> None:
        self._http = http
        self._username = username
        self._password = password
        self._decision = decision

    async def __call__(self, url: str) -> None:
        try:
            page = await self._http.get(url)
            form = _Form()
            form.feed(page.text)
            if page.status_code != 200 or form.action is None:
                raise SignInError(f"demo sign-in page unavailable (HTTP {page.status_code})")
            fields = dict(form.hidden)
            fields.update(username=self._username, password=self._password,
                          decision=self._decision)
            action = _same_origin(str(page.url), urljoin(str(page.url), form.action))
            resp = await self._http.post(action, data=fields, follow_redirects=False)
            location = resp.headers.get("location")
            if resp.status_code not in (302, 303) or not location:
                raise SignInError("demo sign-in was not accepted")
            # The browser would now load the loopback redirect URI: do the same, and only
            # that (the code goes nowhere else, docs/security.md §2).
            await self._http.get(_loopback(location))
        except httpx.HTTPError as exc:
            raise SignInError(f"demo sign-in failed ({type(exc).__name__})") from exc


def _same_origin(page_url: str, target: str) -> str:
    """`target` if the password may be posted there: the sign-in page's own origin."""
    try:
        same = parse_strict_url(target).origin == parse_strict_url(page_url).origin
    except UnsafeUrl:
        same = False
    if not same:
        raise SignInError("the demo sign-in form posts somewhere other than its own server")
    return target


def _loopback(location: str) -> str:
    """`location` if it is a loopback redirect URI (RFC 8252 §7.3) read alike by every parser."""
    try:
        url = parse_strict_url(location)
    except UnsafeUrl:
        url = None
    if url is None or url.scheme != "http" or not url.is_loopback_literal:
        raise SignInError("the demo sign-in redirected somewhere other than this computer")
    return location
