"""The ward overview's view model on the synthetic ward, without Qt: one row per stay, only
the rows of patients whose vitals or tasks changed are rebuilt, the versions that became
visible are named, and the queries follow the rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from wardsync.core.bus import EventBus
from wardsync.core.queries import PatientVitals, WardTasks
from wardsync.core.store import ResourceStore
from wardsync.sandbox.ward.observations import VitalSigns, vital_sign_observations
from wardsync.sandbox.ward.seed import WARD_ID, build_ward
from wardsync.viewmodels.ward_overview import WardOverview, newly_visible_rows
from wardsync.viewmodels.ward_rows import WardRow

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def versioned(resource: dict[str, Any], version: str = "1") -> dict[str, Any]:
    return {**resource, "meta": {"versionId": version, "lastUpdated": NOW.isoformat()}}


@pytest.fixture
def store() -> ResourceStore:
    store = ResourceStore(EventBus())
    store.apply([versioned(r) for r in build_ward(7, now=NOW, patients=6)])
    return store


@pytest.fixture
def ward(store: ResourceStore) -> WardOverview:
    return WardOverview(store, WARD_ID)


def shown_by(rows: list[WardRow]):
    by_ref = {r.patient_ref: r for r in rows}
    return by_ref.get


def test_every_stay_on_the_ward_is_a_row_with_its_vitals(ward: WardOverview) -> None:
    rows = ward.all_rows()
    assert rows and len({r.patient_ref for r in rows}) == len(rows)
    assert all(r.news2 is not None for r in rows)  # the seed has vitals for everyone
    first = rows[0]
    assert ward.held_vitals(first.patient_ref)
    assert set(newly_visible_rows([], rows)) == {ref for r in rows for ref in r.refs}
    assert newly_visible_rows(rows, rows) == {}
    assert ward.alert_counts() == {}  # no alert center: no counts


def test_a_new_reading_rebuilds_only_that_patients_row(
    ward: WardOverview, store: ResourceStore
) -> None:
    rows = ward.all_rows()
    patient = rows[0].patient_id
    rows[0].viewers = ("Nurse Demo",)  # as presence filled it in on screen
    reading = [versioned(o) for o in vital_sign_observations(
        patient, VitalSigns(heart_rate=131, respiratory_rate=26, spo2=90, temperature=39.1,
                            systolic=88, diastolic=50),
        effective=NOW + timedelta(minutes=5), id_for=lambda slug: f"new-{slug}")]
    changed = store.apply(reading)
    assert not ward.is_structural(changed)
    new_rows, visible = ward.changed_rows(changed, shown_by(rows))
    assert list(new_rows) == [f"Patient/{patient}"]
    row = new_rows[f"Patient/{patient}"]
    assert row.heart_rate == 131 and row.news2 is not None and row.news2.total is not None
    assert row.viewers == ("Nurse Demo",)  # a new reading keeps who is looking
    assert visible and all(ref.startswith("Observation/new-") for ref in visible)


def test_a_reading_leaving_the_store_brings_the_one_before_it_back(
    ward: WardOverview, store: ResourceStore
) -> None:
    rows = ward.all_rows()
    patient_ref = rows[0].patient_ref
    shown = next(ref for ref in rows[0].refs if ref.startswith("Observation/"))
    removed = store.remove([shown])
    new_rows, visible = ward.changed_rows(removed, shown_by(rows))
    assert shown not in ward.held_vitals(patient_ref)
    assert shown not in new_rows[patient_ref].refs
    assert visible  # the earlier reading of that measurement is on screen again


def test_stays_beds_and_patients_are_structural_changes() -> None:
    assert WardOverview.is_structural(["Encounter/e1"])
    assert WardOverview.is_structural(["Observation/o1", "Patient/p1"])
    assert not WardOverview.is_structural(["Observation/o1", "Task/t1"])


def test_the_rows_need_their_vitals_and_the_wards_tasks(ward: WardOverview) -> None:
    rows = ward.all_rows()
    ids = sorted(r.patient_id for r in rows)
    assert ward.queries_for(rows) == {*(PatientVitals(p) for p in ids),
                                      WardTasks(WARD_ID, tuple(ids))}
    assert ward.queries_for([]) == set()
