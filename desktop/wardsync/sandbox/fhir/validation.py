"""Validate resources with `fhir.resources.R4B` and return their canonical JSON form.

The pydantic models check structure, datatypes and cardinality; they do not check required
code bindings, so the status-like codes the app relies on are checked here from one table
(R4 terminologies.html#required: a required binding admits only codes from its value set).
"""

from __future__ import annotations

import functools
import json
from datetime import date, time
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

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
    "json_invalid": "must be a JSON object",  # the models would parse a string as JSON
}


def validate_resource(resource: dict[str, Any]) -> dict[str, Any]:
    """Check `resource` against its R4B model and return it unchanged.

    The client's JSON is kept as sent (the models would rewrite instants and decimals), so
    the checks also reject what the models only accept by coercion: a JSON string where an
    object, number or boolean belongs, and nulls (R4 json.html). Raises InvalidResource with
    one Issue per problem, each naming the element (`Observation.status`) and what is wrong.
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
    issues.extend(_shape_issues(resource, model, rtype))
    if rtype == "Subscription":
        issues.extend(_subscription_issues(resource))
    if issues:
        raise InvalidResource(tuple(issues))
    return resource


def _subscription_issues(resource: dict[str, Any]) -> list[Issue]:
    """What this server cannot honour in a Subscription (docs/subscriptions.md)."""
    # Imported here: the subscriptions package builds on the store, which imports this module.
    from wardsync.sandbox.fhir.subscriptions.model import SubscriptionRefused, parse_subscription

    try:
        parse_subscription(resource)
    except SubscriptionRefused as exc:
        return [Issue("not-supported", f"{where}: {message}", where)
                for where, message in exc.problems]
    return []


def _shape_issues(given: Any, parsed: Any, where: str) -> list[Issue]:
    """Where the JSON as sent has another shape than what the model made of it."""
    if isinstance(parsed, BaseModel):
        if not isinstance(given, dict):
            return [Issue("structure", f"{where}: must be a JSON object", where)]
        attributes = _attributes_by_json_name(type(parsed))
        issues = []
        for key, value in given.items():
            path = f"{where}.{key}"
            if value is None:
                issues.append(Issue("structure", f"{path}: null is not allowed", path))
            elif key in attributes:
                issues.extend(_shape_issues(value, getattr(parsed, attributes[key]), path))
        return issues
    if isinstance(parsed, list):
        if not isinstance(given, list):
            return [Issue("structure", f"{where}: must be a JSON array", where)]
        issues = []
        for i, (item, parsed_item) in enumerate(zip(given, parsed, strict=False)):
            issues.extend(_shape_issues(item, parsed_item, f"{where}[{i}]"))
        return issues
    expected = _json_kind(parsed)
    if parsed is not None and _json_kind(given) != expected:
        return [Issue("value", f"{where}: must be a JSON {expected}", where)]
    return []


@functools.cache
def _attributes_by_json_name(model: type[BaseModel]) -> dict[str, str]:
    return {(field.alias or name): name for name, field in model.model_fields.items()}


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str | date | time):  # datetime is a date
        return "string"
    return type(value).__name__


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
            "extra_forbidden": "structure", "json_invalid": "structure"}.get(kind, "value")
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
