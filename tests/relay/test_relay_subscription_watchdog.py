"""The subscription watchdog on fake time: silence is measured on the relay's Timer, so the
exact moment a silent Subscription is checked, and what is then asked of the server, are
asserted without waiting (the live versions are in test_relay_subscriptions.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wardsync.core.timer import FakeTimer
from wardsync.relay.config import SubscriptionsSection
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.state import RelayState
from wardsync.relay.subscriptions import TOPIC_CANONICAL_EXTENSION, SubscriptionManager

TOPIC = "http://example.org/SubscriptionTopic/observation-changed"


def _status(sub_id: str, status: str, counter: int, events: list[int],
            kind: str = "query-status") -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"Subscription/{sub_id}"}},
        {"name": "status", "valueCode": status}, {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(counter)}]
    params += [{"name": "notification-event", "part": [
        {"name": "event-number", "valueString": str(n)},
        {"name": "focus", "valueReference": {"reference": f"Observation/o{n}"}}]}
        for n in events]
    return {"resourceType": "Bundle", "type": "history",
            "entry": [{"resource": {"resourceType": "Parameters", "parameter": params}}]}


class StubServer:
    """A FHIR server as the manager sees it: one topic, $status and $events, a counter."""

    def __init__(self) -> None:
        self.counter = 0
        self.status = "active"
        self.calls: list[tuple[str, dict[str, str] | None]] = []
        self.created: list[dict[str, Any]] = []

    async def capabilities(self) -> dict[str, Any]:
        return {"rest": [{"resource": [{
            "type": "Subscription",
            "extension": [{"url": TOPIC_CANONICAL_EXTENSION, "valueCanonical": TOPIC}],
            "operation": [{"name": "status"}, {"name": "events"}]}]}]}

    async def search(self, rtype: str, params: dict[str, str]) -> Any:
        return type("Result", (), {"matches": []})()

    async def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        self.created.append(resource)
        return {**resource, "id": f"s{len(self.created)}"}

    async def delete(self, rtype: str, rid: str) -> None:
        self.calls.append((f"DELETE {rtype}/{rid}", None))

    async def operation(self, path: str, params: dict[str, str] | None = None
                        ) -> dict[str, Any]:
        self.calls.append((path, params))
        sub_id = path.split("/")[1]
        if path.endswith("$status"):
            return _status(sub_id, self.status, self.counter, [])
        low, high = int(params["eventsSinceNumber"]), int(params["eventsUntilNumber"])
        return _status(sub_id, self.status, self.counter, list(range(low, high + 1)),
                       "query-event")


class Reconciler:
    def __init__(self) -> None:
        self.requested = 0

    def request_round(self) -> None:
        self.requested += 1


async def test_silence_past_twice_the_heartbeat_is_checked_and_recovered(tmp_path: Path):
    timer = FakeTimer()
    server = StubServer()
    announced: list[str] = []

    async def announce(ref: str, version: str | None, source: str) -> None:
        announced.append(ref)

    metrics = RelayMetrics()
    state = RelayState(tmp_path / "relay.sqlite3")
    manager = SubscriptionManager(
        fhir=server, state=state, metrics=metrics, reconciler=Reconciler(),  # type: ignore[arg-type]
        announce=announce, config=SubscriptionsSection(heartbeat_s=10, silence_margin_s=2),
        types=["Observation"], timer=timer)
    manager.notify_url, manager.reason = "http://relay/notify", "WardSync relay test"
    await manager.setup()
    [live] = manager.subscriptions
    assert live.sub_id == "s1" and server.created[0]["criteria"] == TOPIC
    assert manager.silence_limit_s == 22.0  # 2 x heartbeat + margin
    server.counter = 3  # three events the relay never received

    await timer.advance(21.9)
    await manager.check_all()
    assert server.calls == [] and announced == []  # not silent long enough yet

    await timer.advance(0.2)
    await manager.check_all()
    assert [c[0] for c in server.calls] == ["Subscription/s1/$status", "Subscription/s1/$events"]
    assert server.calls[1][1] == {"eventsSinceNumber": "1", "eventsUntilNumber": "3"}
    assert announced == ["Observation/o1", "Observation/o2", "Observation/o3"]
    assert live.last_event == 3 and state.own_subscriptions()[0].last_event == 3

    # The silence window restarts at the check; a Subscription found off is replaced.
    server.status = "off"
    await timer.advance(22.1)
    await manager.check_all()
    assert ("DELETE Subscription/s1", None) in server.calls
    assert [s.sub_id for s in manager.subscriptions] == ["s2"]
    state.close()
