"""Typed errors of the sandbox FHIR store; the REST layer maps each to one HTTP status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a request, shaped like an OperationOutcome.issue.

    `code` is from the R4 IssueType value set (`invalid`, `required`, `structure`, `value`,
    `not-found`, `not-supported`, `conflict`, ...). `expression` is a FHIRPath-like location
    such as `Observation.code.coding[0].system`, or "" when the problem has no location.
    """

    code: str
    diagnostics: str
    expression: str = ""
    severity: str = "error"


class FhirStoreError(Exception):
    """Base of every error the store raises on purpose."""


class UnknownResourceType(FhirStoreError, LookupError):
    """The resource type is not served here (HTTP 404)."""

    def __init__(self, resource_type: str) -> None:
        super().__init__(f"resource type {resource_type!r} is not supported")
        self.resource_type = resource_type


class ResourceNotFound(FhirStoreError, LookupError):
    """No such resource, or no such version of it (HTTP 404). A LookupError, like KeyError."""

    def __init__(self, resource_type: str, id: str, version_id: str | None = None) -> None:
        what = f"{resource_type}/{id}" + (f"/_history/{version_id}" if version_id else "")
        super().__init__(f"{what} is not known")
        self.resource_type = resource_type
        self.id = id
        self.version_id = version_id


class VersionConflict(FhirStoreError):
    """An `If-Match` version did not match the current one (HTTP 412, R4 http.html#concurrency).

    `current` is None when the resource does not exist yet.
    """

    def __init__(self, resource_type: str, id: str, expected: str, current: str | None) -> None:
        now = f"version {current}" if current is not None else "no version"
        super().__init__(
            f"{resource_type}/{id}: expected version {expected} but the server has {now}"
        )
        self.resource_type = resource_type
        self.id = id
        self.expected = expected
        self.current = current


class InvalidRequest(FhirStoreError):
    """The request itself is wrong: type or id mismatch, bad id, not a resource (HTTP 400)."""

    def __init__(self, message: str, expression: str = "") -> None:
        super().__init__(message)
        self.issues = (Issue("invalid", message, expression),)


class InvalidResource(FhirStoreError):
    """The resource content breaks the FHIR rules (HTTP 422, R4 http.html#update)."""

    def __init__(self, issues: tuple[Issue, ...]) -> None:
        first = issues[0].diagnostics if issues else "invalid resource"
        super().__init__(first if len(issues) < 2 else f"{first} (+{len(issues) - 1} more)")
        self.issues = issues


class InvalidSearch(FhirStoreError):
    """A known search parameter has a value or modifier we cannot use (HTTP 400)."""

    def __init__(self, message: str, parameter: str = "") -> None:
        super().__init__(message)
        self.parameter = parameter
        self.issues = (Issue("invalid", message, parameter),)


class SearchTooCostly(InvalidSearch):
    """A search over the server's caps on sort keys, criteria or values (HTTP 400 with issue
    code `too-costly`, R4 valueset-issue-type: "stopped to protect server resources")."""

    def __init__(self, message: str, parameter: str = "") -> None:
        super().__init__(message, parameter)
        self.issues = (Issue("too-costly", message, parameter),)


class SearchTimedOut(FhirStoreError):
    """A search ran past the server's time limit and was stopped (HTTP 503 `too-costly`):
    the server stays responsive to everyone else, and the client may retry later."""
