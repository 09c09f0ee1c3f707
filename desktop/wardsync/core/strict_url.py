"""URLs read the same way by Python and by a browser, or refused.

Python's `urllib.parse.urlsplit` follows RFC 3986; a browser follows the WHATWG URL Standard
(https://url.spec.whatwg.org/). They disagree on exactly the inputs an attacker crafts:
`http://evil.example\\@127.0.0.1:1234/callback` is host 127.0.0.1 to `urlsplit` but host
`evil.example` to a browser, which treats `\\` as `/` in special schemes (WHATWG "special
authority ignore slashes" and "authority" states); a browser strips tabs and newlines anywhere
and leading/trailing C0 controls and spaces (WHATWG "basic URL parser" step 1-3); it reads
`0x7f.1` and `127.1` as IPv4 addresses (WHATWG "IPv4 parser"), percent-decodes the host,
and resolves `.`/`%2e` path segments.

So a URL that decides where a secret goes (an OAuth redirect URI, an authorization or token
endpoint) is accepted only if it is in a small subset on which both parsers agree: `http` or
`https`, a lowercase ASCII DNS name or an IP literal in canonical form, an optional decimal
port, a path and query of RFC 3986 `pchar`s without dot segments, no userinfo, no backslash,
no whitespace or control character, no non-ASCII. Everything else is refused, never repaired:
repairing is how the two readings drift apart.

Pure Python, no I/O (docs/architecture.md §1: core imports no I/O library).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_CHARS = 2048
MAX_PORT = 65535

# RFC 3986 §3.3: pchar = unreserved / pct-encoded / sub-delims / ":" / "@"; path adds "/",
# query adds "/" and "?" (§3.4). Deliberately absent: "\\", whitespace, controls, non-ASCII,
# and the characters a browser would percent-encode or treat specially (`"<>^`{|}` and "#").
_PCHARS = r"A-Za-z0-9\-._~!$&'()*+,;=:@"
_PCT = r"%[0-9A-Fa-f]{2}"
_URL = re.compile(
    r"(?P<scheme>[a-z]+)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[a-z0-9.\-]+)"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?"
    rf"(?P<path>/(?:[{_PCHARS}/]|{_PCT})*)?"
    rf"(?:\?(?P<query>(?:[{_PCHARS}/?]|{_PCT})*))?"
    rf"(?:#(?P<fragment>(?:[{_PCHARS}/?]|{_PCT})*))?",
    re.ASCII,
)
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?", re.ASCII)
# WHATWG "ends in a number checker": a host whose last label is all digits, or 0x-hex, is
# parsed as IPv4 by a browser (`127.1`, `0x7f.0.0.1`, `2130706433`).
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0[xX][0-9A-Fa-f]*)", re.ASCII)


class UnsafeUrl(ValueError):
    """A URL outside the subset that Python and browsers read alike; `reason` says why
    (it never repeats the URL, which may carry a code or a token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StrictUrl:
    """An absolute http(s) URL in the agreed subset. `host` is lowercase; an IPv6 literal is
    kept with its brackets; `port` is None when absent (the scheme's default applies)."""

    scheme: str
    host: str
    port: int | None
    path: str
    query: str | None
    fragment: str | None

    @property
    def effective_port(self) -> int:
        """The port a browser connects to (WHATWG drops a default port; both mean it)."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.scheme]

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address, or None for a DNS name."""
        try:
            return ipaddress.ip_address(self.host.strip("[]"))
        except ValueError:
            return None

    @property
    def is_loopback_literal(self) -> bool:
        """True for an IP literal in 127.0.0.0/8 or ::1; `localhost` is a name, not one
        (RFC 8252 §8.3: the name may resolve elsewhere)."""
        ip = self.ip
        return ip is not None and ip.is_loopback

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): where a browser would send the request (RFC 6454 §4)."""
        return (self.scheme, self.host, self.effective_port)

    def navigation_target(self) -> str:
        """The URL as a browser serializes it after parsing: default port dropped, empty
        path as "/" (WHATWG "URL serializer"). Equal targets are the same navigation."""
        port = "" if self.port in (None, DEFAULT_PORTS[self.scheme]) else f":{self.port}"
        query = "" if self.query is None else f"?{self.query}"
        fragment = "" if self.fragment is None else f"#{self.fragment}"
        return f"{self.scheme}://{self.host}{port}{self.path or '/'}{query}{fragment}"

    def with_query_params(self, params: list[tuple[str, str]]) -> str:
        """This URL with `params` appended to its own query (RFC 6749 §3.1.2: the redirect
        URI's query is kept) and no fragment; every added name and value is percent-encoded
        with nothing left as a delimiter."""
        extra = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
        query = f"{self.query}&{extra}" if self.query else extra
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.path or '/'}?{query}"


def parse_strict_url(text: str) -> StrictUrl:
    """Parse `text` or raise UnsafeUrl. Accepted URLs mean the same to `urlsplit` and to a
    WHATWG parser (module docstring); nothing is normalised on the way in."""
    if not isinstance(text, str) or not text:
        raise UnsafeUrl("empty URL")
    if len(text) > MAX_URL_CHARS:
        raise UnsafeUrl("URL too long")
    if not text.isascii() or any(c <= " " or c == "\x7f" for c in text):
        # WHATWG strips tab/LF/CR anywhere and C0/space at the ends; urlsplit keeps some.
        raise UnsafeUrl("whitespace, control or non-ASCII character")
    if "\\" in text:
        raise UnsafeUrl("backslash (a browser reads it as '/')")
    match = _URL.fullmatch(text)
    if match is None:
        scheme, sep, rest = text.partition("://")
        authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if sep and "@" in authority:
            raise UnsafeUrl("userinfo in the authority")
        raise UnsafeUrl("not an absolute http(s) URL in canonical form")
    scheme = match["scheme"]
    if scheme not in SCHEMES:
        raise UnsafeUrl("scheme is not http or https")
    host = match["host"]
    _check_host(host)
    port = int(match["port"]) if match["port"] else None
    if port is not None and port > MAX_PORT:
        raise UnsafeUrl("port out of range")
    path = match["path"] or ""
    for segment in path.split("/"):
        # WHATWG "single-dot/double-dot URL path segment" includes %2e forms; urlsplit
        # resolves none of them.
        if unquote(segment) in (".", ".."):
            raise UnsafeUrl("dot segment in the path")
    return StrictUrl(scheme, host, port, path, match["query"], match["fragment"])


def _check_host(host: str) -> None:
    if host.startswith("["):
        try:
            address = ipaddress.IPv6Address(host[1:-1])  # no zone id: "%" is not in the pattern
        except ValueError:
            raise UnsafeUrl("malformed IPv6 literal") from None
        if f"[{address.compressed}]" != host:
            # RFC 5952 §4 is also what a browser serializes (WHATWG "IPv6 serializer").
            raise UnsafeUrl("IPv6 literal not in canonical form (RFC 5952)")
        return
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # A browser reads this as IPv4 whatever its form; accept the one canonical dotted
        # quad (ipaddress refuses leading zeros, which a browser reads as octal).
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UnsafeUrl("IPv4 address not in dotted-decimal form") from None
        return
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise UnsafeUrl("malformed host name")
