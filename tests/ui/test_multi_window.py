"""Several windows, one connection: one poke repaints every window showing the resource,
after a single pull."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pytestqt.qtbot import QtBot

from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.queries import PatientVitals
from wardsync.infra.settings import Settings
from wardsync.ui.app import AppController

pytestmark = pytest.mark.slow  # several windows of a live app


async def test_one_poke_updates_every_window_with_a_single_pull(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    try:
        wards = [controller.open_ward_overview() for _ in range(2)]
        for w in wards:
            qtbot.addWidget(w)
        await wait_for(lambda: all(len(w.model.rows) == 24 for w in wards), what="wards")
        patient = wards[0].model.rows[2].patient_id
        chart = controller.open_patient_chart(patient)
        qtbot.addWidget(chart)
        queries = controller.workspace.queries
        key = PatientVitals(patient)
        await wait_for(lambda: all(st.status == "ok" for st in queries.states()),
                       what="every query loaded")
        assert controller.workspace.workstation.realtime.channel_names.count(
            f"ward:{controller.workspace.ward}") == 1  # one connection, one ward channel
        pulls = queries.state(key).pulls

        # One new heart rate for that patient: one write, one poke.
        obs = await controller.workspace.workstation.fhir.create({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY,
                                      "code": codes.CATEGORY_VITAL_SIGNS}]}],
            "code": {"coding": [{"system": codes.LOINC, "code": codes.HEART_RATE.code}]},
            "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": datetime.now(UTC).isoformat(timespec="seconds"),
            "valueQuantity": {"value": 142, "unit": "/min", "system": codes.UCUM,
                              "code": "/min"},
        })
        ref = f"Observation/{obs['id']}"
        window_ids = [w.window_id for w in (*wards, chart)]

        def rendered_in() -> set[str]:
            return {e["window"] for e in metrics.of("rendered") if ref in e["refs"]}

        await wait_for(lambda: rendered_in() >= set(window_ids), what="every window repainted")
        assert [e["ref"] for e in metrics.of("poke_received")].count(ref) == 1
        assert queries.state(key).pulls == pulls + 1, "one pull served every window"
        assert [e["ref"] for e in metrics.of("pull_done")].count(ref) == 1
        row = next(r for r in wards[1].model.rows if r.patient_id == patient)
        assert row.heart_rate == 142
    finally:
        await controller.aclose()
