"""Alert UI with the real sandbox on the Qt event loop: the banner in every window showing the
patient, the Alerts window, the read-back dialog writing to the server, escalation's louder
state, and the screen lock hiding the banner with the rest of the patient's data."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel
from pytestqt.qtbot import QtBot

from tests.sandbox_fixtures import demo_sign_in, running_sandbox
from tests.sync.test_sync_live import CRITICAL_LYTES, workstation
from wardsync.core import codes
from wardsync.core.alerts import AlertId, AlertStatus
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.queries import PatientLabs
from wardsync.sandbox.server import Sandbox
from wardsync.station.workspace import Workspace
from wardsync.sync.alerts import AlertCenter, Clinician
from wardsync.ui.ack_dialog import AcknowledgeDialog
from wardsync.ui.alert_notifier import AlertNotifier
from wardsync.ui.alerts_window import AlertsWindow
from wardsync.ui.idle_lock import ScreenLock
from wardsync.ui.ward_overview import WardOverviewWindow
from wardsync.ui.window_base import PanelWindow


@pytest.fixture(autouse=True)
def garbage_collected_on_the_gui_thread() -> Iterator[None]:
    """Collect cyclic garbage here, on the GUI thread, before and after each test.

    Left to the automatic collector, closed windows (Qt objects in reference cycles) may be
    collected on whichever thread happens to allocate — here the executor thread that
    validates large FHIR bundles — and destroying Qt objects off their thread crashes the
    process (seen as a segfault in that thread while it validated).
    """
    gc.collect()
    yield
    gc.collect()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0,
                   what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


class LabsWindow(PanelWindow):
    """A patient window as the chart and lab windows are: it opens one patient's queries."""

    kind = "labs"

    def __init__(self, workspace: Workspace, patient_id: str) -> None:
        super().__init__(workspace.panel(self.kind))
        self.open_query(PatientLabs(patient_id))


@dataclass
class Live:
    sandbox: Sandbox
    space: Workspace
    center: AlertCenter
    metrics: MemoryMetrics


@contextlib.asynccontextmanager
async def live_alerts(seeded_data_dir: Path, tmp_path: Path, **options: Any
                      ) -> AsyncIterator[Live]:
    """Sandbox, signed-in workstation, alert center and workspace, all started and stopped
    inside the test body (pytest-qt steps Qt events between test phases, which on a qasync
    loop must not find servers or pull loops still running)."""
    QApplication.instance().setQuitOnLastWindowClosed(False)
    async with running_sandbox(seeded_data_dir, tmp_path) as sandbox, \
            httpx.AsyncClient(timeout=10.0) as http:
        session = await demo_sign_in(sandbox, http)
        try:
            async with workstation(sandbox, session, http) as (ws, metrics):
                center = AlertCenter(ws, clinician=Clinician.from_fhir_user(
                    session.tokens.fhir_user, session.user_display_name),
                    workstation_name="ws-test", **options)
                await center.start()
                try:
                    space = Workspace(workstation=ws, metrics=metrics,
                                      user_name=session.user_display_name, demo=True,
                                      ward=sandbox.ward, alerts=center)
                    await wait_for(lambda: ws.status.state is ConnectionState.LIVE, what="live")
                    await wait_for(lambda: center.feed_key is not None
                                   and ws.queries.state(center.feed_key).status == "ok",
                                   what="alerts loaded")
                    yield Live(sandbox, space, center, metrics)
                finally:
                    await center.aclose()
                assert ws.bus.handler_errors == 0, "a bus handler raised"
        finally:
            await session.aclose()


def rendered_refs(metrics: MemoryMetrics, window: PanelWindow) -> list[str]:
    return [ref for e in metrics.of("rendered") if e["window"] == window.window_id
            for ref in e["refs"]]


async def post_critical(sandbox: Sandbox, center: AlertCenter, patient: str = "pat-04"
                        ) -> AlertId:
    report, _ = await sandbox.lab.post_panel(patient, codes.ELECTROLYTES_PANEL.code,
                                             CRITICAL_LYTES)
    alert_id = AlertId(f"DiagnosticReport/{report['id']}", report["meta"]["versionId"])
    await wait_for(lambda: center.get(alert_id) is not None, what="alert raised")
    return alert_id


async def test_one_alert_shows_in_every_window_of_that_patient_and_in_the_ward_overview(
    qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path
) -> None:
    async with live_alerts(seeded_data_dir, tmp_path) as live:
        space, center, metrics, sandbox = live.space, live.center, live.metrics, live.sandbox
        ward = WardOverviewWindow.in_workspace(space)
        labs_04 = LabsWindow(space, "pat-04")
        labs_05 = LabsWindow(space, "pat-05")
        alerts = AlertsWindow.in_workspace(space)
        windows = [ward, labs_04, labs_05, alerts]
        for w in windows:
            qtbot.addWidget(w)
            w.show()
        assert alerts.alert_banner is None  # the Alerts window is the list itself
        for w in (ward, labs_04, labs_05):
            assert w.alert_banner is not None and not w.alert_banner.isVisible()

        alert_id = await post_critical(sandbox, center)
        for w in (ward, labs_04):
            await wait_for(lambda w=w: w.alert_banner.isVisible(), what="banner shown")
            text = w.alert_banner.text.text()
            assert "Critical result: Potassium 6.9 mmol/L" in text
            assert "Bed 04" in text and "MRN SYN" in text and "released just now" in text
            assert w.alert_banner.badge.text() == "URGENT"
            assert alert_id.report_ref in rendered_refs(metrics, w)
        assert not labs_05.alert_banner.isVisible()  # another patient's window
        assert alert_id.report_ref not in rendered_refs(metrics, labs_05)
        await wait_for(lambda: alerts.table.rowCount() == 1, what="alerts window row")
        row = [alerts.table.item(0, c).text() for c in range(alerts.table.columnCount())]
        assert row[0] == "just now" and row[1] == "Open" and row[2] == "Bed 04"
        assert row[5] == "Potassium 6.9 mmol/L"
        assert "waiting for acknowledgement: 1" in alerts.heading.text()
        # However many windows: raised once on this workstation.
        assert [e["ref"] for e in metrics.of("alert_raised")] == [alert_id.report_ref]
        for w in windows:
            w.close()


async def test_acknowledging_with_read_back_in_the_dialog_clears_every_banner(
    qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path
) -> None:
    async with live_alerts(seeded_data_dir, tmp_path) as live:
        space, center, sandbox = live.space, live.center, live.sandbox
        ward = WardOverviewWindow.in_workspace(space)
        labs = LabsWindow(space, "pat-04")
        alerts = AlertsWindow.in_workspace(space)
        for w in (ward, labs, alerts):
            qtbot.addWidget(w)
            w.show()
        alert_id = await post_critical(sandbox, center)
        await wait_for(lambda: labs.alert_banner.isVisible())
        labs.alert_banner.acknowledge_button.click()
        dialog = labs.findChild(AcknowledgeDialog)
        assert dialog is not None and dialog.isVisible()
        assert not dialog.acknowledge_button.isEnabled()
        # A second click brings the same dialog forward rather than opening another.
        labs.alert_banner.acknowledge_button.click()
        assert len([d for d in labs.findChildren(AcknowledgeDialog) if d.isVisible()]) == 1

        dialog.read_back.setText("Bed 05")  # the wrong patient
        dialog.value_read.setChecked(True)
        assert dialog.acknowledge_button.isEnabled()
        dialog.acknowledge_button.click()
        await wait_for(lambda: dialog.error.isVisible(), what="read-back refused")
        assert "not this patient's bed or MRN" in dialog.error.text()
        assert center.get(alert_id).status is AlertStatus.OPEN  # type: ignore[union-attr]
        # The text is kept and focus is back in the field (not on Cancel): the next Enter
        # tries again with the corrected text rather than cancelling.
        assert dialog.read_back.text() == "Bed 05"
        assert dialog.focusWidget() is dialog.read_back
        assert dialog.acknowledge_button.isDefault()
        # Nothing is clipped: every value line has at least the height its text needs.
        for value in dialog.findChildren(QLabel, "ackValue"):
            assert value.height() >= value.heightForWidth(value.width()) > 0

        sandbox.faults.fail(503, for_s=30)
        dialog.read_back.setText("bed 4")
        qtbot.keyClick(dialog.read_back, Qt.Key.Key_Return)  # Enter in the field tries again
        await wait_for(lambda: dialog.error.isVisible(), what="write failure shown")
        sandbox.faults.clear()
        assert "could not be recorded" in dialog.error.text()
        assert dialog.isVisible() and labs.alert_banner.isVisible()

        results: list[int] = []
        acknowledged: list[AlertId] = []
        dialog.finished.connect(results.append)
        dialog.acknowledged.connect(acknowledged.append)
        dialog.acknowledge_button.click()
        await wait_for(lambda: results, what="dialog accepted")
        assert results == [1] and acknowledged == [alert_id]  # QDialog.Accepted
        assert center.get(alert_id).status is AlertStatus.ACKNOWLEDGED  # type: ignore[union-attr]
        # The center changes at once; windows hear of it on the bus's next flush.
        await wait_for(lambda: space.workstation.bus.pending == 0, what="bus delivered")
        assert not labs.alert_banner.isVisible() and not ward.alert_banner.isVisible()
        assert alerts.table.rowCount() == 0
        assert alerts.closed_table.rowCount() == 1
        how = alerts.closed_table.item(0, 4).text()
        assert how == "Acknowledged by Dr Demo Clinician on ws-test (read back bed)"
        for w in (ward, labs, alerts):
            w.close()


async def test_a_dialog_left_open_learns_that_another_workstation_acknowledged(
    qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path
) -> None:
    async with live_alerts(seeded_data_dir, tmp_path) as live:
        space, center, sandbox = live.space, live.center, live.sandbox
        alerts = AlertsWindow.in_workspace(space)
        qtbot.addWidget(alerts)
        alerts.show()
        alert_id = await post_critical(sandbox, center)
        await wait_for(lambda: alerts.table.rowCount() == 1)
        dialog = alerts.acknowledge_selected()
        assert isinstance(dialog, AcknowledgeDialog) and dialog.alert_id == alert_id
        # Someone else acknowledges (here: the same center, as another dialog would).
        from wardsync.sync.alerts import ReadBack

        await center.acknowledge(alert_id, ReadBack("Bed 04", value_confirmed=True))
        await wait_for(lambda: dialog.info.isVisible(), what="dialog updated")
        assert dialog.info.text().startswith("Already acknowledged by Dr Demo Clinician at ")
        assert dialog.info.text().endswith(" on ws-test.")
        assert not dialog.acknowledge_button.isEnabled() and dialog.cancel_button.text() == "Close"
        dialog.cancel_button.click()
        alerts.close()


async def test_escalation_turns_the_banner_louder_and_rings_the_escalation_tone(
    qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path,
    monkeypatch: Any,
) -> None:
    bells: list[float] = []
    # The bell cannot be heard here; count the calls instead.
    monkeypatch.setattr(QApplication, "beep", staticmethod(lambda: bells.append(time.monotonic())))
    async with live_alerts(seeded_data_dir, tmp_path, escalation_after_s=1.0,
                           escalation_jitter_s=0.0) as live:
        space, center, sandbox = live.space, live.center, live.sandbox
        ward = WardOverviewWindow.in_workspace(space)
        qtbot.addWidget(ward)
        ward.show()
        notifier = AlertNotifier(center, space.bus, sound_enabled=True, sound_mutable=False,
                                 windows=lambda: [ward], tray_available=False)
        try:
            alert_id = await post_critical(sandbox, center)
            assert [p.sound for p in notifier.plans] == ["alert"]
            await wait_for(lambda: ward.alert_banner.badge.text() == "ESCALATED", timeout_s=8,
                           what="escalated banner")
            assert ward.alert_banner.property("state") == "escalated"
            assert "ESCALATED to the paging chain at" in ward.alert_banner.text.text()
            assert center.get(alert_id).status is AlertStatus.ESCALATED  # type: ignore[union-attr]
            assert [p.sound for p in notifier.plans] == ["alert", "escalation"]
            assert notifier.plans[1].tray_title is None  # no tray offscreen
            assert "Bed 04" in notifier.plans[1].tray_text
            await wait_for(lambda: len(bells) == 4, what="one bell, then three")
            assert bells[3] - bells[1] >= 0.6  # spaced, not one blurred sound
        finally:
            notifier.close()
            ward.close()


async def test_the_screen_lock_hides_the_banner_and_a_new_alert_stays_hidden(
    qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path
) -> None:
    async with live_alerts(seeded_data_dir, tmp_path) as live:
        space, center, sandbox = live.space, live.center, live.sandbox
        ward = WardOverviewWindow.in_workspace(space)
        qtbot.addWidget(ward)
        ward.show()
        await post_critical(sandbox, center)
        bar = ward.alert_banner.parentWidget()
        await wait_for(lambda: ward.alert_banner.isVisible())
        lock = ScreenLock()
        lock.lock([ward], "Dr Demo Clinician")
        assert not bar.isVisible() and not ward.alert_banner.isVisible()
        await post_critical(sandbox, center, "pat-05")  # arrives while locked
        await asyncio.sleep(0.1)
        assert not ward.alert_banner.isVisible()
        lock.unlock()
        assert ward.alert_banner.isVisible()
        assert "+1 more critical result" in ward.alert_banner.text.text()
        ward.close()
