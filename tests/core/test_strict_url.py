"""core/strict_url.py: only URLs that Python and a browser read alike get through.

`whatwg_view` below is a small, independent model of what a browser navigates to (WHATWG URL
Standard, basic URL parser, special schemes): the property tests check that whatever the strict
parser accepts, the browser's host, port and path are the ones Python saw.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardsync.core.strict_url import UnsafeUrl, parse_strict_url

_C0_OR_SPACE = "".join(chr(c) for c in range(0x21))


def _whatwg_ipv4(host: str) -> str | None:
    """WHATWG "IPv4 parser": 1-4 parts, each decimal, 0x-hex or 0-octal; None if not IPv4."""
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts.pop()
    last = parts[-1] if parts else ""
    ends_in_number = last.isdigit() or (last[:2].lower() == "0x" and all(
        c in "0123456789abcdefABCDEF" for c in last[2:]))
    if not ends_in_number or len(parts) > 4:
        return None
    numbers = []
    for part in parts:
        if part[:2].lower() == "0x":
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            numbers.append(int(part[1:], 8))
        else:
            numbers.append(int(part))
    value = numbers[-1]
    for i, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def whatwg_view(url: str) -> tuple[str, str, str]:
    """(scheme, host, path) as a browser reads an http(s) URL."""
    url = url.strip(_C0_OR_SPACE)
    url = url.replace("\t", "").replace("\n", "").replace("\r", "")
    scheme, _, rest = url.partition(":")
    rest = rest.lstrip("/\\")  # "special authority ignore slashes state"
    end = min((i for i, c in enumerate(rest) if c in "/\\?#"), default=len(rest))
    authority, remainder = rest[:end], rest[end:]
    host_port = authority.rpartition("@")[2]
    if host_port.startswith("["):
        host = host_port[: host_port.index("]") + 1]
    else:
        host = unquote(host_port.rpartition(":")[0] if ":" in host_port else host_port).lower()
        host = _whatwg_ipv4(host) or host
    path_end = min((i for i, c in enumerate(remainder) if c in "?#"), default=len(remainder))
    return scheme.lower(), host, remainder[:path_end].replace("\\", "/") or "/"


def python_view(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme, f"[{host}]" if ":" in host else host, parts.path or "/"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://evil.example\\@127.0.0.1:1234/callback", "backslash"),
        ("http://evil.example@127.0.0.1:1234/callback", "userinfo"),
        ("http://user:pw@127.0.0.1:1234/callback", "userinfo"),
        ("http://127.0.0.1:1234\\@evil.example/callback", "backslash"),
        ("http://127.0.0.1:1234/call\tback", "control"),
        ("http://127.0.0.1:1234/callback\n", "control"),
        (" http://127.0.0.1:1234/callback", "control"),
        ("http://127.0.0.1:1234/caf\u00e9", "non-ASCII"),
        ("http://127.1:1234/callback", "dotted-decimal"),
        ("http://0x7f.0.0.1:1234/callback", "dotted-decimal"),
        ("http://2130706433:1234/callback", "dotted-decimal"),
        ("http://127.0.0.01:1234/callback", "dotted-decimal"),
        ("http://127.0.0.1%2e:1234/callback", "canonical form"),
        ("http://127.0.0.1:1234/x/../callback", "dot segment"),
        ("http://127.0.0.1:1234/x/%2e%2E/callback", "dot segment"),
        ("http://[::1%25eth0]:1234/callback", "canonical form"),
        ("http://[0:0:0:0:0:0:0:1]:1234/callback", "RFC 5952"),
        ("http://127.0.0.1:01234/callback", "canonical form"),
        ("http://127.0.0.1:99999/callback", "port"),
        ("HTTP://127.0.0.1:1234/callback", "canonical form"),
        ("javascript://127.0.0.1/%0aalert(1)", "scheme"),
        ("http:/127.0.0.1:1234/callback", "canonical form"),
        ("http:127.0.0.1:1234/callback", "canonical form"),
        ("http://Evil.Example/callback", "canonical form"),
        ("http://evil.example./callback", "host name"),
        ("", "empty"),
    ],
)
def test_urls_read_differently_by_a_browser_are_refused(url: str, reason: str):
    with pytest.raises(UnsafeUrl) as refused:
        parse_strict_url(url)
    assert reason.lower() in refused.value.reason.lower()
    assert url.strip() == "" or url not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "host", "port", "target"),
    [
        ("http://127.0.0.1:1234/callback", "127.0.0.1", 1234, "http://127.0.0.1:1234/callback"),
        ("http://[::1]:80/", "[::1]", 80, "http://[::1]/"),
        ("https://idp.hospital.example/auth?x=1&y=a%20b", "idp.hospital.example", None,
         "https://idp.hospital.example/auth?x=1&y=a%20b"),
        ("https://fhir.example", "fhir.example", None, "https://fhir.example/"),
    ],
)
def test_canonical_urls_are_read_as_written(url, host, port, target):
    parsed = parse_strict_url(url)
    assert (parsed.host, parsed.port, parsed.navigation_target()) == (host, port, target)
    assert whatwg_view(url) == python_view(url)


def test_added_parameters_cannot_escape_the_query():
    base = parse_strict_url("http://127.0.0.1:1234/callback?keep=1")
    url = base.with_query_params([("state", "a&code=evil#x"), ("error_description", "a b/\\")])
    assert url == ("http://127.0.0.1:1234/callback?keep=1&state=a%26code%3Devil%23x"
                   "&error_description=a%20b%2F%5C")
    assert whatwg_view(url)[1] == "127.0.0.1"


# Pieces an attacker splices into an authority and a path.
_PIECES = st.sampled_from([
    "http://", "https://", "HTTP://", "http:\\\\", "http:/", "127.0.0.1", "[::1]", "evil.example",
    "0x7f", "127.1", "\\", "@", ":", "1234", "/", "/callback", "?", "#", ".", "..", "%2e",
    "%40", "%5c", "\t", "\n", " ", "\x00", "[", "]", "a", "0", "\u00e9", "%",
])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=10).map("".join))
def test_whatever_is_accepted_a_browser_reads_as_python_does(url: str):
    try:
        parsed = parse_strict_url(url)
    except UnsafeUrl:
        return
    assert whatwg_view(url) == python_view(url)
    assert whatwg_view(url)[1] == parsed.host
    assert urlsplit(url).port == parsed.port


_HOSTS = st.sampled_from(["127.0.0.1", "[::1]", "fhir.example", "10.0.0.1", "a-b.example"])
_INSERTS = st.sampled_from(["\\", "@", "evil.example@", "\t", "%2e", "..", ".", ":", "%40",
                            "0x7f.", "\n", "#", "?", "//", "[", "%"])


@settings(max_examples=2000, deadline=None)
@given(_HOSTS, st.sampled_from(["", ":80", ":1234", ":0", ":01234"]),
       st.lists(st.sampled_from(["callback", "a", "fhir", "x%20y", "~u"]), max_size=3),
       st.integers(min_value=0, max_value=60), _INSERTS)
def test_one_hostile_character_in_a_good_url_is_refused_or_harmless(
        host, port, segments, at, insert):
    good = f"http://{host}{port}/" + "/".join(segments)
    at = min(at, len(good))
    url = good[:at] + insert + good[at:]
    try:
        parsed = parse_strict_url(url)
    except UnsafeUrl:
        return
    assert whatwg_view(url) == python_view(url)
    assert parsed.host == whatwg_view(url)[1]


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_is_either_refused_or_read_alike(url: str):
    try:
        parse_strict_url("http://127.0.0.1:1234/" + url)
    except UnsafeUrl:
        return
    full = "http://127.0.0.1:1234/" + url
    assert whatwg_view(full) == python_view(full)


@pytest.mark.parametrize(
    ("url", "browser_host"),
    [
        ("http://evil.example\\@127.0.0.1:1234/callback", "evil.example"),
        ("http://127.0.0.1:1234\\@evil.example/callback", "127.0.0.1"),
        ("http://0x7f.1:1234/callback", "127.0.0.1"),
    ],
)
def test_the_browser_model_sees_what_urlsplit_misses(url: str, browser_host: str):
    """The model the properties rely on does tell the two readings apart."""
    assert whatwg_view(url)[1] == browser_host
    assert whatwg_view(url) != python_view(url)
