"""Validation of received resources against the FHIR R4 structure (fhir.resources R4B models).

R4B (4.3.0) is structurally compatible with R4 for the resources the app uses
(docs/architecture.md §4). The app keeps the original JSON dict once it is known to be valid: the
model is only a gate, so the store and panels work on plain data.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from wardsync.fhir.errors import InvalidResource, Issue

# Above this many resources, validation runs in a worker thread so the event loop keeps
# serving the GUI between chunks (~0.2 ms per Observation on a 2-core workstation).
BULK_VALIDATION_THRESHOLD = 25


@functools.lru_cache(maxsize=64)
def _model(resource_type: str) -> Any:
    try:
        return get_fhir_model_class(resource_type)
    except KeyError:
        return None


def _expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_resource(data: object) -> dict:
    """Return `data` if it is a valid R4 resource, else raise InvalidResource naming the field."""
    if not isinstance(data, Mapping):
        raise InvalidResource("resource is not a JSON object")
    rtype = data.get("resourceType")
    if not isinstance(rtype, str) or (model := _model(rtype)) is None:
        raise InvalidResource(f"unknown resourceType {str(rtype)[:40]!r}")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        issues = tuple(
            Issue("error", "structure", err["msg"][:200], (_expression(rtype, err["loc"]),))
            for err in exc.errors()[:10]
        )
        where = ", ".join(i.expression[0] for i in issues)
        raise InvalidResource(f"invalid {rtype}: {where}", issues=issues) from None
    return dict(data)
