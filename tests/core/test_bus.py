"""The event bus: one delivery per batch, urgent events at once, handlers isolated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core.bus import EventBus
from wardsync.core.connection_status import initial_status
from wardsync.core.events import (
    ConnectionStatusChanged,
    Event,
    PokeAccepted,
    PokeRejectedEvent,
    QueryStateChanged,
    ResourcesChanged,
)
from wardsync.core.pokes import Poke


class ManualScheduler:
    """Stands in for loop.call_soon: runs scheduled callbacks when the test says "tick"."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def tick(self) -> None:
        due, self.callbacks = self.callbacks, []
        for callback in due:
            callback()


def changed(*refs: str, urgent: bool = False) -> ResourcesChanged:
    return ResourcesChanged(tuple(refs), urgent=urgent)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def __call__(self, events: list[Any]) -> None:
        self.calls.append(list(events))


def test_without_scheduler_events_are_delivered_immediately() -> None:
    bus = EventBus()
    rec = Recorder()
    bus.subscribe(ResourcesChanged, rec)
    bus.publish(changed("Observation/1"))
    assert rec.calls == [[changed("Observation/1")]]
    assert bus.pending == 0


def test_a_burst_is_delivered_once_per_tick_in_order() -> None:
    sched = ManualScheduler()
    bus = EventBus(sched)
    rec = Recorder()
    bus.subscribe(ResourcesChanged, rec)
    events = [changed(f"Observation/{i}") for i in range(100)]
    for event in events:
        bus.publish(event)
    assert rec.calls == []
    assert len(sched.callbacks) == 1  # one flush asked for the whole burst
    sched.tick()
    assert rec.calls == [events]
    sched.tick()
    assert len(rec.calls) == 1


def test_urgent_event_flushes_the_queue_first_keeping_order() -> None:
    sched = ManualScheduler()
    bus = EventBus(sched)
    rec = Recorder()
    bus.subscribe(ResourcesChanged, rec)
    routine = changed("Observation/1")
    urgent = changed("DiagnosticReport/9", urgent=True)
    bus.publish(routine)
    bus.publish(urgent)
    assert rec.calls == [[routine, urgent]]  # at once, without waiting for the tick
    sched.tick()  # the scheduled flush finds nothing left
    assert rec.calls == [[routine, urgent]]


def test_urgent_poke_is_delivered_at_once() -> None:
    sched = ManualScheduler()
    bus = EventBus(sched)
    rec = Recorder()
    bus.subscribe(PokeAccepted, rec)
    poke = Poke("CRITICAL_LAB_RESULT", "DiagnosticReport", "dr-1", "2", "p-1", 7, "urgent")
    bus.publish(PokeAccepted(poke))
    assert rec.calls == [[PokeAccepted(poke)]]


def test_subscribers_get_only_their_types_one_call_each() -> None:
    bus = EventBus(ManualScheduler())
    resources, queries, everything = Recorder(), Recorder(), Recorder()
    bus.subscribe(ResourcesChanged, resources)
    bus.subscribe([QueryStateChanged, PokeRejectedEvent], queries)
    bus.subscribe(Event, everything)  # base class: all events
    published: list[Event] = [
        changed("Patient/1"),
        QueryStateChanged("vitals Patient/1", "loading"),
        PokeRejectedEvent("bad_id"),
        ConnectionStatusChanged(initial_status(0.0)),
    ]
    for event in published:
        bus.publish(event)
    bus.flush()
    assert resources.calls == [[published[0]]]
    assert queries.calls == [[published[1], published[2]]]
    assert everything.calls == [published]


def test_a_raising_handler_is_logged_counted_and_isolated(caplog: pytest.LogCaptureFixture) -> None:
    sched = ManualScheduler()
    bus = EventBus(sched)
    rec = Recorder()

    def broken(events: list[Any]) -> None:
        raise RuntimeError("panel bug")

    bus.subscribe(ResourcesChanged, broken)
    bus.subscribe(ResourcesChanged, rec)
    with caplog.at_level(logging.ERROR, logger="wardsync.core.bus"):
        bus.publish(changed("Observation/1"))
        sched.tick()
        bus.publish(changed("Observation/2"))
        sched.tick()
    assert [c[0].refs for c in rec.calls] == [("Observation/1",), ("Observation/2",)]
    assert bus.handler_errors == 2
    assert "broken" in caplog.text and "ResourcesChanged" in caplog.text
    assert "Observation/1" not in caplog.text  # event content is not logged


def test_closing_a_subscription_stops_delivery() -> None:
    bus = EventBus()
    rec = Recorder()
    sub = bus.subscribe(ResourcesChanged, rec)
    sub.close()
    sub.close()  # idempotent
    bus.publish(changed("Observation/1"))
    assert rec.calls == []


def test_subscription_as_context_manager() -> None:
    bus = EventBus()
    rec = Recorder()
    with bus.subscribe(ResourcesChanged, rec):
        bus.publish(changed("Observation/1"))
    bus.publish(changed("Observation/2"))
    assert len(rec.calls) == 1


def test_unsubscribing_another_handler_during_a_flush() -> None:
    bus = EventBus()
    later = Recorder()
    subs: dict[str, Any] = {}

    def first(events: list[Any]) -> None:
        subs["later"].close()

    subs["first"] = bus.subscribe(ResourcesChanged, first)
    subs["later"] = bus.subscribe(ResourcesChanged, later)
    bus.publish(changed("Observation/1"))
    assert later.calls == []  # closed before its turn in the same flush


def test_subscribing_during_a_flush_starts_with_the_next_one() -> None:
    bus = EventBus()
    newcomer = Recorder()

    def first(events: list[Any]) -> None:
        if not newcomer.calls and "sub" not in state:
            state["sub"] = bus.subscribe(ResourcesChanged, newcomer)

    state: dict[str, Any] = {}
    bus.subscribe(ResourcesChanged, first)
    bus.publish(changed("Observation/1"))
    assert newcomer.calls == []
    bus.publish(changed("Observation/2"))
    assert newcomer.calls == [[changed("Observation/2")]]


def test_a_handler_may_close_itself() -> None:
    bus = EventBus()
    calls: list[int] = []
    holder: dict[str, Any] = {}

    def once(events: list[Any]) -> None:
        calls.append(len(events))
        holder["sub"].close()

    holder["sub"] = bus.subscribe(ResourcesChanged, once)
    bus.publish(changed("Observation/1"))
    bus.publish(changed("Observation/2"))
    assert calls == [1]


def test_publishing_from_a_handler_without_scheduler_is_delivered_after_the_batch() -> None:
    bus = EventBus()
    seen: list[str] = []

    def relay(events: list[Any]) -> None:
        for e in events:
            seen.append(e.refs[0])
            if e.refs[0] == "Observation/1":
                bus.publish(changed("Observation/2"))
                seen.append("published")

    bus.subscribe(ResourcesChanged, relay)
    bus.publish(changed("Observation/1"))
    assert seen == ["Observation/1", "published", "Observation/2"]


def test_publishing_from_a_handler_with_scheduler_waits_for_the_next_tick() -> None:
    sched = ManualScheduler()
    bus = EventBus(sched)
    rec = Recorder()

    def relay(events: list[Any]) -> None:
        if any(e.refs == ("Observation/1",) for e in events):
            bus.publish(changed("Observation/2"))

    bus.subscribe(ResourcesChanged, relay)
    bus.subscribe(ResourcesChanged, rec)
    bus.publish(changed("Observation/1"))
    sched.tick()
    assert rec.calls == [[changed("Observation/1")]]
    sched.tick()
    assert rec.calls == [[changed("Observation/1")], [changed("Observation/2")]]


def test_urgent_published_from_a_handler_is_delivered_in_the_same_flush() -> None:
    sched = ManualScheduler()
    bus = EventBus(sched)
    rec = Recorder()

    def escalate(events: list[Any]) -> None:
        if any(e.refs == ("Observation/1",) for e in events):
            bus.publish(changed("Observation/2"))
            bus.publish(changed("DiagnosticReport/3", urgent=True))

    bus.subscribe(ResourcesChanged, escalate)
    bus.subscribe(ResourcesChanged, rec)
    bus.publish(changed("Observation/1"))
    sched.tick()
    assert rec.calls == [
        [changed("Observation/1")],
        [changed("Observation/2"), changed("DiagnosticReport/3", urgent=True)],
    ]


def test_subscribe_rejects_non_types() -> None:
    bus = EventBus()
    with pytest.raises(TypeError):
        bus.subscribe([], Recorder())
    with pytest.raises(TypeError):
        bus.subscribe(["ResourcesChanged"], Recorder())  # type: ignore[list-item]


def test_a_failing_scheduler_does_not_wedge_the_bus() -> None:
    attempts: list[int] = []

    def schedule(callback: Callable[[], None]) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("event loop is closed")
        callback()

    bus = EventBus(schedule)
    rec = Recorder()
    bus.subscribe(ResourcesChanged, rec)
    with pytest.raises(RuntimeError):
        bus.publish(changed("Observation/1"))
    bus.publish(changed("Observation/2"))
    assert rec.calls == [[changed("Observation/1"), changed("Observation/2")]]


async def test_with_asyncio_call_soon_a_burst_is_one_delivery() -> None:
    loop = asyncio.get_running_loop()
    bus = EventBus(loop.call_soon)
    rec = Recorder()
    bus.subscribe(ResourcesChanged, rec)
    for i in range(50):
        bus.publish(changed(f"Observation/{i}"))
    await asyncio.sleep(0)
    assert len(rec.calls) == 1 and len(rec.calls[0]) == 50


@given(st.lists(st.tuples(st.integers(0, 999), st.booleans(), st.booleans()), max_size=40))
def test_every_event_is_delivered_exactly_once_in_publish_order(
    plan: list[tuple[int, bool, bool]],
) -> None:
    """Any mix of routine/urgent publishes and ticks: nothing lost, duplicated or reordered."""
    sched = ManualScheduler()
    bus = EventBus(sched)
    rec = Recorder()
    bus.subscribe(ResourcesChanged, rec)
    published = []
    for n, urgent, tick in plan:
        event = changed(f"Observation/{n}", urgent=urgent)
        published.append(event)
        bus.publish(event)
        if urgent:
            assert bus.pending == 0
        if tick:
            sched.tick()
    sched.tick()
    delivered = [e for call in rec.calls for e in call]
    assert delivered == published
    assert all(call for call in rec.calls)  # never called with an empty list
