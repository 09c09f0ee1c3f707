"""Reading topic-based notification Bundles (FHIR Subscriptions R5 Backport IG STU 1.1, R4).

A notification is a Bundle of type `history` whose first entry is the IG's
`backport-subscription-status-r4` Parameters: `subscription` (valueReference), `topic`
(valueCanonical), `status`, `type` (handshake | heartbeat | event-notification | query-status
| query-event), `events-since-subscription-start` (valueString: R4 has no integer64) and one
`notification-event` per event with `event-number`, `timestamp` and, unless the payload is
`empty`, `focus` (IG "Notifications", "Payload Types").

Parsing is strict and bounded: anything that is not that shape raises `MalformedNotification`
with a reason that is safe to log (never the content), and the endpoint answers 400. Nothing
is lost by refusing: the server retries, the event numbers show the gap, and the
reconciliation poll finds the change anyway (docs/relay.md "Subscriptions").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

NOTIFICATION_TYPES = frozenset(
    {"handshake", "heartbeat", "event-notification", "query-status", "query-event"})
MAX_EVENTS = 1000  # the sandbox's $events answers at most 1000; a Bundle with more is refused
MAX_EVENT_NUMBER = 2**53 - 1
MAX_REFERENCE_CHARS = 2048
_NUMBER = re.compile(r"[0-9]{1,16}")
# `[base/]Type/id[/_history/vid]` (R4 references.html#literal; ids are [A-Za-z0-9\-\.]{1,64}).
_FOCUS = re.compile(
    r"(?:.*/)?(?P<type>[A-Z][A-Za-z]{1,63})/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<vid>[A-Za-z0-9\-.]{1,64}))?")
_SUB_ID = re.compile(r"(?:.*/)?Subscription/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/.*)?")


class MalformedNotification(ValueError):
    """Not a notification this relay can read; the message is a reason code, safe to log."""


@dataclass(frozen=True, slots=True)
class NotificationEvent:
    """One `notification-event`: its number and, unless the payload is `empty`, what changed."""

    number: int
    ref: str | None  # "Type/id"
    version_id: str | None  # when the focus names a version


@dataclass(frozen=True, slots=True)
class Notification:
    """A parsed notification: whose, what kind, the counter and the events it carries."""

    subscription_id: str
    kind: str
    status: str | None
    topic: str | None
    events_since_start: int
    events: tuple[NotificationEvent, ...]


def parse_notification_bytes(body: bytes) -> Notification:
    """`parse_notification` over a raw request body (UTF-8 JSON)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedNotification("not_json") from None
    return parse_notification(data)


def parse_notification(data: Any) -> Notification:
    """Read a notification Bundle; raises MalformedNotification."""
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise MalformedNotification("not_a_bundle")
    if data.get("type") not in ("history", "searchset"):
        raise MalformedNotification("bundle_type")
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise MalformedNotification("no_status_entry")
    params = entries[0].get("resource")
    if not isinstance(params, dict) or params.get("resourceType") != "Parameters":
        raise MalformedNotification("no_status_parameters")
    return parse_status(params)


def parse_status(params: dict[str, Any]) -> Notification:
    """Read a `backport-subscription-status-r4` Parameters resource."""
    items = params.get("parameter")
    if not isinstance(items, list):
        raise MalformedNotification("no_parameters")
    sub_id = kind = status = topic = None
    since: int | None = None
    events: list[NotificationEvent] = []
    for item in items:
        if not isinstance(item, dict):
            raise MalformedNotification("bad_parameter")
        name = item.get("name")
        if name == "subscription":
            sub_id = _reference(item, _SUB_ID, "bad_subscription").group("id")
        elif name == "type":
            kind = item.get("valueCode")
        elif name == "status":
            status = item.get("valueCode")
        elif name == "topic":
            topic = item.get("valueCanonical")
        elif name == "events-since-subscription-start":
            since = _number(item.get("valueString"), "bad_events_since_start")
        elif name == "notification-event":
            if len(events) >= MAX_EVENTS:
                raise MalformedNotification("too_many_events")
            events.append(_event(item))
    if sub_id is None:
        raise MalformedNotification("no_subscription")
    if kind not in NOTIFICATION_TYPES:
        raise MalformedNotification("bad_type")
    if status is not None and not isinstance(status, str):
        raise MalformedNotification("bad_status")
    if topic is not None and not isinstance(topic, str):
        raise MalformedNotification("bad_topic")
    if since is None:
        # Required by the IG for every type but query-status of an unknown counter.
        raise MalformedNotification("no_events_since_start")
    if any(e.number > since for e in events):
        raise MalformedNotification("event_beyond_counter")
    events.sort(key=lambda e: e.number)
    return Notification(subscription_id=sub_id, kind=str(kind), status=status, topic=topic,
                        events_since_start=since, events=tuple(events))


def _reference(element: dict[str, Any], pattern: re.Pattern[str], reason: str) -> re.Match[str]:
    """`element.valueReference.reference` matched whole by `pattern`, or MalformedNotification
    (`reason`) when it is missing, not a string, too long or another shape."""
    value = element.get("valueReference")
    ref = value.get("reference") if isinstance(value, dict) else None
    match = (pattern.fullmatch(ref)
             if isinstance(ref, str) and len(ref) <= MAX_REFERENCE_CHARS else None)
    if match is None:
        raise MalformedNotification(reason)
    return match


def _number(value: Any, reason: str) -> int:
    # valueString per the IG; valueInteger64/valueUnsignedInt accepted from laxer servers.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        raise MalformedNotification(reason)
    number = int(value)
    if number > MAX_EVENT_NUMBER:
        raise MalformedNotification(reason)
    return number


def _event(item: dict[str, Any]) -> NotificationEvent:
    parts = item.get("part")
    if not isinstance(parts, list):
        raise MalformedNotification("bad_event")
    number: int | None = None
    ref = version = None
    for part in parts:
        if not isinstance(part, dict):
            raise MalformedNotification("bad_event")
        name = part.get("name")
        if name == "event-number":
            number = _number(part.get("valueString", part.get("valueInteger")),
                             "bad_event_number")
        elif name == "focus":
            match = _reference(part, _FOCUS, "bad_focus")
            ref = f"{match.group('type')}/{match.group('id')}"
            version = match.group("vid")
    if number is None or number < 1:
        raise MalformedNotification("no_event_number")
    return NotificationEvent(number=number, ref=ref, version_id=version)
