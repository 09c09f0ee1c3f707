"""Reading notifications: the sandbox server's own Bundles (the IG's shapes) parse to what
they say; anything else is refused with a reason code that carries no content."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wardsync.relay.classic import MalformedDelivery, parse_put
from wardsync.relay.notifications import (
    MAX_EVENTS,
    MalformedNotification,
    parse_notification,
    parse_notification_bytes,
)
from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionEvent
from wardsync.sandbox.fhir.subscriptions.model import parse_subscription
from wardsync.sandbox.fhir.subscriptions.notifications import notification_bundle

BASE = "http://fhir.example.org/fhir"
SUB = parse_subscription({
    "resourceType": "Subscription", "id": "sub1", "meta": {"versionId": "1"},
    "status": "active", "reason": "test",
    "criteria": "http://wardsync.example.org/fhir/SubscriptionTopic/observation-changed",
    "channel": {"type": "rest-hook", "endpoint": "http://relay/notify",
                "payload": "application/fhir+json"}})


def _events(*numbers: int) -> list[SubscriptionEvent]:
    return [SubscriptionEvent(n, n, "Observation", f"o{n}", "1", "create",
                              "2026-12-07T10:00:00.000Z") for n in numbers]


def _bundle(kind: str = "event-notification", counter: int = 5,
            numbers: tuple[int, ...] = (4, 5)) -> dict[str, Any]:
    return notification_bundle(SUB, BASE, kind, "active", counter, _events(*numbers),
                               "id-only", "2026-12-07T10:00:00.000Z")


def test_the_servers_event_notification_reads_as_it_says():
    note = parse_notification(_bundle())
    assert (note.subscription_id, note.kind, note.status) == ("sub1", "event-notification",
                                                              "active")
    assert note.events_since_start == 5
    assert [(e.number, e.ref, e.version_id) for e in note.events] == [
        (4, "Observation/o4", None), (5, "Observation/o5", None)]


def test_handshake_and_heartbeat_carry_the_counter_and_no_events():
    for kind in ("handshake", "heartbeat"):
        note = parse_notification(_bundle(kind, 7, ()))
        assert note.kind == kind and note.events_since_start == 7 and note.events == ()


def _mutate(path: str, value: Any) -> dict[str, Any]:
    bundle = _bundle()
    params = bundle["entry"][0]["resource"]["parameter"]
    named = {p["name"]: p for p in params}
    if path == "type":
        named["type"]["valueCode"] = value
    elif path == "counter":
        named["events-since-subscription-start"]["valueString"] = value
    elif path == "subscription":
        named["subscription"]["valueReference"]["reference"] = value
    elif path == "focus":
        params[-1]["part"][-1]["valueReference"]["reference"] = value
    elif path == "number":
        params[-1]["part"][0]["valueString"] = value
    return bundle


@pytest.mark.parametrize(("data", "reason"), [
    ([], "not_a_bundle"),
    ({"resourceType": "Bundle", "type": "transaction", "entry": []}, "bundle_type"),
    ({"resourceType": "Bundle", "type": "history", "entry": []}, "no_status_entry"),
    (_mutate("type", "gossip"), "bad_type"),
    (_mutate("counter", "-1"), "bad_events_since_start"),
    (_mutate("counter", "4"), "event_beyond_counter"),
    (_mutate("subscription", "Patient/p1"), "bad_subscription"),
    (_mutate("focus", "not a reference"), "bad_focus"),
    (_mutate("focus", "Observation/" + "x" * 3000), "bad_focus"),
    (_mutate("number", "five"), "bad_event_number"),
])
def test_malformed_notifications_are_refused_with_a_reason(data: Any, reason: str):
    with pytest.raises(MalformedNotification, match=f"^{reason}$"):
        parse_notification(data)


def test_a_value_reference_that_is_not_an_object_is_refused_with_a_reason():
    bundle = _bundle()
    params = bundle["entry"][0]["resource"]["parameter"]
    {p["name"]: p for p in params}["subscription"]["valueReference"] = "Subscription/sub1"
    with pytest.raises(MalformedNotification, match=r"^bad_subscription$"):
        parse_notification(bundle)
    bundle = _bundle()
    bundle["entry"][0]["resource"]["parameter"][-1]["part"][-1]["valueReference"] = [1]
    with pytest.raises(MalformedNotification, match=r"^bad_focus$"):
        parse_notification(bundle)


def test_not_json_and_too_many_events_are_refused():
    with pytest.raises(MalformedNotification, match=r"^not_json$"):
        parse_notification_bytes(b"\xff{")
    many = _bundle(counter=MAX_EVENTS + 1, numbers=tuple(range(1, MAX_EVENTS + 2)))
    with pytest.raises(MalformedNotification, match=r"^too_many_events$"):
        parse_notification_bytes(json.dumps(many).encode())


def test_classic_put_must_match_its_path():
    body = json.dumps({"resourceType": "Observation", "id": "o1",
                       "meta": {"versionId": "3"}}).encode()
    change = parse_put("Observation/o1", body)
    assert (change.ref, change.version_id, change.deleted) == ("Observation/o1", "3", False)
    for tail, reason in (("Observation/o2", "path_mismatch"), ("../etc", "bad_path"),
                         ("Observation", "bad_path")):
        with pytest.raises(MalformedDelivery, match=f"^{reason}$"):
            parse_put(tail, body)
