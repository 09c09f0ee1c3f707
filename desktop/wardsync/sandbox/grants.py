"""What a bearer token allows: the contract between the sandbox OAuth and FHIR servers.

Scopes follow SMART App Launch 2.0 (`user/Observation.rs`, `system/*.cruds`); the v1 forms
`.read`, `.write` and `.*` are accepted too (SMART 2.0 §3.3 "scopes for requesting clinical data").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# SMART v2 permission letters, in canonical order.
INTERACTIONS = "cruds"
_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


def parse_resource_scope(scope: str) -> tuple[str, str, frozenset[str]] | None:
    """Split `user/Observation.rs` into (context, resource type, permissions); None if not one."""
    m = _SCOPE.match(scope)
    if not m:
        return None
    context, rtype, perms = m.groups()
    perms = _V1.get(perms, perms)
    if not perms or any(p not in INTERACTIONS for p in perms):
        return None
    return context, rtype, frozenset(perms)


@dataclass(frozen=True, slots=True)
class Grant:
    """A verified access token: who holds it and what it allows.

    `subject` is the FHIR user reference (`Practitioner/demo-clinician`) for people and the
    client id for system clients. `expires_at` is epoch seconds.
    """

    client_id: str
    subject: str
    scopes: frozenset[str]
    expires_at: float
    display_name: str = ""
    ward: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def permits(self, resource_type: str, interaction: str) -> bool:
        """True if any scope allows `interaction` (one of c r u d s) on `resource_type`."""
        for scope in self.scopes:
            parsed = parse_resource_scope(scope)
            if parsed is None:
                continue
            _, rtype, perms = parsed
            if rtype in ("*", resource_type) and interaction in perms:
                return True
        return False
