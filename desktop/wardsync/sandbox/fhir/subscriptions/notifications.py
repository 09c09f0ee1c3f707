"""Notification Bundles and status Parameters, shaped as the Backport IG profiles them.

- `backport-subscription-status-r4` (Parameters): `subscription` (valueReference), `topic`
  (valueCanonical), `status` (valueCode), `type` (valueCode: handshake | heartbeat |
  event-notification | query-status | query-event), `events-since-subscription-start`
  (valueString: R4 has no integer64), and one `notification-event` per event with parts
  `event-number` (valueString), `timestamp` (valueInstant) and, unless the payload is
  `empty`, `focus` (valueReference); `error` (valueCodeableConcept) when the subscription is
  in error.
- `backport-subscription-notification-r4` (Bundle): type `history`, first entry the status
  Parameters with a request matching `GET [base]/Subscription/[id]/$status` (history Bundles
  need `entry.request`, bdl-3/bdl-4); then, for `id-only` and `full-resource`, one entry per
  event with the focus's `fullUrl` and the request that changed it; `full-resource` adds the
  resource itself, `id-only` never does (IG "Payload Types").
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionEvent
from wardsync.sandbox.fhir.subscriptions.model import SubscriptionSpec

STATUS_PROFILE = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                  "backport-subscription-status-r4")
NOTIFICATION_PROFILE = ("http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                        "backport-subscription-notification-r4")
NOTIFICATION_TYPES = ("handshake", "heartbeat", "event-notification", "query-status",
                      "query-event")

_METHOD = {"create": ("POST", "201"), "update": ("PUT", "200"), "delete": ("DELETE", "204")}


def status_parameters(spec: SubscriptionSpec, base: str, kind: str, status: str,
                      events_since_start: int, events: Sequence[SubscriptionEvent],
                      content: str, error: str | None = None) -> dict[str, Any]:
    """The status Parameters for one notification or query."""
    if kind not in NOTIFICATION_TYPES:
        raise ValueError(f"unknown notification type {kind!r}")
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{spec.id}"}},
    ]
    if spec.topic_url is not None:
        params.append({"name": "topic", "valueCanonical": spec.topic_url})
    params += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": event.timestamp},
        ]
        if content != "empty":
            parts.append({"name": "focus",
                          "valueReference": {"reference": f"{base}/{event.reference}"}})
        params.append({"name": "notification-event", "part": parts})
    if error:
        params.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()),
            "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def notification_bundle(spec: SubscriptionSpec, base: str, kind: str, status: str,
                        events_since_start: int, events: Sequence[SubscriptionEvent],
                        content: str, timestamp: str,
                        resources: Mapping[int, dict[str, Any]] | None = None,
                        error: str | None = None) -> dict[str, Any]:
    """A notification Bundle; `resources` maps event numbers to their focus versions
    (used only when `content` is `full-resource`)."""
    parameters = status_parameters(spec, base, kind, status, events_since_start, events,
                                   content, error)
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{parameters['id']}",
        "resource": parameters,
        "request": {"method": "GET", "url": f"{base}/Subscription/{spec.id}/$status"},
        "response": {"status": "200"},
    }]
    if content != "empty":
        for event in events:
            method, code = _METHOD[event.interaction]
            entry: dict[str, Any] = {
                "fullUrl": f"{base}/{event.reference}",
                "request": {"method": method,
                            "url": event.resource_type if method == "POST" else event.reference},
                "response": {"status": code},
            }
            resource = (resources or {}).get(event.number)
            if content == "full-resource" and resource is not None and method != "DELETE":
                entry["resource"] = resource
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()),
            "meta": {"profile": [NOTIFICATION_PROFILE]}, "type": "history",
            "timestamp": timestamp, "entry": entries}


def status_bundle(entries: Sequence[dict[str, Any]], base: str) -> dict[str, Any]:
    """The `$status` answer: a searchset of `query-status` Parameters (IG $status)."""
    return {
        "resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset",
        "total": len(entries),
        "entry": [{"fullUrl": f"urn:uuid:{p['id']}", "resource": p,
                   "search": {"mode": "match"}} for p in entries],
    }
