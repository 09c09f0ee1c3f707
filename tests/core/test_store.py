"""The resource store: newer versions win, one event per batch, reordering is harmless."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core.bus import EventBus
from wardsync.core.events import ResourcesChanged
from wardsync.core.store import ResourceStore, is_newer


def obs(rid: str, version: int | None, updated: str | None = None, value: float = 0.0) -> dict:
    meta: dict[str, Any] = {}
    if version is not None:
        meta["versionId"] = str(version)
    if updated is not None:
        meta["lastUpdated"] = updated
    return {
        "resourceType": "Observation",
        "id": rid,
        "meta": meta,
        "valueQuantity": {"value": value},
    }


class Events:
    def __init__(self, bus: EventBus) -> None:
        self.batches: list[ResourcesChanged] = []
        bus.subscribe(ResourcesChanged, self.batches.extend)


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


# ---------------------------------------------------------------- is_newer


@pytest.mark.parametrize(
    ("candidate", "held", "newer"),
    [
        ({"versionId": "10"}, {"versionId": "9"}, True),  # integers, not strings
        ({"versionId": "9"}, {"versionId": "10"}, False),
        ({"versionId": "3"}, {"versionId": "3"}, False),
        (
            {"versionId": "3", "lastUpdated": "2024-05-01T10:00:01Z"},
            {"versionId": "3", "lastUpdated": "2024-05-01T10:00:00Z"},
            True,
        ),
        # Instants, not strings: 10:00+02:00 is 08:00Z, earlier than 09:00Z.
        (
            {"lastUpdated": "2024-05-01T10:00:00+02:00"},
            {"lastUpdated": "2024-05-01T09:00:00Z"},
            False,
        ),
        (
            {"lastUpdated": "2024-05-01T09:00:00Z"},
            {"lastUpdated": "2024-05-01T10:00:00+02:00"},
            True,
        ),
        # versionId decides before lastUpdated when both have one.
        (
            {"versionId": "2", "lastUpdated": "2024-01-01T00:00:00Z"},
            {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00Z"},
            True,
        ),
        # Only one side numbered: lastUpdated decides.
        (
            {"versionId": "abc", "lastUpdated": "2024-05-02T00:00:00Z"},
            {"versionId": "7", "lastUpdated": "2024-05-01T00:00:00Z"},
            True,
        ),
        ({"lastUpdated": "2024-05-01T00:00:00Z"}, None, True),  # known beats nothing
        (None, {"lastUpdated": "2024-05-01T00:00:00Z"}, False),
        (None, None, False),
        ({"lastUpdated": "not a date"}, {"lastUpdated": "also not"}, False),
    ],
)
def test_is_newer(candidate: dict | None, held: dict | None, newer: bool) -> None:
    assert is_newer(candidate, held) is newer


@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_is_newer_is_a_strict_order_on_version_numbers(a: int, b: int) -> None:
    ma, mb = {"versionId": str(a)}, {"versionId": str(b)}
    assert is_newer(ma, mb) == (a > b)
    assert not (is_newer(ma, mb) and is_newer(mb, ma))


# ---------------------------------------------------------------- apply


def test_apply_keeps_newer_and_reports_changed_refs(bus: EventBus) -> None:
    store = ResourceStore(bus)
    events = Events(bus)
    assert store.apply([obs("1", 1), obs("2", 1)]) == ("Observation/1", "Observation/2")
    assert store.apply([obs("1", 2, value=5.0), obs("2", 1)]) == ("Observation/1",)
    assert store.version("Observation/1") == "2"
    assert store.get("Observation/1")["valueQuantity"]["value"] == 5.0  # type: ignore[index]
    assert events.batches == [
        ResourcesChanged(("Observation/1", "Observation/2")),
        ResourcesChanged(("Observation/1",)),
    ]


def test_an_older_version_arriving_late_is_ignored_without_event(bus: EventBus) -> None:
    store = ResourceStore(bus)
    store.apply([obs("1", 3, value=3.0)])
    events = Events(bus)
    assert store.apply([obs("1", 2, value=2.0)]) == ()
    assert store.get("Observation/1")["valueQuantity"]["value"] == 3.0  # type: ignore[index]
    assert events.batches == []


def test_two_versions_in_one_batch_yield_the_newest_and_one_ref(bus: EventBus) -> None:
    store = ResourceStore(bus)
    events = Events(bus)
    assert store.apply([obs("1", 2), obs("1", 4), obs("1", 3)]) == ("Observation/1",)
    assert store.version("Observation/1") == "4"
    assert len(events.batches) == 1


def test_urgent_flag_is_carried_on_the_event(bus: EventBus) -> None:
    store = ResourceStore(bus)
    events = Events(bus)
    store.apply([obs("1", 1)], urgent=True)
    assert events.batches == [ResourcesChanged(("Observation/1",), urgent=True)]


def test_a_resource_without_id_rejects_the_whole_batch(bus: EventBus) -> None:
    store = ResourceStore(bus)
    with pytest.raises(ValueError, match="id"):
        store.apply([obs("1", 1), {"resourceType": "Observation"}])
    assert len(store) == 0


def test_queries_by_type_and_predicate(bus: EventBus) -> None:
    store = ResourceStore(bus)
    patient = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "1"}}
    store.apply([obs("1", 1, value=4.0), obs("2", 1, value=7.0), patient])
    assert [r["id"] for r in store.of_type("Observation")] == ["1", "2"]
    assert store.of_type("Condition") == []
    high = store.select("Observation", lambda r: r["valueQuantity"]["value"] > 5)
    assert [r["id"] for r in high] == ["2"]
    assert "Patient/p1" in store and "Patient/p2" not in store
    assert len(store) == 3
    assert store.version("Patient/nobody") is None


def test_remove_publishes_only_what_was_held(bus: EventBus) -> None:
    store = ResourceStore(bus)
    store.apply([obs("1", 1), obs("2", 1)])
    events = Events(bus)
    assert store.remove(["Observation/1", "Observation/9", "Nothing/x"]) == ("Observation/1",)
    assert store.get("Observation/1") is None
    assert store.remove(["Observation/9"]) == ()
    assert events.batches == [ResourcesChanged(("Observation/1",))]


def test_clear_drops_everything_with_one_event(bus: EventBus) -> None:
    store = ResourceStore(bus)
    store.apply([obs("1", 1), obs("2", 1), {"resourceType": "Patient", "id": "p1"}])
    events = Events(bus)
    dropped = store.clear()
    assert set(dropped) == {"Observation/1", "Observation/2", "Patient/p1"}
    assert len(store) == 0 and store.of_type("Observation") == []
    assert events.batches == [ResourcesChanged(dropped)]
    assert store.clear() == ()
    assert len(events.batches) == 1


# ---------------------------------------------------------------- reordering is harmless

BASE_MINUTE = "2024-05-01T10:{:02d}:00{}"
ZONES = ["Z", "+00:00", "+01:00", "-02:00"]


@st.composite
def version_histories(draw: st.DrawFn) -> tuple[list[dict], list[dict]]:
    """Several resources, each with versions 1..n; returns (in-order list, shuffled copy
    with duplicates). Timestamps are written in mixed time zones."""
    ordered: list[dict] = []
    n_resources = draw(st.integers(1, 4))
    use_version_ids = draw(st.booleans())
    for r in range(n_resources):
        n_versions = draw(st.integers(1, 5))
        for v in range(1, n_versions + 1):
            zone = draw(st.sampled_from(ZONES))
            # Same instant, different offsets: hour shifts cancel the zone offset.
            hour_shift = {"Z": 0, "+00:00": 0, "+01:00": 1, "-02:00": -2}[zone]
            stamp = f"2024-05-01T{10 + hour_shift:02d}:{v * 3:02d}:00{zone}"
            ordered.append(obs(f"r{r}", v if use_version_ids else None, stamp, value=float(v)))
    shuffled = draw(st.permutations(ordered))
    extra = draw(st.lists(st.sampled_from(ordered), max_size=6))
    return ordered, [*shuffled, *extra]


@given(version_histories(), st.integers(1, 4))
def test_any_order_and_duplication_gives_the_same_final_state(
    histories: tuple[list[dict], list[dict]], batch_size: int
) -> None:
    ordered, scrambled = histories
    expected = ResourceStore(EventBus())
    expected.apply(ordered)
    store = ResourceStore(EventBus())
    for i in range(0, len(scrambled), batch_size):
        store.apply(scrambled[i : i + batch_size])
    assert sorted(store.refs()) == sorted(expected.refs())
    for ref in expected.refs():
        assert store.get(ref) == expected.get(ref)


@given(version_histories())
def test_every_event_names_a_real_change(histories: tuple[list[dict], list[dict]]) -> None:
    _, scrambled = histories
    bus = EventBus()
    store = ResourceStore(bus)
    events = Events(bus)
    snapshots: list[dict] = []
    for resource in scrambled:
        before = {ref: store.get(ref) for ref in store.refs()}
        changed = store.apply([resource])
        after = {ref: store.get(ref) for ref in store.refs()}
        assert set(changed) == {ref for ref in after if before.get(ref) is not after[ref]}
        snapshots.append(after)
    assert sum(len(e.refs) for e in events.batches) == sum(
        1 for i, snap in enumerate(snapshots) if snap != (snapshots[i - 1] if i else {})
    )
