"""FhirStore on its own: versions, strictly increasing lastUpdated, listeners, load, reopen."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
from fhir_testdata import observation, patient

from wardsync.sandbox.fhir import (
    FhirStore,
    InvalidRequest,
    InvalidResource,
    ResourceChange,
    ResourceNotFound,
    UnknownResourceType,
    VersionConflict,
)
from wardsync.sandbox.fhir.fhir_dates import parse_date_range


class StuckClock:
    """Wall clock in epoch microseconds that only moves when told (or never)."""

    def __init__(self, now_us: int = 1_790_000_000_000_000) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


def lu_us(resource: dict) -> int:
    rng = parse_date_range(resource["meta"]["lastUpdated"])
    assert rng is not None and rng.low == rng.high, "lastUpdated must be microsecond precise"
    return rng.low


def test_create_assigns_server_id_and_first_version() -> None:
    with FhirStore(":memory:") as store:
        stored = store.create({**patient(), "id": "client-chosen"})
        assert stored["id"] != "client-chosen"  # R4 http.html#create: server assigns the id
        assert stored["meta"]["versionId"] == "1"
        assert store.read("Patient", stored["id"]) == stored


def test_last_updated_strictly_increases_when_the_clock_stands_still() -> None:
    clock = StuckClock()
    with FhirStore(":memory:", clock_us=clock) as store:
        pid = store.create(patient())["id"]
        stamps = [lu_us(store.create(observation(pid))) for _ in range(50)]
        stamps.append(lu_us(store.update("Patient", pid, {**patient(), "id": pid})))
        assert all(b == a + 1 for a, b in itertools.pairwise(stamps))
        clock.now_us -= 10_000_000  # the wall clock steps back 10 s
        later = lu_us(store.create(observation(pid)))
        assert later == stamps[-1] + 1


def test_update_versions_history_and_vread() -> None:
    with FhirStore(":memory:") as store:
        first = store.create(observation("p1"))
        oid = first["id"]
        second = store.update("Observation", oid, {**first, "status": "amended"}, if_match="1")
        assert second["meta"]["versionId"] == "2"
        assert store.read("Observation", oid)["status"] == "amended"
        assert store.vread("Observation", oid, "1")["status"] == "final"
        history = store.history("Observation", oid)
        assert [h["meta"]["versionId"] for h in history] == ["2", "1"]
        with pytest.raises(ResourceNotFound):
            store.vread("Observation", oid, "3")


def test_if_match_mismatch_raises_and_changes_nothing() -> None:
    with FhirStore(":memory:") as store:
        first = store.create(observation("p1"))
        store.update("Observation", first["id"], {**first, "status": "amended"})
        with pytest.raises(VersionConflict) as err:
            store.update("Observation", first["id"], {**first, "status": "cancelled"},
                         if_match="1")
        assert (err.value.expected, err.value.current) == ("1", "2")
        current = store.read("Observation", first["id"])
        assert (current["status"], current["meta"]["versionId"]) == ("amended", "2")


def test_update_of_unknown_id_creates_it() -> None:
    with FhirStore(":memory:") as store:
        changes: list[ResourceChange] = []
        store.add_listener(changes.append)
        stored = store.update("Patient", "pat-new", {**patient(), "id": "pat-new"})
        assert stored["meta"]["versionId"] == "1"
        assert [c.interaction for c in changes] == ["create"]


def test_type_and_id_mismatches_are_request_errors() -> None:
    with FhirStore(":memory:") as store:
        with pytest.raises(InvalidRequest):
            store.update("Patient", "a", {**observation("p"), "id": "a"})
        with pytest.raises(InvalidRequest):
            store.update("Patient", "a", {**patient(), "id": "b"})
        with pytest.raises(InvalidRequest):
            store.update("Patient", "not an id!", patient())
        with pytest.raises(UnknownResourceType):
            store.create({"resourceType": "Basic"})


def test_invalid_content_names_the_element() -> None:
    with FhirStore(":memory:") as store:
        bad = observation("p1")
        del bad["status"]
        with pytest.raises(InvalidResource) as err:
            store.create(bad)
        assert [i.expression for i in err.value.issues] == ["Observation.status"]
        assert "required" in err.value.issues[0].diagnostics
        assert store.is_empty()


def test_listeners_see_each_committed_write_once_and_a_failing_one_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with FhirStore(":memory:") as store:
        seen: list[ResourceChange] = []

        def broken(change: ResourceChange) -> None:
            raise RuntimeError("listener bug")

        store.add_listener(broken)
        remove = store.add_listener(seen.append)
        with caplog.at_level(logging.ERROR):
            p = store.create(patient())
            o = store.create(observation(p["id"]))
            store.update("Observation", o["id"], {**o, "status": "amended"})
        with pytest.raises(VersionConflict):  # not committed: no notification
            store.update("Observation", o["id"], o, if_match="1")
        assert [(c.resource_type, c.id, c.version_id, c.interaction) for c in seen] == [
            ("Patient", p["id"], "1", "create"),
            ("Observation", o["id"], "1", "create"),
            ("Observation", o["id"], "2", "update"),
        ]
        assert seen[2].resource == store.read("Observation", o["id"])
        assert seen[2].last_updated == seen[2].resource["meta"]["lastUpdated"]
        assert "listener" in caplog.text and "Testpatient" not in caplog.text
        remove()
        store.create(patient())
        assert len(seen) == 3


def test_load_keeps_ids_fires_no_listeners_and_is_all_or_nothing() -> None:
    with FhirStore(":memory:") as store:
        seen: list[ResourceChange] = []
        store.add_listener(seen.append)
        assert store.is_empty()
        seed = [{**patient(mrn=f"MRN-{i}"), "id": f"pat-{i}"} for i in range(3)]
        assert store.load(seed) == 3
        assert store.read("Patient", "pat-2")["identifier"][0]["value"] == "MRN-2"
        assert seen == [] and not store.is_empty()
        broken = [{**patient(), "id": "pat-9"}, {**observation("p"), "id": "o-1", "status": 7}]
        with pytest.raises(InvalidResource):
            store.load(broken)
        with pytest.raises(ResourceNotFound):
            store.read("Patient", "pat-9")


def test_file_store_survives_reopen_and_keeps_time_increasing(tmp_path: Path) -> None:
    path = tmp_path / "data" / "fhir.sqlite"
    clock = StuckClock()
    with FhirStore(path, clock_us=clock) as store:
        stored = store.create(patient())
        last = lu_us(stored)
    clock.now_us -= 3_600_000_000  # restarted with a clock an hour behind
    with FhirStore(path, clock_us=clock) as store:
        assert store.read("Patient", stored["id"]) == stored
        assert lu_us(store.create(patient())) == last + 1


def test_closed_store_refuses_calls() -> None:
    store = FhirStore(":memory:")
    store.close()
    store.close()
    with pytest.raises(RuntimeError):
        store.read("Patient", "x")
