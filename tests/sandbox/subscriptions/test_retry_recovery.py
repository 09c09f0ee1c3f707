"""Retries, error status and recovery: an endpoint that goes away loses no event number."""

from __future__ import annotations

import time
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from subs_bed import Endpoint, SubsBed, param, parameters_of, subscription, until

from wardsync.core.timer import FakeTimer
from wardsync.sandbox.fhir.subscriptions.model import DEFAULT_TIMEOUT_S


async def activate(bed: SubsBed, endpoint: Endpoint, **kwargs: Any) -> str:
    sub_id = await bed.subscribe(subscription(endpoint.url, **kwargs))
    await until(lambda: bed.service.spec(sub_id).status == "active",  # type: ignore[union-attr]
                bed.timer)
    return sub_id


async def advance_real(timer: FakeTimer, seconds: float, step_s: float = 0.5) -> None:
    """Move fake time with short real pauses so HTTP requests complete in between."""
    import asyncio

    moved = 0.0
    while moved < seconds:
        await asyncio.sleep(0.01)
        await timer.advance(step_s)
        moved += step_s


async def test_retry_timeline_then_error_then_probing(bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await activate(bed, endpoint)
    endpoint.status = 503
    bed.timer.requested.clear()
    await bed.write_observation()
    await until(lambda: bed.service.spec(sub_id).status == "error",  # type: ignore[union-attr]
                bed.timer, step_s=0.25)
    # Capped exponential backoff without jitter (test policy): 1, 2, 4, 8, 16, then the cap.
    assert bed.timer.requested[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    stored = (await bed.relay.get(f"/Subscription/{sub_id}")).json()
    assert stored["status"] == "error" and "503" in stored["error"]
    # While in error the server keeps probing at the cap.
    await advance_real(bed.timer, 61)
    assert bed.timer.requested[6:8] == [30.0, 30.0]


async def test_endpoint_down_30s_then_back_gets_every_event_in_order(
        bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await activate(bed, endpoint)
    endpoint.status = 503
    written = []
    for _ in range(5):
        written.append(await bed.write_observation())
        await advance_real(bed.timer, 6)  # 30 s of fake time down in all
    assert endpoint.event_numbers() == []
    # Recoverable meanwhile: $events replays what the endpoint has not received.
    r = await bed.relay.get(f"/Subscription/{sub_id}/$events")
    assert r.status_code == 200, r.text
    replay = r.json()
    Bundle.model_validate(replay)
    assert param(parameters_of(replay), "type")[0]["valueCode"] == "query-event"
    numbers = [int(p["valueString"]) for e in param(parameters_of(replay), "notification-event")
               for p in e["part"] if p["name"] == "event-number"]
    assert numbers == [1, 2, 3, 4, 5]
    endpoint.status = 200
    await until(lambda: len(endpoint.event_numbers()) >= 5, bed.timer)
    assert endpoint.event_numbers() == [1, 2, 3, 4, 5]
    focus = [e["fullUrl"].rsplit("/", 1)[1] for b in endpoint.bundles("event-notification")
             for e in b["entry"][1:]]
    assert focus == written
    assert await bed.status_of(sub_id) == "active"


async def test_error_status_recovers_when_the_endpoint_returns(bed: SubsBed,
                                                               endpoint: Endpoint) -> None:
    sub_id = await activate(bed, endpoint)
    endpoint.status = 503
    await bed.write_observation()
    await until(lambda: bed.service.spec(sub_id).status == "error",  # type: ignore[union-attr]
                bed.timer)
    await bed.write_observation()  # committed while in error: still numbered, still kept
    await advance_real(bed.timer, 5)
    endpoint.status = 200
    await until(lambda: endpoint.event_numbers() == [1, 2], bed.timer)
    await until(lambda: bed.service.spec(sub_id).status == "active",  # type: ignore[union-attr]
                bed.timer)
    assert (await bed.relay.get(f"/Subscription/{sub_id}")).json().get("error") is None


async def test_status_operation_reports_the_counter(bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await activate(bed, endpoint)
    for _ in range(3):
        await bed.write_observation()
    await until(lambda: len(endpoint.event_numbers()) == 3, bed.timer)
    for url in (f"/Subscription/{sub_id}/$status", f"/Subscription/$status?id={sub_id}"):
        r = await bed.relay.get(url)
        assert r.status_code == 200, r.text
        bundle = r.json()
        Bundle.model_validate(bundle)
        assert bundle["type"] == "searchset"
        parameters = bundle["entry"][0]["resource"]
        assert param(parameters, "type")[0]["valueCode"] == "query-status"
        assert param(parameters, "status")[0]["valueCode"] == "active"
        assert param(parameters, "events-since-subscription-start")[0]["valueString"] == "3"
    assert (await bed.relay.get("/Subscription/nope/$status")).status_code == 404
    assert (await bed.writer.get(f"/Subscription/{sub_id}/$status")).status_code == 403


async def test_events_ranges_and_content_downgrade(bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await activate(bed, endpoint, content="full-resource")
    for _ in range(4):
        await bed.write_observation()
    await until(lambda: len(endpoint.event_numbers()) == 4, bed.timer)
    r = await bed.relay.get(f"/Subscription/{sub_id}/$events",
                            params={"eventsSinceNumber": "2", "eventsUntilNumber": "3"})
    bundle = r.json()
    events = param(parameters_of(bundle), "notification-event")
    assert [e["part"][0]["valueString"] for e in events] == ["2", "3"]
    assert all("resource" in e for e in bundle["entry"][1:])
    r = await bed.relay.post(f"/Subscription/{sub_id}/$events", json={
        "resourceType": "Parameters", "parameter": [
            {"name": "eventsSinceNumber", "valueString": "4"},
            {"name": "content", "valueCode": "id-only"}]})
    bundle = r.json()
    assert [e["part"][0]["valueString"]
            for e in param(parameters_of(bundle), "notification-event")] == ["4"]
    assert all("resource" not in e for e in bundle["entry"][1:])
    r = await bed.relay.get(f"/Subscription/{sub_id}/$events",
                            params={"eventsSinceNumber": "x"})
    assert r.status_code == 400


async def test_a_dead_endpoint_does_not_hold_up_another_subscriber(
        bed: SubsBed, endpoint: Endpoint) -> None:
    await activate(bed, endpoint)
    healthy = Endpoint()
    await healthy.start()
    try:
        await activate(bed, healthy)
        endpoint.status = 503
        for _ in range(3):
            await bed.write_observation()
        await until(lambda: healthy.event_numbers() == [1, 2, 3], bed.timer, step_s=0.1,
                    limit_s=2)
    finally:
        await healthy.stop()
    assert endpoint.event_numbers() == []


async def test_listener_gone_for_30s_then_back_on_its_port(bed: SubsBed,
                                                           endpoint: Endpoint) -> None:
    sub_id = await activate(bed, endpoint)
    port = endpoint.port
    await endpoint.stop()  # connection refused from now on
    for _ in range(3):
        await bed.write_observation()
        await advance_real(bed.timer, 10)
    await endpoint.start(port)
    await until(lambda: endpoint.event_numbers() == [1, 2, 3], bed.timer)
    assert bed.ledger.counters(sub_id).delivered == 3


async def test_a_hung_endpoint_never_slows_a_fhir_write(bed: SubsBed,
                                                        endpoint: Endpoint) -> None:
    await activate(bed, endpoint)
    endpoint.flowing.clear()  # the endpoint accepts connections and never answers
    await bed.write_observation()
    await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer,
                step_s=0.01, limit_s=1)
    took = []
    for _ in range(10):
        start = time.perf_counter()
        await bed.write_observation()
        took.append(time.perf_counter() - start)
    # All ten writes returned while the first notification was still stuck at the endpoint:
    # together they took less than the one delivery's timeout, so none waited for it.
    assert endpoint.held == 1
    assert sum(took) < DEFAULT_TIMEOUT_S, took
    assert endpoint.event_numbers() == []
    endpoint.flowing.set()
    await until(lambda: endpoint.event_numbers() == list(range(1, 12)), bed.timer)
