"""Pure rules: scope narrowing (RFC 6749 §3.3) and redirect URI matching (RFC 8252 §7.3)."""

from __future__ import annotations

import pytest

from wardsync.sandbox.oauth import OAuthClient, default_clients, default_demo_users
from wardsync.sandbox.oauth.scopes import is_within, narrow_scopes, split_scope

DESKTOP_ALLOWED = ("openid", "fhirUser", "offline_access", "user/*.cruds")
LAB_ALLOWED = ("system/Observation.cru", "system/Patient.rs")


@pytest.mark.parametrize(
    ("requested", "allowed", "granted"),
    [
        (["user/Observation.rs"], DESKTOP_ALLOWED, ["user/Observation.rs"]),
        (["user/Observation.read"], DESKTOP_ALLOWED, ["user/Observation.read"]),  # SMART v1
        (["user/*.*"], DESKTOP_ALLOWED, ["user/*.*"]),
        (["patient/Observation.rs"], DESKTOP_ALLOWED, []),
        (["system/Observation.cruds"], LAB_ALLOWED, ["system/Observation.cru"]),
        (["system/Observation.d"], LAB_ALLOWED, []),
        (["system/*.rs"], LAB_ALLOWED, ["system/Observation.r", "system/Patient.rs"]),
        (["openid", "profile", "launch/patient"], DESKTOP_ALLOWED, ["openid"]),
        (["user/Observation.xyz"], DESKTOP_ALLOWED, []),
    ],
)
def test_narrow_scopes(requested, allowed, granted):
    assert narrow_scopes(requested, allowed) == granted


def test_refresh_scope_may_only_narrow():
    granted = ("openid", "user/*.cruds")
    assert is_within(["user/Patient.rs", "openid"], granted)
    assert not is_within(["offline_access"], granted)
    assert not is_within(["user/Patient.rs"], ("user/Observation.rs",))


def test_split_scope_refuses_characters_outside_rfc6749():
    assert split_scope("openid  user/Patient.rs openid") == ["openid", "user/Patient.rs"]
    assert split_scope('bad"quote') is None
    assert split_scope("back\\slash") is None
    assert split_scope("tab\there") is None
    assert split_scope(" ".join(f"s{i}" for i in range(101))) is None


@pytest.fixture
def desktop() -> OAuthClient:
    clients = default_clients({"lab-system": "x", "ward-devices": "y"})
    return next(c for c in clients if c.client_id == "wardsync-desktop")


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("http://127.0.0.1:51234/callback", True),
        ("http://127.0.0.1/callback", True),
        ("http://127.0.0.1:8080/", True),
        ("http://[::1]:51234/callback", True),
        ("http://localhost:51234/callback", False),  # RFC 8252 §8.3
        ("https://127.0.0.1:51234/callback", False),
        ("http://127.0.0.1:51234/callback/extra", False),
        ("http://127.0.0.1:51234/callback?x=1", False),
        ("http://127.0.0.1:51234/callback#frag", False),
        ("http://127.0.0.2:51234/callback", False),  # a different loopback address
        ("http://127.0.0.1:99999/callback", False),  # not a port
        ("http://[::1/callback", False),
        ("http://10.0.0.1:51234/callback", False),
        ("", False),
        # Read differently by urlsplit and by a browser (core/strict_url.py): the browser
        # would take the code to evil.example.
        ("http://evil.example\\@127.0.0.1:51234/callback", False),
        ("http://evil.example@127.0.0.1:51234/callback", False),
        ("http://127.0.0.1:51234\\@evil.example/callback", False),
        ("http://127.0.0.1:51234/call\tback", False),
        ("http://127.0.0.1:51234/callback\n", False),
        ("http://127.1:51234/callback", False),
        ("http://0x7f.0.0.1:51234/callback", False),
        ("http://127.0.0.1:51234/x/../callback", False),
        ("http://127.0.0.1:51234/%2e/callback", False),
        ("http://[0:0:0:0:0:0:0:1]:51234/callback", False),
        ("http://127.0.0.1:051234/callback", False),
    ],
)
def test_loopback_redirects_match_any_port_and_nothing_else(desktop: OAuthClient, uri, ok):
    assert desktop.accepts_redirect_uri(uri) is ok


def test_confidential_clients_get_secrets_from_the_callers_source():
    calls: list[str] = []

    def source(client_id: str) -> str:
        calls.append(client_id)
        return f"secret-for-{client_id}"

    clients = {c.client_id: c for c in default_clients(source)}
    assert clients["lab-system"].secret == "secret-for-lab-system"
    assert clients["ward-devices"].secret == "secret-for-ward-devices"
    assert clients["wardsync-desktop"].secret is None
    assert clients["wardsync-relay"].secret == "secret-for-wardsync-relay"
    assert sorted(calls) == ["lab-system", "ward-devices", "wardsync-relay"]
    with pytest.raises(ValueError, match="lab-system"):
        default_clients(lambda _cid: "")


def test_default_demo_users():
    users = {u.username: u for u in default_demo_users()}
    assert users["demo.clinician"].fhir_user == "Practitioner/demo-clinician"
    assert users["demo.clinician"].display_name == "Dr Demo Clinician"
    assert users["demo.clinician"].role == "Doctor"
    assert users["demo.nurse"].fhir_user == "Practitioner/demo-nurse"
    assert users["demo.nurse"].display_name == "Nurse Demo Nightingale"
    assert users["demo.nurse"].role == "Nurse"
    assert {u.password for u in users.values()} == {"demo"}
