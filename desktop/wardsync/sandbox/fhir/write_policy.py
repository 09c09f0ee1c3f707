"""Who may write what, beyond the token's scopes (docs/security.md §4).

SMART scopes say which resource types and interactions a token allows; they cannot say
"a nurse may amend her own note but not a potassium result". A hospital FHIR server enforces
such rules from its own role model; the sandbox enforces the ones WardSync relies on, so the
app is tested against a server that refuses what a hospital's would:

- **Laboratory results are the laboratory's.** A person (a token with user-level scopes)
  never creates, changes or deletes a DiagnosticReport, nor an Observation whose stored or
  new version is in the laboratory category: a forged critical potassium would page the
  whole ward, and a withdrawn report would silence a real one. Only backend systems
  (system-level scopes: the laboratory system) write them.
- **AuditEvent is append-only** (R4 auditevent.html: an audit trail is a record): created,
  never updated or deleted, by anyone.
- **A Communication speaks for its sender.** A person may create or change a Communication
  only with `sender` naming themselves (the token's fhirUser), and only one they sent: an
  acknowledgement of a critical result is the acknowledging clinician's statement.
- **Updates say which version they replace.** A PUT on an existing resource must carry
  `If-Match: W/"<versionId>"` (R4 http.html#concurrency); without it 428 Precondition
  Required (RFC 6585 §3), and `If-Match: *` is refused the same way: it says nothing about
  what the writer saw. A PUT on an id that does not exist yet is a create (R4
  http.html#upsert) and needs none; a second such PUT racing it finds the resource and gets
  428, so it cannot overwrite the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from wardsync.core.poke_rules import is_lab
from wardsync.sandbox.fhir.errors import FhirStoreError, Issue
from wardsync.sandbox.grants import Grant, parse_resource_scope

Interaction = Literal["create", "update", "delete"]

APPEND_ONLY_TYPES = frozenset({"AuditEvent"})
LABORATORY_OWNED_TYPES = frozenset({"DiagnosticReport"})


class PolicyRefused(FhirStoreError):
    """The token's scopes allow the interaction but the server's policy does not (HTTP 403,
    issue code `forbidden`). The message names the rule, never resource content."""

    def __init__(self, message: str, expression: str = "") -> None:
        super().__init__(message)
        self.issues = (Issue("forbidden", message, expression),)


class PreconditionRequired(FhirStoreError):
    """An update without a usable `If-Match` (HTTP 428, RFC 6585 §3)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.issues = (Issue("conflict", message),)


def acts_for_a_person(grant: Grant) -> bool:
    """True when the token is used on behalf of a signed-in person: it holds a user- or
    patient-level scope (SMART App Launch 2.0 §3.3). A backend system holds system-level
    scopes only."""
    for scope in grant.scopes:
        parsed = parse_resource_scope(scope)
        if parsed is not None and parsed[0] in ("user", "patient"):
            return True
    return False


def check_if_match(header: str | None, current_version: str | None) -> None:
    """Refuse an update of an existing resource that does not say which version it replaces."""
    if current_version is None:
        return  # a create by PUT: nothing to overwrite
    if header is None:
        raise PreconditionRequired(
            'an update must carry If-Match: W/"<versionId>" of the version it replaces')
    if header.strip() == "*":
        raise PreconditionRequired(
            'If-Match: * does not say which version is replaced; send W/"<versionId>"')


def check_write(
    grant: Grant, interaction: Interaction, resource_type: str,
    new: Mapping[str, Any] | None, current: Mapping[str, Any] | None,
) -> None:
    """Raise PolicyRefused if `grant` may not make this write.

    `new` is the body sent (None for a delete), `current` the stored version (None if there
    is none). Scopes have been checked already; this is what scopes cannot express.
    """
    if resource_type in APPEND_ONLY_TYPES and (interaction != "create" or current is not None):
        raise PolicyRefused(f"{resource_type} is append-only: create it with POST, never "
                            "change or delete it")
    if not acts_for_a_person(grant):
        return
    if resource_type in LABORATORY_OWNED_TYPES:
        raise PolicyRefused(f"only the laboratory system writes {resource_type} resources",
                            resource_type)
    if resource_type == "Observation" and (_is_laboratory(new) or _is_laboratory(current)):
        raise PolicyRefused("only the laboratory system writes laboratory results",
                            "Observation.category")
    if resource_type == "Communication":
        if current is not None and _sender(current) != grant.subject:
            raise PolicyRefused("only its sender may change or delete a Communication",
                                "Communication.sender")
        if new is not None and _sender(new) != grant.subject:
            raise PolicyRefused(
                f"Communication.sender must be the signed-in user ({grant.subject})",
                "Communication.sender")


def _is_laboratory(resource: Mapping[str, Any] | None) -> bool:
    # The very rule the relay and the app use to treat an Observation as a lab result
    # (core/poke_rules.py), so nothing they treat as one escapes this check.
    return resource is not None and is_lab(resource)


def _sender(resource: Mapping[str, Any]) -> str | None:
    sender = resource.get("sender")
    if not isinstance(sender, Mapping):
        return None
    reference = sender.get("reference")
    return reference if isinstance(reference, str) else None
