"""The server's CapabilityStatement (R4 capabilitystatement.html), built from `search_params`
so it lists exactly the types, interactions and search parameters that are served.

With subscriptions, the Subscription entry advertises the topics (Backport IG STU 1.1
`capabilitystatement-subscriptiontopic-canonical`), the IG's operations and the retention
and retry limits (docs/subscriptions.md)."""

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
_IG = "http://hl7.org/fhir/uv/subscriptions-backport/"
TOPIC_CANONICAL_EXTENSION = (
    f"{_IG}StructureDefinition/capabilitystatement-subscriptiontopic-canonical")
SUBSCRIPTION_SERVER_R4 = f"{_IG}CapabilityStatement/backport-subscription-server-r4"


def _subscription_details() -> dict[str, Any]:
    # Imported here: the subscriptions package builds on the store, which builds on modules
    # this one shares.
    from wardsync.sandbox.fhir.subscriptions.delivery import RetryPolicy
    from wardsync.sandbox.fhir.subscriptions.ledger import DEFAULT_RETAINED_EVENTS
    from wardsync.sandbox.fhir.subscriptions.topics import TOPICS

    policy = RetryPolicy()
    return {
        "extension": [{"url": TOPIC_CANONICAL_EXTENSION, "valueCanonical": t.url}
                      for t in TOPICS],
        "documentation": (
            "Topic-based subscriptions (Subscriptions R5 Backport IG STU 1.1) on rest-hook and "
            "websocket, payload empty, id-only or full-resource; classic R4 criteria "
            "subscriptions on rest-hook. Needs a system/Subscription scope. Events are "
            f"retained for $events until delivered and while among the last "
            f"{DEFAULT_RETAINED_EVENTS} of their subscription. Failed deliveries are retried "
            f"with backoff from {policy.initial_s:g} s to {policy.cap_s:g} s; after "
            f"{policy.attempts_before_error} failures in a row the status becomes error and "
            f"the server keeps retrying every {policy.cap_s:g} s."),
        "operation": [
            {"name": "status", "definition": f"{_IG}OperationDefinition/"
             "backport-subscription-status"},
            {"name": "events", "definition": f"{_IG}OperationDefinition/"
             "backport-subscription-events"},
            {"name": "get-ws-binding-token", "definition": f"{_IG}OperationDefinition/"
             "backport-subscription-get-ws-binding-token"},
        ],
    }


def capability_statement(base_url: str, published: str, *,
                         subscriptions: bool = False) -> dict[str, Any]:
    """The CapabilityStatement for a server whose FHIR base is `base_url`."""
    resources = []
    for rtype, params in SEARCH_PARAMETERS.items():
        entry: dict[str, Any] = {
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
        }
        if rtype == "Subscription" and subscriptions:
            entry.update(_subscription_details())
        resources.append(entry)
    statement: dict[str, Any] = {
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
    if subscriptions:
        statement["instantiates"] = [SUBSCRIPTION_SERVER_R4]
    return statement


def _definition_id(rtype: str, name: str) -> str:
    if name.startswith("_"):
        return f"Resource-{name[1:]}"
    return f"{rtype}-{name}"
