"""Shared set-up of the presence and editing UI tests: the doctor's chart window on a live
workstation with its PresenceService and RecordEdits, and the nurse at a second, headless
workstation (her own sign-in, sync stack and realtime connection) on the same sandbox.
(No tests here; test_presence_ui.py and test_task_edit*.py import these.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pytestqt.qtbot import QtBot

from tests.sandbox_fixtures import demo_sign_in
from tests.sync.test_sync_live import workstation
from tests.ui.test_patient_chart_harness import PATIENT, LiveChart, live_chart, wait_until
from wardsync.core.connection_status import ConnectionState
from wardsync.core.queries import PatientRecord
from wardsync.sync.alerts import Clinician
from wardsync.sync.edits import RecordEdits
from wardsync.sync.presence import PresenceService, identity_from_tokens
from wardsync.sync.workstation import Workstation
from wardsync.ui.patient_chart import TABS, PatientChartWindow

TASK_REF = "Task/task-03-1"


@dataclass
class Ward:
    """The doctor's chart side and the nurse's headless workstation."""

    live: LiveChart
    presence: PresenceService
    edits: RecordEdits
    nurse_ws: Workstation
    nurse_presence: PresenceService
    nurse_edits: RecordEdits

    def open_chart(self, qtbot: QtBot, patient: str = PATIENT) -> PatientChartWindow:
        window = PatientChartWindow.in_workspace(self.live.workspace, patient,
                                                 presence=self.presence, edits=self.edits)
        self.live.show(qtbot, window)
        return window


@contextlib.asynccontextmanager
async def ward(seeded_data_dir: Path, tmp_path: Path, *, presence: dict[str, Any] | None = None,
               nurse_presence: dict[str, Any] | None = None) -> AsyncIterator[Ward]:
    async with live_chart(seeded_data_dir, tmp_path) as live, \
            httpx.AsyncClient(timeout=10.0) as http:
        ws = live.workspace.workstation
        session = ws.tokens
        doctor = PresenceService(ws, identity_from_tokens(session.tokens),
                                 **{"leave_grace_s": 0.3, **(presence or {})})
        await doctor.start()
        nurse = await demo_sign_in(live.sandbox, http, "demo.nurse")
        try:
            async with workstation(live.sandbox, nurse, http) as (nurse_ws, _metrics):
                nurse_presence_service = PresenceService(
                    nurse_ws, identity_from_tokens(nurse.tokens),
                    **{"leave_grace_s": 0.3, **(nurse_presence or {})})
                await nurse_presence_service.start()
                try:
                    await wait_until(lambda: ws.status.state is ConnectionState.LIVE
                                     and nurse_ws.status.state is ConnectionState.LIVE,
                                     what="both workstations live")
                    yield Ward(
                        live, doctor,
                        RecordEdits(ws, Clinician.from_fhir_user(session.tokens.fhir_user,
                                                                 session.user_display_name)),
                        nurse_ws, nurse_presence_service,
                        RecordEdits(nurse_ws, Clinician.from_fhir_user(
                            nurse.tokens.fhir_user, nurse.user_display_name)))
                finally:
                    for window in live.windows:
                        window.close()
                    for window in live.windows:
                        await window.wait_closed()
                    await nurse_presence_service.aclose()
                    await doctor.aclose()
        finally:
            await nurse.aclose()


async def nurse_task(w: Ward) -> dict:
    """The task as the nurse's workstation holds it (loaded once)."""
    key = PatientRecord(PATIENT)
    w.nurse_ws.open(key)
    await wait_until(lambda: w.nurse_ws.store.get(TASK_REF) is not None, what="nurse's task")
    return dict(w.nurse_ws.store.get(TASK_REF))


def tab(window: PatientChartWindow, section: str) -> None:
    window.tabs.setCurrentIndex(next(i for i, (s, _, _) in enumerate(TABS) if s == section))


async def select_task(window: PatientChartWindow, ref: str = TASK_REF) -> None:
    await wait_until(lambda: window.tasks.item_for(ref) is not None, what="task row")
    tab(window, "tasks")
    window.tasks.setCurrentItem(window.tasks.item_for(ref))
    assert window.task_editor is not None and window.task_editor.ref == ref


async def settle(seconds: float = 0.1) -> None:
    await asyncio.sleep(seconds)
