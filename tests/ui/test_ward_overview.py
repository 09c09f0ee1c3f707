"""Ward overview: open-task counts and unacknowledged critical alerts per bed, kept fresh."""

from __future__ import annotations

import asyncio

import pytest
from pytestqt.qtbot import QtBot

from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.settings import Settings
from wardsync.sandbox.ward.lab import LabSystem
from wardsync.ui.app import AppController
from wardsync.ui.ward_overview import ALERT_COLUMN, COLUMNS, VIEWING_COLUMN
from wardsync.viewmodels.ward_rows import OPEN_TASK

TASKS_COLUMN = COLUMNS.index("Tasks")




async def test_task_counts_and_alerts_follow_the_server(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    lab = None
    try:
        ward = controller.open_ward_overview()
        qtbot.addWidget(ward)
        fhir = controller.workspace.workstation.fhir
        tasks = (await fhir.search("Task", {"_count": "500"})).matches
        expected: dict[str, int] = {}
        for t in tasks:
            if t["status"] in OPEN_TASK:
                pid = t["for"]["reference"].split("/", 1)[1]
                expected[pid] = expected.get(pid, 0) + 1

        def shown() -> dict[str, int]:
            return {r.patient_id: r.open_tasks for r in ward.model.rows if r.open_tasks}

        await wait_for(lambda: len(ward.model.rows) == 24 and shown() == expected,
                       what="open task counts equal to the server")
        # A task completed elsewhere leaves the count.
        done = next(t for t in tasks if t["status"] in OPEN_TASK)
        pid = done["for"]["reference"].split("/", 1)[1]
        await fhir.update(dict(done, status="completed"),
                          if_match_version=done["meta"]["versionId"])
        await wait_for(lambda: shown().get(pid, 0) == expected[pid] - 1, what="task done")
        row = next(i for i, r in enumerate(ward.model.rows) if r.patient_id == pid)
        text = ward.model.index(row, TASKS_COLUMN).data()
        assert text == (str(expected[pid] - 1) if expected[pid] > 1 else "")

        # A critical potassium from the laboratory shows as URGENT on that bed.
        info = controller.services.sandbox.info
        lab = LabSystem(fhir_base=info["fhir_base"], token_url=info["token_url"],
                        client_id=info["lab_client"]["client_id"],
                        client_secret=info["lab_client"]["client_secret"])
        target = ward.model.rows[5]
        await lab.post_panel(target.patient_id, codes.ELECTROLYTES_PANEL.code, {
            codes.SODIUM.code: 139.0, codes.POTASSIUM.code: 6.9, codes.UREA.code: 5.0,
            codes.CREATININE.code: 80.0, codes.GLUCOSE.code: 5.5})
        await wait_for(lambda: ward.model.rows[5].alerts == 1, what="urgent on the bed")
        assert ward.model.index(5, ALERT_COLUMN).data() == "1 URGENT"
        assert all(r.alerts == 0 for i, r in enumerate(ward.model.rows) if i != 5)
    finally:
        if lab is not None:
            await lab.aclose()
        await controller.aclose()


@pytest.mark.slow
async def test_the_ward_lists_who_has_each_record_open_without_showing_itself(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    import httpx

    from wardsync.auth.demo_login import DemoBrowser
    from wardsync.auth.login import sign_in
    from wardsync.auth.session import Session
    from wardsync.sync.presence import PresenceService, identity_from_tokens
    from wardsync.sync.workstation import Workstation, WorkstationConfig

    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    http = httpx.AsyncClient()
    nurse_ws = presence = session = None
    try:
        ward = controller.open_ward_overview()
        qtbot.addWidget(ward)
        await wait_for(lambda: len(ward.model.rows) == 24, what="ward")
        info = controller.services.sandbox.info
        # A nurse at another workstation opens bed 4's record.
        config, tokens = await sign_in(
            http, fhir_base=info["fhir_base"], client_id="wardsync-desktop",
            scopes=("openid", "fhirUser", "user/*.cruds"),
            open_url=DemoBrowser(http, username="demo.nurse", password="demo"))
        session = Session(tokens, http=http, config=config, client_id="wardsync-desktop")
        nurse_ws = Workstation(WorkstationConfig(
            fhir_base=info["fhir_base"], ward=info["ward"],
            realtime_endpoint=info["ably_endpoint"], realtime_token_url=info["ably_token_url"]),
            session, http=http)
        await nurse_ws.start()
        presence = PresenceService(nurse_ws, identity_from_tokens(tokens))
        await presence.start()
        bed4 = ward.model.rows[3].patient_id
        handle = presence.join("Patient", bed4)
        await wait_for(lambda: ward.model.rows[3].viewers == ("Nurse Demo Nightingale",),
                       what="the nurse listed on bed 4")
        assert ward.model.index(3, VIEWING_COLUMN).data() == "DN"
        assert all(not r.viewers for r in ward.model.rows if r.patient_id != bed4)
        await asyncio.sleep(1.0)
        assert handle.others() == ()  # the ward list watches; it is not "viewing" the record
        chart = controller.open_patient_chart(bed4)  # opening the chart is viewing it
        qtbot.addWidget(chart)
        await wait_for(lambda: [m.name for m in handle.others()] == ["Dr Demo Clinician"],
                       what="the doctor seen by the nurse")
        handle.close()
        await wait_for(lambda: ward.model.rows[3].viewers == (), timeout_s=20,
                       what="the nurse gone from bed 4")
    finally:
        if presence is not None:
            await presence.aclose()
        if nurse_ws is not None:
            await nurse_ws.aclose()
        if session is not None:
            await session.aclose()
        await http.aclose()
        await controller.aclose()


@pytest.mark.slow
async def test_readings_that_leave_the_store_leave_the_ward_overview(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    """Readings dropped from the store (out of the vitals window, or their query closed) must
    leave the window's own per-patient readings too: it keeps them to compute NEWS2, and
    before this it kept every reading it had ever shown (memory growing with the ward's
    traffic, and NEWS2 computed over ever more readings)."""
    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    try:
        ward = controller.open_ward_overview()
        qtbot.addWidget(ward)
        store = controller.workspace.store
        await wait_for(lambda: len(ward.model.rows) == 24
                       and all(r.last_vitals for r in ward.model.rows),
                       what="the ward with vitals")
        row = ward.model.rows[3]
        held = ward.held_vitals(row.patient_ref)
        assert held and set(held) <= set(store.refs())
        other = ward.model.rows[4]
        other_shown = ward.model.rows[4].last_vitals

        store.remove(held)  # as the vitals window drops them
        await wait_for(lambda: ward.model.row_of(row.patient_ref).last_vitals == "",
                       what="the bed without readings")
        assert ward.held_vitals(row.patient_ref) == []
        assert ward.model.row_of(row.patient_ref).news2 is None
        assert ward.model.row_of(other.patient_ref).last_vitals == other_shown
    finally:
        await controller.aclose()
