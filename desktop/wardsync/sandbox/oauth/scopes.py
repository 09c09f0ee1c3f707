"""Scope narrowing: what a client gets when it asks for scopes (RFC 6749 §3.3).

The server may grant less than requested and then MUST say what it granted (RFC 6749 §5.1
`scope`). SMART resource scopes (`user/Observation.rs`, SMART App Launch 2.0 §3.3) are
intersected with the client's allowed patterns: `user/*.cruds` allowed and `user/Patient.rs`
asked gives `user/Patient.rs`; `system/Observation.cru` allowed and `system/*.rs` asked gives
`system/Observation.r`. Any other scope (`openid`, `fhirUser`, `offline_access`) is granted only
if it is allowed verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from wardsync.sandbox.grants import INTERACTIONS, parse_resource_scope

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
MAX_SCOPE_TOKENS = 100


def split_scope(scope: str) -> list[str] | None:
    """Split a space-delimited scope string; None if any token is not a valid scope-token
    (RFC 6749 §3.3) or there are absurdly many. Duplicates are dropped, order kept."""
    tokens = [t for t in scope.split(" ") if t]
    if len(tokens) > MAX_SCOPE_TOKENS or not all(_SCOPE_TOKEN.match(t) for t in tokens):
        return None
    return list(dict.fromkeys(tokens))


def _canonical(perms: Iterable[str]) -> str:
    return "".join(p for p in INTERACTIONS if p in set(perms))


def _narrow_one(requested: str, allowed: tuple[str, ...]) -> list[str]:
    """The part of one requested scope that the allowed patterns cover."""
    if requested in allowed:
        return [requested]
    parsed = parse_resource_scope(requested)
    if parsed is None:
        return []
    context, rtype, perms = parsed
    granted: list[str] = []
    for pattern in allowed:
        allowed_parsed = parse_resource_scope(pattern)
        if allowed_parsed is None:
            continue
        a_context, a_rtype, a_perms = allowed_parsed
        if a_context != context:
            continue
        if rtype == "*":
            g_rtype = a_rtype
        elif a_rtype in ("*", rtype):
            g_rtype = rtype
        else:
            continue
        g_perms = perms & a_perms
        if not g_perms:
            continue
        if g_rtype == rtype and g_perms == perms:
            # Fully covered: echo the client's own spelling (v1 `.read` stays `.read`).
            return [requested]
        granted.append(f"{context}/{g_rtype}.{_canonical(g_perms)}")
    return granted


def narrow_scopes(requested: Iterable[str], allowed: tuple[str, ...]) -> list[str]:
    """requested ∩ allowed, in request order, without duplicates."""
    out: dict[str, None] = {}
    for scope in requested:
        for granted in _narrow_one(scope, allowed):
            out[granted] = None
    return list(out)


def is_within(requested: Iterable[str], granted: Iterable[str]) -> bool:
    """True if every requested scope is covered by the granted ones (a refresh may only
    narrow the original grant, RFC 6749 §6)."""
    granted_t = tuple(granted)
    for scope in requested:
        narrowed = _narrow_one(scope, granted_t)
        if narrowed != [scope]:
            return False
    return True
