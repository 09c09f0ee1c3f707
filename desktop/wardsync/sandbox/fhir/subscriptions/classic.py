"""Classic R4 rest-hook notifications, in the request shapes HAPI FHIR sends.

R4 subscription.html#rest-hook: "If the subscription has a payload, the server SHALL send
the resource ... as a PUT to `[endpoint]/[type]/[id]`"; without a payload "an empty POST
to the endpoint". HAPI FHIR also sends `DELETE [endpoint]/[type]/[id]` when a subscribed
resource is deleted (payload set). Each event is one request; `channel.header` values are
sent as HTTP headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionEvent
from wardsync.sandbox.fhir.subscriptions.model import SubscriptionSpec

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class HookRequest:
    """One HTTP request to a subscriber's endpoint."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None


def classic_request(spec: SubscriptionSpec, event: SubscriptionEvent,
                    resource: dict[str, Any] | None) -> HookRequest:
    """The request that reports `event`; `resource` is the focus version (payload only)."""
    headers = spec.headers
    if spec.payload_mime is None:
        return HookRequest("POST", spec.endpoint, headers, None)
    url = f"{spec.endpoint.rstrip('/')}/{event.resource_type}/{event.id}"
    if event.interaction == "delete" or resource is None:
        return HookRequest("DELETE", url, headers, None)
    body = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HookRequest("PUT", url, (*headers, ("Content-Type", f"{FHIR_JSON}; charset=utf-8")),
                       body)
