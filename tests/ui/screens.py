"""Runs WardSync's windows on a real X display and saves screenshots (used by
test_screenshots.py under Xvfb): `python -m tests.ui.screens OUT_DIR`."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import qasync
from PySide6.QtWidgets import QApplication

from wardsync.core import codes
from wardsync.core.connection_status import ConnectionState
from wardsync.infra.settings import load_settings
from wardsync.sandbox.ward.lab import LabSystem
from wardsync.sync.activity import ActivityRecorder
from wardsync.ui.app import AppController
from wardsync.ui.diagnostics import DiagnosticsWindow
from wardsync.ui.gc_guard import MainThreadGarbageCollector
from wardsync.ui.lab_report import LabReportWindow
from wardsync.ui.patient_chart import TABS, PatientChartWindow
from wardsync.ui.stylesheets import load_stylesheet
from wardsync.ui.ward_overview import WardOverviewWindow

CRITICAL_POTASSIUM = 6.9  # mmol/L, above the 6.2 critical limit: shows a corrected, critical line


async def wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("window did not fill in time")
        await asyncio.sleep(0.05)


async def shoot(out: Path, theme: str) -> None:
    app = QApplication.instance()
    app.setStyleSheet(load_stylesheet(theme))
    settings = load_settings(environ={}, policy_path=out / "none.toml",
                             user_path=out / "none.toml")
    activity = ActivityRecorder()  # the metrics sink: the Diagnostics window reads it
    controller = AppController(settings, activity, demo=True)
    await controller.start()
    try:
        ward = controller.open_ward_overview()
        ward.resize(1400, 820)
        await wait_for(lambda: len(ward.model.rows) == 24
                       and all(r.news2 is not None for r in ward.model.rows))
        await wait_for(lambda: controller.workspace.workstation.status.state
                       is ConnectionState.LIVE)
        await wait_for(lambda: ward.freshness.text().startswith("Updated"))
        await asyncio.sleep(0.5)  # let the window manager-less X server map and paint
        shot = app.primaryScreen().grabWindow(ward.winId())
        shot.save(str(out / f"ward-overview-{theme}.png"))
        await shoot_ward_at_1100(app, ward, out, theme)
        await shoot_patient_windows(controller, ward, out, theme)
        await shoot_presence(controller, ward, out, theme)
        await shoot_diagnostics(controller, activity, out, theme)
        await shoot_alerts(controller, ward, out, theme)
    finally:
        await controller.aclose()


async def shoot_ward_at_1100(app: QApplication, ward: WardOverviewWindow, out: Path,
                             theme: str) -> None:
    """The ward at the default 1100 px with the highest-NEWS2 bed selected: name, NEWS2 and
    BP whole, the selected row keeping its band colour."""
    ward.resize(1100, 700)
    rows = ward.model.rows
    top = max(range(len(rows)), key=lambda i: getattr(rows[i].news2, "partial_total", -1))
    ward.table.selectRow(top)
    await asyncio.sleep(0.5)
    app.primaryScreen().grabWindow(ward.winId()).save(
        str(out / f"ward-overview-1100-{theme}.png"))
    ward.table.clearSelection()
    ward.resize(1400, 820)
    await asyncio.sleep(0.3)


async def shoot_patient_windows(controller: AppController, ward, out: Path, theme: str) -> None:
    """The chart of the sickest patient (every tab), and the lab detail of one of their
    reports after the laboratory corrected a result to a critical (or high) value."""
    ws = controller.workspace
    patient_id = max(ward.model.rows,
                     key=lambda r: r.news2.partial_total if r.news2 else 0).patient_id
    chart = PatientChartWindow.in_workspace(ws, patient_id)
    try:
        chart.resize(1400, 900)
        chart.show()
        await wait_for(lambda: all(ws.queries.state(k).status == "ok"
                                   for k in (chart.record_key, chart.vitals_key,
                                             chart.labs_key))
                       and chart.vitals.has_readings and chart.labs.group_keys())
        report_id = await _correct_one_result(controller, chart)
        await asyncio.sleep(3.5)  # let the update highlight fade: shots show the steady state
        for index, (section, _text, _name) in enumerate(TABS):
            chart.tabs.setCurrentIndex(index)
            await asyncio.sleep(0.4)
            _grab(chart, out / f"patient-chart-{section}-{theme}.png")
    finally:
        chart.close()
    detail = LabReportWindow.in_workspace(ws, report_id, patient_id)
    try:
        detail.resize(1100, 800)
        detail.show()
        await wait_for(lambda: detail.history_loads >= 1 and len(detail.history.row_keys()) >= 3)
        await asyncio.sleep(0.5)
        _grab(detail, out / f"lab-report-{theme}.png")
    finally:
        detail.close()
        await detail.wait_closed()


async def shoot_presence(controller: AppController, ward, out: Path, theme: str) -> None:
    """The avatar stack and a locked task: the demo nurse (signed in at a second, headless
    workstation) and the same doctor at a third one have the chart of a patient open; the
    nurse is editing one of the patient's tasks. Then the conflict view, after the nurse saved
    the task the doctor was editing."""
    import httpx

    from wardsync.auth.demo_login import DemoBrowser
    from wardsync.auth.login import sign_in
    from wardsync.auth.session import Session
    from wardsync.sync.alerts import Clinician
    from wardsync.sync.edits import RecordEdits, TaskDraft, TaskEdit
    from wardsync.sync.presence import PresenceService, identity_from_tokens
    from wardsync.sync.workstation import Workstation, WorkstationConfig

    info = controller.services.sandbox.info
    ws = controller.workspace.workstation
    session = controller.services.session
    presence = PresenceService(ws, identity_from_tokens(session.tokens))
    edits = RecordEdits(ws, Clinician.from_fhir_user(session.tokens.fhir_user,
                                                     session.user_display_name))
    await presence.start()
    others: list[tuple[Workstation, PresenceService, Session, RecordEdits]] = []
    http = httpx.AsyncClient(timeout=10.0)
    chart = None
    try:
        for username in ("demo.nurse", "demo.clinician"):
            config, tokens = await sign_in(
                http, fhir_base=info["fhir_base"], client_id="wardsync-desktop",
                scopes=("openid", "fhirUser", "offline_access", "user/*.cruds"),
                open_url=DemoBrowser(http, username=username, password="demo"))
            other_session = Session(tokens, http=http, config=config,
                                    client_id="wardsync-desktop")
            other_ws = Workstation(WorkstationConfig(
                fhir_base=info["fhir_base"], ward=info["ward"],
                realtime_endpoint=info["ably_endpoint"],
                realtime_token_url=info["ably_token_url"]), other_session, http=http)
            await other_ws.start()
            other_presence = PresenceService(other_ws, identity_from_tokens(tokens))
            await other_presence.start()
            others.append((other_ws, other_presence, other_session, RecordEdits(
                other_ws, Clinician.from_fhir_user(tokens.fhir_user, tokens.display_name))))
        tasks = await ws.fhir.search("Task", {"status": "requested,in-progress",
                                              "_count": "200"})
        per_patient: dict[str, int] = {}
        for task in tasks.matches:
            pid = task["for"]["reference"].split("/", 1)[1]
            per_patient[pid] = per_patient.get(pid, 0) + 1
        patient_id = max(sorted(per_patient), key=lambda p: per_patient[p])
        chart = PatientChartWindow.in_workspace(controller.workspace, patient_id,
                                                presence=presence, edits=edits)
        chart.resize(1400, 900)
        chart.show()
        await wait_for(lambda: ws.queries.state(chart.record_key).status == "ok"
                       and len(chart.tasks.row_keys()) >= 2 and chart.vitals.has_readings
                       and chart.presence_avatars.nobody.text() != "checking…")
        task_refs = [k for k in chart.tasks.row_keys() if k.startswith("Task/")]
        locked_task, edited_task = task_refs[0], task_refs[1]
        _, nurse_presence, _, nurse_edits = others[0]
        handles = [p.join("Patient", patient_id) for _, p, _, _ in others]
        nurse_task = nurse_presence.join(*locked_task.split("/"))
        handles.append(nurse_task)
        outcome = await nurse_task.claim("task")
        if not outcome.granted:
            raise RuntimeError(f"the nurse could not claim the task ({outcome.reason})")
        avatars = chart.presence_avatars
        await wait_for(lambda: len(avatars.avatars) == 2)
        await asyncio.sleep(0.6)
        _grab(chart, out / f"presence-avatars-{theme}.png")

        chart.tabs.setCurrentIndex(next(i for i, (s, _, _) in enumerate(TABS) if s == "tasks"))
        chart.tasks.setCurrentItem(chart.tasks.item_for(locked_task))
        editor = chart.task_editor
        await wait_for(lambda: editor.lock_banner.isVisible() and editor.avatars.avatars)
        await asyncio.sleep(3.5)  # let the new-line highlight of the task list fade
        _grab(chart, out / f"task-locked-{theme}.png")

        # The conflict view: the doctor edits the other task while the nurse saves it.
        chart.tasks.setCurrentItem(chart.tasks.item_for(edited_task))
        await wait_for(lambda: editor.ref == edited_task and editor.edit_button.isEnabled())
        theirs = dict(ws.store.get(edited_task))
        editor.edit_button.click()
        await wait_for(lambda: editor.mode == "editing")
        editor.status.setCurrentIndex(editor.status.findData("on-hold"))
        editor.note.setPlainText("On hold until the repeat sample is back.")
        await nurse_edits.save_task(TaskDraft(theirs, TaskEdit(
            status="completed", note="Done at the bedside, result phoned through.")))
        editor.save_button.click()
        await wait_for(lambda: editor.conflict_view is not None
                       and editor.conflict_view.isVisible())
        await asyncio.sleep(0.6)
        _grab(editor.conflict_view, out / f"conflict-view-{theme}.png")
        editor.conflict_view.theirs_button.click()
        for handle in handles:
            handle.close()
    finally:
        if chart is not None:
            chart.close()
            await chart.wait_closed()
        await presence.aclose()
        for other_ws, other_presence, other_session, _ in others:
            await other_presence.aclose()
            await other_ws.aclose()
            await other_session.aclose()
        await http.aclose()


async def shoot_diagnostics(controller: AppController, activity: ActivityRecorder, out: Path,
                            theme: str) -> None:
    """The Diagnostics window after some live traffic and two rejected pokes, with one
    query expanded to show the versions it holds."""
    from ably import AblyRest

    info = controller.services.sandbox.info
    host, port = info["ably_endpoint"].rsplit(":", 1)
    rest = AblyRest(key=info["ably_key"], use_token_auth=True, endpoint=host, port=int(port),
                    tls=False)
    try:
        channel = rest.channels.get(f"ward:{info['ward']}")
        await channel.publish("poke", "not json at all")
        await channel.publish("poke", {"type": "RESOURCE_CHANGED", "resourceType": "Patient",
                                       "id": "x", "versionId": "1", "seq": 10**9,
                                       "priority": "routine", "note": "free text"})
    finally:
        await rest.close()
    window = DiagnosticsWindow(controller.workspace, activity)
    try:
        window.resize(1400, 900)
        window.show()
        await wait_for(lambda: window.rejected.rowCount() == 2
                       and activity.snapshot().poke_to_pull.count >= 1)
        first = window.queries.topLevelItem(0)
        window.queries.expandItem(first)
        await asyncio.sleep(1.2)  # one timer refresh, so ages read as in normal use
        _grab(window, out / f"diagnostics-{theme}.png")
    finally:
        window.close()


async def shoot_alerts(controller: AppController, ward, out: Path, theme: str) -> None:
    """The Urgent banner on the ward overview (open, then escalated), the read-back dialog
    (ready, and refusing another patient's bed) and the Alerts window, for one critical
    potassium written by the laboratory. Alerts raised by earlier shots are acknowledged
    first, with read-back, so the banner shows this one."""
    from wardsync.sync.alerts import ReadBack
    from wardsync.ui.ack_dialog import AcknowledgeDialog

    center = controller.services.alerts
    for record in center.active():
        mrn = center.patient(record.patient_id).mrn
        await center.acknowledge(record.id, ReadBack(mrn, value_confirmed=True))
    row = ward.model.rows[3]
    info = controller.services.sandbox.info
    lab = LabSystem(fhir_base=info["fhir_base"], token_url=info["token_url"],
                    client_id=info["lab_client"]["client_id"],
                    client_secret=info["lab_client"]["client_secret"])
    try:
        await lab.post_panel(row.patient_id, codes.ELECTROLYTES_PANEL.code,
                             {codes.SODIUM.code: 138.0, codes.POTASSIUM.code: CRITICAL_POTASSIUM,
                              codes.UREA.code: 6.1, codes.CREATININE.code: 92.0,
                              codes.GLUCOSE.code: 5.9})
    finally:
        await lab.aclose()
    banner = ward.alert_banner
    await wait_for(lambda: banner.isVisible() and banner.current is not None)
    await asyncio.sleep(0.5)
    _grab(ward, out / f"alert-banner-{theme}.png")

    banner.acknowledge_button.click()
    dialog = ward.findChild(AcknowledgeDialog)
    dialog.read_back.setText(row.bed)
    dialog.value_read.setChecked(True)
    await asyncio.sleep(0.5)
    _grab(dialog, out / f"ack-dialog-{theme}.png")
    other = next(r.bed for r in ward.model.rows if r.bed != row.bed)
    dialog.read_back.setText(other)
    dialog.acknowledge_button.click()
    await wait_for(lambda: dialog.error.isVisible())
    await asyncio.sleep(0.3)
    _grab(dialog, out / f"ack-dialog-refused-{theme}.png")
    dialog.reject()

    alerts = controller.open_alerts_window()
    try:
        alerts.resize(1300, 520)
        await asyncio.sleep(0.6)
        _grab(alerts, out / f"alerts-window-{theme}.png")
    finally:
        alerts.close()

    center.set_escalation_after(1.0)  # the demo's window is minutes: shorten it for the shot
    try:
        await wait_for(lambda: banner.badge.text() == "ESCALATED", timeout_s=15)
        await asyncio.sleep(0.5)
        _grab(ward, out / f"alert-banner-escalated-{theme}.png")
    finally:
        center.set_escalation_after(controller.services.escalation_after_s())


def _grab(window, path: Path) -> None:
    QApplication.instance().primaryScreen().grabWindow(window.winId()).save(str(path))


async def _correct_one_result(controller: AppController, chart: PatientChartWindow) -> str:
    """Correct a result of one of the chart's reports as the laboratory would; returns the
    report id once the chart's store holds the corrected report."""
    ws = controller.workspace
    reports = [ws.store.get(k) for k in chart.labs.group_keys()
               if k.startswith("DiagnosticReport/")]
    if not reports:
        raise LookupError("the sickest patient has no lab report to show")

    def results(report: dict) -> list[dict]:
        return [ws.store.get(r["reference"]) for r in report["result"]]

    with_potassium = [r for r in reports if any(
        o["code"]["coding"][0]["code"] == codes.POTASSIUM.code for o in results(r))]
    report = (with_potassium or reports)[0]
    target = next((o for o in results(report)
                   if o["code"]["coding"][0]["code"] == codes.POTASSIUM.code),
                  results(report)[0])
    code = target["code"]["coding"][0]["code"]
    if code == codes.POTASSIUM.code:
        value = CRITICAL_POTASSIUM
    else:  # no potassium: a clearly high value for the test's range
        value = round(float(target["referenceRange"][0]["high"]["value"]) * 1.5, 1)
    info = controller.services.sandbox.info
    lab = LabSystem(fhir_base=info["fhir_base"], token_url=info["token_url"],
                    client_id=info["lab_client"]["client_id"],
                    client_secret=info["lab_client"]["client_secret"])
    try:
        await lab.correct_report(report["id"], {code: value})
    finally:
        await lab.aclose()
    ref = f"DiagnosticReport/{report['id']}"
    await wait_for(lambda: (ws.store.get(ref) or {}).get("status") == "corrected")
    return report["id"]


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication(sys.argv[:1])
    # As in the app: Python's garbage collector runs on the GUI thread only, so a window
    # caught in a reference cycle is never destroyed on a worker thread (which kills the
    # process: "Timers cannot be stopped from another thread").
    collector = MainThreadGarbageCollector(app)
    collector.start()
    loop = qasync.QEventLoop(app)
    with loop:
        for theme in ("light", "high-contrast"):
            loop.run_until_complete(shoot(out, theme))
    collector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
