"""Topic-based rest-hook subscriptions: handshake, notifications, payloads, heartbeats,
headers, filters and contiguous event numbers, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.parameters import Parameters
from subs_bed import (
    OBSERVATION_TOPIC,
    Endpoint,
    SubsBed,
    event_numbers,
    observation,
    param,
    parameters_of,
    subscription,
    until,
)

from wardsync.sandbox.fhir.fhir_dates import format_instant
from wardsync.sandbox.fhir.subscriptions.notifications import STATUS_PROFILE
from wardsync.sandbox.fhir.subscriptions.topics import TOPICS


def assert_ig_notification(bundle: dict[str, Any], sub_id: str, base: str, kind: str) -> None:
    """The Backport IG's R4 notification shape (backport-subscription-notification-r4 and
    backport-subscription-status-r4), after R4B structural validation."""
    Bundle.model_validate(bundle)
    assert bundle["type"] == "history"
    first = bundle["entry"][0]
    parameters = first["resource"]
    Parameters.model_validate(parameters)
    assert parameters["resourceType"] == "Parameters"
    assert parameters["meta"]["profile"] == [STATUS_PROFILE]
    assert first["request"] == {"method": "GET", "url": f"{base}/Subscription/{sub_id}/$status"}
    names = [p["name"] for p in parameters["parameter"]]
    assert len(parameters["parameter"]) >= 3  # profile: parameter 3..*
    for required in ("subscription", "status", "type", "events-since-subscription-start"):
        assert names.count(required) == 1, required
    assert param(parameters, "subscription")[0]["valueReference"] == {
        "reference": f"{base}/Subscription/{sub_id}"}
    assert param(parameters, "topic")[0]["valueCanonical"] == OBSERVATION_TOPIC
    assert param(parameters, "type")[0]["valueCode"] == kind
    assert param(parameters, "events-since-subscription-start")[0]["valueString"].isdigit()


async def active_subscription(bed: SubsBed, endpoint: Endpoint, **kwargs: Any) -> str:
    sub_id = await bed.subscribe(subscription(endpoint.url, **kwargs))
    await until(lambda: bool(endpoint.bundles("handshake")), bed.timer)
    await until(lambda: bed.service.spec(sub_id) is not None
                and bed.service.spec(sub_id).status == "active", bed.timer)  # type: ignore[union-attr]
    return sub_id


async def test_handshake_activates_a_requested_subscription(bed: SubsBed,
                                                            endpoint: Endpoint) -> None:
    sub_id = await bed.subscribe(subscription(endpoint.url))
    await until(lambda: bool(endpoint.bundles("handshake")), bed.timer)
    handshake = endpoint.bundles("handshake")[0]
    assert_ig_notification(handshake, sub_id, bed.base, "handshake")
    parameters = parameters_of(handshake)
    assert param(parameters, "status")[0]["valueCode"] == "requested"
    assert param(parameters, "events-since-subscription-start")[0]["valueString"] == "0"
    assert param(parameters, "notification-event") == []
    assert len(handshake["entry"]) == 1
    await until(lambda: bed.service.spec(sub_id).status == "active", bed.timer)  # type: ignore[union-attr]
    assert await bed.status_of(sub_id) == "active"
    assert endpoint.received[0].headers["Content-Type"].startswith("application/fhir+json")


async def test_handshake_refused_sets_error_then_probing_recovers(
        bed: SubsBed, endpoint: Endpoint) -> None:
    endpoint.status = 410
    sub_id = await bed.subscribe(subscription(endpoint.url))
    await until(lambda: bed.service.spec(sub_id).status == "error",  # type: ignore[union-attr]
                bed.timer)
    stored = (await bed.relay.get(f"/Subscription/{sub_id}")).json()
    assert stored["status"] == "error"
    assert "410" in stored["error"]
    # The server keeps probing with handshakes; once the endpoint accepts, it is active.
    endpoint.status = 200
    await until(lambda: bed.service.spec(sub_id).status == "active",  # type: ignore[union-attr]
                bed.timer, limit_s=31)
    assert endpoint.bundles("handshake")


async def test_id_only_notification_carries_references_and_no_resource(
        bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await active_subscription(bed, endpoint)
    obs_id = await bed.write_observation()
    await until(lambda: bool(endpoint.bundles("event-notification")), bed.timer)
    bundle = endpoint.bundles("event-notification")[0]
    assert_ig_notification(bundle, sub_id, bed.base, "event-notification")
    parameters = parameters_of(bundle)
    assert param(parameters, "events-since-subscription-start")[0]["valueString"] == "1"
    event = param(parameters, "notification-event")[0]
    parts = {p["name"]: p for p in event["part"]}
    assert parts["event-number"]["valueString"] == "1"
    assert parts["focus"]["valueReference"] == {"reference": f"{bed.base}/Observation/{obs_id}"}
    assert parts["timestamp"]["valueInstant"].startswith("20")
    focus_entry = bundle["entry"][1]
    assert focus_entry["fullUrl"] == f"{bed.base}/Observation/{obs_id}"
    assert focus_entry["request"] == {"method": "POST", "url": "Observation"}
    assert "resource" not in focus_entry
    # No clinical content anywhere in an id-only notification.
    text = endpoint.received[-1].body.decode()
    assert "mmol/L" not in text and "2823-3" not in text and "Patient/p1" not in text


async def test_full_resource_and_empty_payloads(bed: SubsBed, endpoint: Endpoint) -> None:
    full_id = await active_subscription(bed, endpoint, content="full-resource")
    other = Endpoint()
    await other.start()
    try:
        empty_id = await active_subscription(bed, other, content="empty")
        obs_id = await bed.write_observation()
        await until(lambda: bool(endpoint.bundles("event-notification"))
                    and bool(other.bundles("event-notification")), bed.timer)
    finally:
        await other.stop()
    full = endpoint.bundles("event-notification")[0]
    assert_ig_notification(full, full_id, bed.base, "event-notification")
    assert full["entry"][1]["resource"]["id"] == obs_id
    assert full["entry"][1]["resource"]["valueQuantity"]["value"] == 4.2
    empty = other.bundles("event-notification")[0]
    assert_ig_notification(empty, empty_id, bed.base, "event-notification")
    assert len(empty["entry"]) == 1
    parts = param(parameters_of(empty), "notification-event")[0]["part"]
    assert {p["name"] for p in parts} == {"event-number", "timestamp"}
    assert obs_id not in other.received[-1].body.decode()


async def test_full_resource_needs_read_permission_on_the_topic(bed: SubsBed,
                                                                endpoint: Endpoint) -> None:
    r = await bed.clients["subs-only"].post(
        "/Subscription", json=subscription(endpoint.url, content="full-resource"))
    assert r.status_code == 403, r.text
    r = await bed.clients["subs-only"].post("/Subscription", json=subscription(endpoint.url))
    assert r.status_code == 201, r.text


async def test_heartbeats_on_time_when_idle(bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await active_subscription(bed, endpoint, heartbeat_s=10)
    start = bed.timer.monotonic()
    times: list[float] = []
    seen = 0
    while len(times) < 3:
        await until(lambda n=seen: len(endpoint.bundles("heartbeat")) > n, bed.timer,  # type: ignore[misc]
                    step_s=0.25)
        seen = len(endpoint.bundles("heartbeat"))
        times.append(bed.timer.monotonic() - start)
    # One heartbeat every 10 s of silence (0.25 s steps of fake time).
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert all(9.5 <= g <= 10.75 for g in gaps), gaps
    heartbeat = endpoint.bundles("heartbeat")[0]
    assert_ig_notification(heartbeat, sub_id, bed.base, "heartbeat")
    assert param(parameters_of(heartbeat), "notification-event") == []
    # A notification resets the heartbeat clock.
    await bed.write_observation()
    await until(lambda: bool(endpoint.bundles("event-notification")), bed.timer, step_s=0.25)
    sent_at = bed.timer.monotonic()
    await until(lambda: len(endpoint.bundles("heartbeat")) > seen, bed.timer, step_s=0.25)
    assert 9.5 <= bed.timer.monotonic() - sent_at <= 10.75


async def test_channel_headers_are_sent_as_http_headers(bed: SubsBed,
                                                        endpoint: Endpoint) -> None:
    await active_subscription(bed, endpoint, headers=("Authorization: Bearer hook-secret",
                                                      "X-Site: ward-7a"))
    assert endpoint.received[0].headers["Authorization"] == "Bearer hook-secret"
    assert endpoint.received[0].headers["X-Site"] == "ward-7a"


async def test_filter_criteria_narrow_the_topic(bed: SubsBed, endpoint: Endpoint) -> None:
    await active_subscription(bed, endpoint, filters=("Observation?patient=Patient/p2",))
    await bed.write_observation("p1")
    wanted = await bed.write_observation("p2")
    await bed.write_observation("p3")
    await until(lambda: bool(endpoint.bundles("event-notification")), bed.timer)
    await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer)
    await bed.timer.advance(1)
    bundles = endpoint.bundles("event-notification")
    focus = [e["fullUrl"] for b in bundles for e in b["entry"][1:]]
    assert focus == [f"{bed.base}/Observation/{wanted}"]
    assert event_numbers(bundles[0]) == [1]


async def test_other_topics_and_types_do_not_fire(bed: SubsBed, endpoint: Endpoint) -> None:
    await active_subscription(bed, endpoint)
    r = await bed.writer.post("/Patient", json={"resourceType": "Patient"})
    assert r.status_code == 201
    await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer)
    await bed.timer.advance(1)
    await asyncio.sleep(0.05)
    assert endpoint.bundles("event-notification") == []


async def test_event_numbers_are_contiguous_under_concurrent_writes(
        bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await active_subscription(bed, endpoint)
    ids = await asyncio.gather(*(bed.write_observation(f"p{i % 5}") for i in range(60)))
    await until(lambda: len(endpoint.event_numbers()) >= 60, bed.timer)
    numbers = endpoint.event_numbers()
    assert numbers == list(range(1, 61))
    focus = {e["fullUrl"].rsplit("/", 1)[1] for b in endpoint.bundles("event-notification")
             for e in b["entry"][1:]}
    assert focus == set(ids)
    # Numbered in commit order: event n is the n-th committed Observation.
    committed = [c.id for c in bed.store.changes_after(0, 1000)
                 if c.resource_type == "Observation"]
    in_order = [e["fullUrl"].rsplit("/", 1)[1] for b in endpoint.bundles("event-notification")
                for e in b["entry"][1:]]
    assert in_order == committed
    for bundle in endpoint.bundles("event-notification"):
        # The counter is the highest number assigned when the Bundle was built.
        counter = int(param(parameters_of(bundle),
                            "events-since-subscription-start")[0]["valueString"])
        assert max(event_numbers(bundle)) <= counter <= 60
    assert bed.ledger.counters(sub_id).events == 60


async def test_updates_and_deletes_are_reported_with_their_method(
        bed: SubsBed, endpoint: Endpoint) -> None:
    await active_subscription(bed, endpoint)
    obs_id = await bed.write_observation()
    body = {**observation(), "id": obs_id, "status": "amended"}
    assert (await bed.writer.put(f"/Observation/{obs_id}", json=body,
                                 headers={"If-Match": 'W/"1"'})).status_code == 200
    assert (await bed.writer.delete(f"/Observation/{obs_id}")).status_code == 204
    await until(lambda: len(endpoint.event_numbers()) >= 3, bed.timer)
    methods = [e["request"]["method"] for b in endpoint.bundles("event-notification")
               for e in b["entry"][1:]]
    assert methods == ["POST", "PUT", "DELETE"]


async def test_delete_subscription_stops_notifications(bed: SubsBed,
                                                      endpoint: Endpoint) -> None:
    sub_id = await active_subscription(bed, endpoint)
    assert (await bed.relay.delete(f"/Subscription/{sub_id}")).status_code == 204
    assert (await bed.relay.get(f"/Subscription/{sub_id}")).status_code == 410
    await bed.write_observation()
    await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer)
    await bed.timer.advance(2)
    assert endpoint.bundles("event-notification") == []
    assert bed.service.spec(sub_id) is None


async def test_invalid_subscriptions_are_refused_with_reasons(bed: SubsBed,
                                                              endpoint: Endpoint) -> None:
    cases = [
        ({"criteria": "http://example.org/SubscriptionTopic/unknown"}, "not a topic"),
        ({"_criteria": {"extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                   "backport-filter-criteria", "valueString": "Observation?date=gt2020"}]}},
         "date parameter"),
        ({"status": "active"}, "requested"),
        ({"channel": {"type": "email", "endpoint": "mailto:x@example.org"}}, "not supported"),
    ]
    for change, message in cases:
        r = await bed.relay.post("/Subscription", json={**subscription(endpoint.url), **change})
        assert r.status_code == 422, (change, r.text)
        assert message in r.text, r.text


async def test_capability_statement_lists_topics_and_operations(bed: SubsBed) -> None:
    statement = (await bed.relay.get("/metadata")).json()
    CapabilityStatement.model_validate(statement)
    [entry] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    canonicals = [e["valueCanonical"] for e in entry["extension"] if e["url"].endswith(
        "/capabilitystatement-subscriptiontopic-canonical")]
    assert canonicals == [t.url for t in TOPICS]
    assert {t.resource_type for t in TOPICS} >= {
        "Observation", "DiagnosticReport", "Task", "Communication", "Encounter", "Patient"}
    assert {o["name"] for o in entry["operation"]} == {"status", "events",
                                                       "get-ws-binding-token"}
    assert "retained" in entry["documentation"]


async def test_an_unbound_websocket_subscription_waits_quietly(bed: SubsBed) -> None:
    sub_id = await bed.subscribe(subscription("", channel_type="websocket", heartbeat_s=2))
    await until(lambda: bed.service.spec(sub_id).status == "active", bed.timer)  # type: ignore[union-attr]
    await bed.write_observation()
    await bed.timer.advance(20)
    # No socket bound: nothing is sent, nothing is scheduled to spin, the event waits.
    assert bed.timer.pending() == []
    assert bed.ledger.counters(sub_id).events == 1
    assert bed.ledger.pending(sub_id, 10)[0].number == 1


async def test_several_filters_must_all_match(bed: SubsBed, endpoint: Endpoint) -> None:
    await active_subscription(bed, endpoint, filters=(
        "Observation?patient=Patient/p2,Patient/p3", "Observation?status=final"))
    await bed.write_observation("p1")
    wanted = await bed.write_observation("p2")
    r = await bed.writer.post("/Observation", json={**observation("p3"),
                                                    "status": "preliminary"})
    assert r.status_code == 201
    await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer)
    await until(lambda: bool(endpoint.bundles("event-notification")), bed.timer)
    await bed.timer.advance(1)
    focus = [e["fullUrl"] for b in endpoint.bundles("event-notification") for e in b["entry"][1:]]
    assert focus == [f"{bed.base}/Observation/{wanted}"]


async def test_subscription_end_turns_it_off(bed: SubsBed, endpoint: Endpoint) -> None:
    end = format_instant(int((bed.timer.wall() + 30) * 1_000_000))
    sub_id = await bed.subscribe({**subscription(endpoint.url), "end": end})
    await until(lambda: bed.service.spec(sub_id).status == "active", bed.timer)  # type: ignore[union-attr]
    await bed.write_observation()
    await until(lambda: endpoint.event_numbers() == [1], bed.timer)
    await until(lambda: bed.service.spec(sub_id).status == "off", bed.timer,  # type: ignore[union-attr]
                limit_s=40)
    assert await bed.status_of(sub_id) == "off"
    await bed.write_observation()
    await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer)
    assert bed.ledger.counters(sub_id).events == 1
