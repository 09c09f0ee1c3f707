"""Typed errors at the FHIR boundary (R4 http.html#summary status codes, OperationOutcome).

Each error carries `user_message`: what a clinician reads in the panel ("Lab results could not
be loaded: server not reachable"). The technical detail stays in `str(error)` for the log and
never contains resource content.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue, reduced to what the app shows or logs."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()


class FhirError(Exception):
    """Base of every error the FHIR client raises."""

    user_message = "The clinical record server reported a problem"
    # Whether the same request may succeed later (after a backoff, a fresh token or a new
    # sign-in) rather than never, as a refused or conflicting write would.
    transient = False

    def __init__(self, message: str, *, status: int | None = None, issues: tuple[Issue, ...] = ()):
        super().__init__(message)
        self.status = status
        self.issues = issues


class Unreachable(FhirError):
    """No answer: connection refused, reset, DNS or a timeout."""

    user_message = "server not reachable"
    transient = True


class UntrustedCertificate(Unreachable):
    """TLS verification failed: the server's certificate is not trusted on this workstation.

    Hospitals with their own certificate authority add it with the `fhir.ca_bundle` setting.
    """

    user_message = "the server's security certificate is not trusted — please contact IT"


class AuthError(FhirError):
    """401 after one token refresh: the user has to sign in again."""

    user_message = "your sign-in has expired — please sign in again"
    transient = True


class Forbidden(FhirError):
    """403: the signed-in user's scopes do not allow this."""

    user_message = "you do not have permission to see or change this"
    transient = True  # scopes and grants can change; a backend client retries with backoff


class NotFound(FhirError):
    """404 / 410: the resource does not exist (or was deleted)."""

    user_message = "the record was not found on the server"


class Conflict(FhirError):
    """412 on a write with If-Match: someone else saved a newer version first."""

    user_message = "someone else saved a newer version of this record"


class InvalidResource(FhirError):
    """A resource that failed R4B validation, on the server (400/422) or on receipt."""

    user_message = "the server sent data that could not be read"


class ServerError(FhirError):
    """5xx and anything else unexpected from the server."""

    user_message = "the server had an error"
    transient = True


def issues_from_outcome(body: object) -> tuple[Issue, ...]:
    """Read an OperationOutcome body (anything else gives no issues)."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ()
    out = []
    for raw in body.get("issue") or ():
        if not isinstance(raw, Mapping):
            continue
        expression = raw.get("expression") or ()
        out.append(
            Issue(
                severity=str(raw.get("severity", "error")),
                code=str(raw.get("code", "unknown")),
                diagnostics=str(raw.get("diagnostics", "")),
                expression=tuple(str(e) for e in expression if isinstance(e, str)),
            )
        )
    return tuple(out)


_BY_STATUS: dict[int, type[FhirError]] = {
    400: InvalidResource,
    401: AuthError,
    403: Forbidden,
    404: NotFound,
    410: NotFound,
    412: Conflict,
    422: InvalidResource,
}


def error_class_for_status(status: int) -> type[FhirError]:
    """The typed error an HTTP error status maps to (R4 http.html#summary)."""
    return _BY_STATUS.get(status, ServerError if status >= 500 else FhirError)


def error_for_status(status: int, body: object, what: str) -> FhirError:
    """Map an HTTP status and optional OperationOutcome to the typed error."""
    issues = issues_from_outcome(body)
    detail = "; ".join(i.diagnostics for i in issues if i.diagnostics)[:300]
    cls = error_class_for_status(status)
    return cls(f"{what}: HTTP {status}" + (f" ({detail})" if detail else ""), status=status,
               issues=issues)
