"""The ward overview's view model: which rows the ward shows and which queries feed them.

`WardOverview` reads the shared store (and the alert center, when there is one) and answers
the window's questions in plain Python: all rows after a structural change (a stay, bed or
patient changed), only the rows of the patients whose vitals or tasks changed otherwise, the
resource versions that became visible with them (for `rendered`, docs/architecture.md §3),
the queries the rows need, and the unacknowledged alerts per patient. The Qt window
(ui/ward_overview.py) takes this model and renders it; it never sees the workstation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from wardsync.core.queries import PatientVitals, QueryKey, WardCensus, WardTasks
from wardsync.core.store import ResourceStore
from wardsync.sync.alerts import AlertCenter
from wardsync.viewmodels.ward_rows import (
    WardRow,
    build_row,
    is_vital_sign,
    patient_ref_of,
    ward_encounters,
)

STRUCTURAL_TYPES = frozenset({"Encounter", "Location", "Patient"})


class WardOverview:
    """Rows of one ward from the store; holds the vital signs each row was built from."""

    def __init__(self, store: ResourceStore, ward: str,
                 alerts: AlertCenter | None = None) -> None:
        self.store = store
        self.ward = ward
        self.alerts = alerts
        self.census_key = WardCensus(ward)
        self._vitals: dict[str, dict[str, Mapping[str, Any]]] = {}  # patient ref -> obs

    def alert_counts(self) -> dict[str, int]:
        """Unacknowledged critical-result alerts per patient id."""
        if self.alerts is None:
            return {}
        counts: dict[str, int] = {}
        for record in self.alerts.active():
            counts[record.patient_id] = counts.get(record.patient_id, 0) + 1
        return counts

    def held_vitals(self, patient_ref: str) -> list[str]:
        """References of the vital-sign readings held for one patient."""
        return list(self._vitals.get(patient_ref, {}))

    @staticmethod
    def is_structural(refs: Iterable[str]) -> bool:
        """A change of stays, beds or patients: every row is rebuilt."""
        return any(r.split("/", 1)[0] in STRUCTURAL_TYPES for r in refs)

    def all_rows(self) -> list[WardRow]:
        """Every in-progress stay on the ward, in the store's order."""
        self._vitals.clear()
        for obs in self.store.select("Observation", is_vital_sign):
            ref = patient_ref_of(obs)
            if ref is not None:
                self._vitals.setdefault(ref, {})[f"Observation/{obs['id']}"] = obs
        rows = []
        alerts = self.alert_counts()
        for enc in ward_encounters(self.store, self.ward):
            patient_ref = patient_ref_of(enc) or ""
            row = build_row(enc, self.store, self._vitals.get(patient_ref, {}).values(),
                            alerts=alerts.get(patient_ref.removeprefix("Patient/"), 0))
            if row is not None:
                rows.append(row)
        return rows

    def changed_rows(self, refs: Iterable[str], shown: Callable[[str], WardRow | None]
                     ) -> tuple[dict[str, WardRow], dict[str, str]]:
        """New rows for the patients on screen (`shown(patient_ref)`) whose vitals or tasks
        are among `refs`, and the versions that became visible with them."""
        dirty: set[str] = set()
        for ref in refs:
            if ref.startswith("Task/"):
                task = self.store.get(ref)
                patient_ref = patient_ref_of(task) if task else None
                if patient_ref is not None and shown(patient_ref) is not None:
                    dirty.add(patient_ref)
                continue
            if not ref.startswith("Observation/"):
                continue
            obs = self.store.get(ref)
            if obs is None:
                # Gone from the store (out of the vitals window, or its query closed): forget
                # it here too, or the overview would keep every reading ever shown.
                for patient_ref, held in self._vitals.items():
                    if held.pop(ref, None) is not None:
                        dirty.add(patient_ref)
                continue
            if not is_vital_sign(obs):
                continue
            patient_ref = patient_ref_of(obs)
            if patient_ref is not None and shown(patient_ref) is not None:
                self._vitals.setdefault(patient_ref, {})[ref] = obs
                dirty.add(patient_ref)
        visible: dict[str, str] = {}
        new_rows: dict[str, WardRow] = {}
        for patient_ref in dirty:
            old = shown(patient_ref)
            enc = self.store.get(old.encounter_ref) if old else None
            row = build_row(enc, self.store, self._vitals.get(patient_ref, {}).values(),
                            alerts=old.alerts if old else 0) if enc else None
            if row is None or old is None:
                continue
            # Who else has the patient open comes from presence, not from the store: a new
            # reading must not blank the "Viewing" column until the next presence change.
            row.viewers = old.viewers
            new_rows[patient_ref] = row
            visible.update({r: v for r, v in row.refs.items() if old.refs.get(r) != v})
        return new_rows, visible

    def queries_for(self, rows: Iterable[WardRow]) -> set[QueryKey]:
        """The per-patient queries the rows need besides the census: vitals and ward tasks."""
        patient_ids = sorted(r.patient_id for r in rows)
        wanted: set[QueryKey] = {PatientVitals(p) for p in patient_ids}
        if patient_ids:
            wanted.add(WardTasks(self.ward, tuple(patient_ids)))
        return wanted


def newly_visible_rows(before: Iterable[WardRow], rows: Iterable[WardRow]) -> dict[str, str]:
    """Versions on the new rows that the old rows did not show (every one of a new bed)."""
    shown = {r.patient_ref: r.refs for r in before}
    return {ref: v for r in rows for ref, v in r.refs.items()
            if shown.get(r.patient_ref, {}).get(ref) != v}
