"""The server's CapabilityStatement (R4 capabilitystatement.html), built from `search_params`
so it lists exactly the types, interactions and search parameters that are served."""

from __future__ import annotations

from typing import Any

from wardsync._version import __version__
from wardsync.sandbox.fhir.search_params import (
    COMMON_PARAMETERS,
    SEARCH_PARAMETERS,
    TYPE_INTERACTIONS,
    include_params,
)

FHIR_VERSION = "4.0.1"
_PARAM_DEFINITION = "http://hl7.org/fhir/SearchParameter/"


def capability_statement(base_url: str, published: str) -> dict[str, Any]:
    """The CapabilityStatement for a server whose FHIR base is `base_url`."""
    resources = []
    for rtype, params in SEARCH_PARAMETERS.items():
        resources.append({
            "type": rtype,
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": False,
            "conditionalUpdate": False,
            "searchInclude": [f"{rtype}:{p.name}" for p in include_params(rtype)],
            "searchParam": [
                {
                    "name": p.name,
                    "definition": f"{_PARAM_DEFINITION}{_definition_id(rtype, p.name)}",
                    "type": p.kind,
                    "documentation": p.description,
                }
                for p in COMMON_PARAMETERS + params
            ],
        })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "WardSync sandbox",
        "kind": "instance",
        "software": {"name": "WardSync sandbox FHIR server", "version": __version__},
        "implementation": {"description": "Synthetic data only", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": False,
                "description": "Bearer tokens (SMART on FHIR scopes) on every endpoint "
                               "but /metadata",
            },
            "resource": resources,
            "searchParam": [
                {"name": name, "type": kind, "documentation": text}
                for name, kind, text in (
                    ("_count", "number", "Page size (default 50, at most 500)"),
                    ("_sort", "special", "_lastUpdated, _id or date; '-' for descending"),
                    ("_include", "special", "Type:parameter for the searchInclude values"),
                    ("_summary", "token", "count: only the total"),
                )
            ],
        }],
    }


def _definition_id(rtype: str, name: str) -> str:
    if name.startswith("_"):
        return f"Resource-{name[1:]}"
    return f"{rtype}-{name}"
