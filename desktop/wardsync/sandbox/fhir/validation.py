"""Validate resources with `fhir.resources.R4B` and return their canonical JSON form.

The pydantic models check structure, datatypes and cardinality; they do not check required
code bindings, so the status-like codes the app relies on are checked here from one table
(R4 terminologies.html#required: a required binding admits only codes from its value set).
"""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from wardsync.sandbox.fhir.errors import InvalidResource, Issue


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


_REQUEST_INTENTS = _codes(
    "proposal plan order original-order reflex-order filler-order instance-order option"
)
# (resource type, element) -> the codes of its required value set (R4, per resource page).
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Observation", "status"): _codes(
        "registered preliminary final amended corrected cancelled entered-in-error "
        "unknown"
    ),
    ("DiagnosticReport", "status"): _codes(
        "registered partial preliminary final amended corrected appended cancelled "
        "entered-in-error unknown"
    ),
    ("Encounter", "status"): _codes(
        "planned arrived triaged in-progress onleave finished cancelled entered-in-error "
        "unknown"
    ),
    ("Immunization", "status"): _codes("completed entered-in-error not-done"),
    ("MedicationRequest", "status"): _codes(
        "active on-hold cancelled completed entered-in-error stopped draft unknown"
    ),
    ("MedicationRequest", "intent"): _REQUEST_INTENTS,
    ("Task", "status"): _codes(
        "draft requested received accepted rejected ready cancelled in-progress on-hold "
        "failed completed entered-in-error"
    ),
    ("Task", "intent"): _REQUEST_INTENTS | {"unknown"},
    ("Communication", "status"): _codes(
        "preparation in-progress not-done on-hold stopped completed entered-in-error "
        "unknown"
    ),
    ("Location", "status"): _codes("active suspended inactive"),
    ("Patient", "gender"): _codes("male female other unknown"),
    ("Practitioner", "gender"): _codes("male female other unknown"),
    ("AuditEvent", "action"): _codes("C R U D E"),
    ("AuditEvent", "outcome"): _codes("0 4 8 12"),
}

_MESSAGES = {
    "missing": "is required",
    "model_field_validation.missing": "is required",
    "extra_forbidden": "is not an element of this type",
}


def validate_resource(resource: dict[str, Any]) -> dict[str, Any]:
    """Check `resource` against its R4B model; return it in canonical JSON form.

    Raises InvalidResource with one Issue per problem, each naming the element
    (`Observation.status`) and saying what is wrong.
    """
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise InvalidResource((Issue("required", "resourceType is required", "resourceType"),))
    _check_text(resource, rtype)
    issues = [
        Issue("code-invalid", f"{value!r} is not a valid {rtype}.{field}; expected one of "
              f"{', '.join(sorted(codes))}", f"{rtype}.{field}")
        for (typ, field), codes in REQUIRED_CODES.items()
        if typ == rtype and (value := resource.get(field)) is not None
        and (not isinstance(value, str) or value not in codes)
    ]
    try:
        model = get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        issues.extend(_issue(rtype, err) for err in exc.errors(include_url=False))
        raise InvalidResource(tuple(issues)) from None
    except RecursionError:
        raise InvalidResource((Issue("structure", "the resource is nested too deeply"),)) from None
    if issues:
        raise InvalidResource(tuple(issues))
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def _issue(rtype: str, err: Any) -> Issue:
    where = rtype
    for part in err.get("loc", ()):
        if isinstance(part, int):
            where += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            where += f".{part}"
    kind = str(err.get("type", ""))
    message = _MESSAGES.get(kind, str(err.get("msg", "is invalid")))
    code = {"missing": "required", "model_field_validation.missing": "required",
            "extra_forbidden": "structure"}.get(kind, "value")
    return Issue(code, f"{where}: {message}", where)


def _check_text(resource: dict[str, Any], rtype: str) -> None:
    """Reject strings that cannot be stored as UTF-8 (unpaired surrogates from `\\ud800`)."""
    try:
        json.dumps(resource, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidResource(
            (Issue("value", "a string holds an unpaired UTF-16 surrogate", rtype),)
        ) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidResource((Issue("structure", f"not JSON content: {exc}", rtype),)) from None
