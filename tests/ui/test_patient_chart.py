"""The patient chart against the real sandbox: every tab shows the seeded patient as the
server holds them, new results and vitals appear in an open chart (highlighted, with a
`rendered` event naming the new versions), and loading / error states say what is going on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.ui.test_patient_chart_harness import (
    PATIENT,
    LiveChart,
    live_chart,
    rendered_refs,
    server_resources,
    wait_until,
)
from wardsync.core import codes
from wardsync.sandbox.ward.observations import VitalSigns
from wardsync.ui.patient_chart import TABS, PatientChartWindow
from wardsync.viewmodels.record_rows import GROUP_DONE_TASKS, GROUP_OPEN_TASKS
from wardsync.viewmodels.ward_rows import display_name, mrn

LYTES = {codes.SODIUM.code: 138.0, codes.POTASSIUM.code: 6.8, codes.UREA.code: 5.0,
         codes.CREATININE.code: 80.0, codes.GLUCOSE.code: 5.4}
DATA_KEYS = ("record", "vitals", "labs", "identity")


def open_chart(qtbot: QtBot, live: LiveChart, patient: str = PATIENT) -> PatientChartWindow:
    window = PatientChartWindow.in_workspace(live.workspace, patient)
    live.show(qtbot, window)
    return window


def loaded(window: PatientChartWindow) -> bool:
    """Every query answered and the window painted it: query states change at once, but
    the store changes reach windows on the bus's next flush."""
    keys = (window.record_key, window.vitals_key, window.labs_key, window.identity_key)
    return (all(window.panel.queries.state(k).status == "ok" for k in keys)
            and window.panel.bus.pending == 0
            and window.vitals.has_readings)


async def test_every_tab_shows_the_seeded_patient_as_the_server_holds_them(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        sandbox = live.sandbox
        window = open_chart(qtbot, live)
        await wait_until(lambda: loaded(window), what="chart loaded")
        server_patient = sandbox.store.read("Patient", PATIENT)

        banner = window.banner.texts()
        assert banner["name"] == display_name(server_patient)
        assert banner["mrn"] == f"MRN {mrn(server_patient)}"
        assert banner["born"].startswith("Born ") and banner["sex"] in ("Female", "Male")
        assert banner["location"] == "Bed 03, Ward 7A Acute Medicine"
        assert banner["allergies"].startswith("Allergies: ")  # never blank (see lab report tests)
        assert display_name(server_patient) in window.windowTitle()

        # Vitals: one point per round and parameter over the last 24 h, NEWS2 per round.
        vitals = server_resources(sandbox, "Observation", PATIENT,
                                  ("category", codes.CATEGORY_VITAL_SIGNS))
        rounds = {o["effectiveDateTime"] for o in vitals}
        for key in ("hr", "rr", "spo2", "temp", "news2"):
            assert window.vitals.cards[key].trend.points == len(rounds), key
        assert window.vitals.cards["bp"].trend.points == 2 * len(rounds)
        latest_hr = max((o for o in vitals if o["code"]["coding"][0]["code"]
                         == codes.HEART_RATE.code), key=lambda o: o["effectiveDateTime"])
        assert window.vitals.cards["hr"].heading.text().startswith(
            f"Heart rate: {latest_hr['valueQuantity']['value']:g} /min at ")

        # Labs: a group per report, its results in report order with values from the server.
        reports = server_resources(sandbox, "DiagnosticReport")
        assert sorted(window.labs.group_keys()) == sorted(f"DiagnosticReport/{r['id']}"
                                                          for r in reports)
        for report in reports:
            rows = window.labs.row_keys(f"DiagnosticReport/{report['id']}")
            assert rows == [r["reference"] for r in report["result"]]
            for ref in rows:
                obs = sandbox.store.read("Observation", ref.split("/")[1])
                cells = window.labs.row_texts(ref)
                assert float(cells[1]) == obs["valueQuantity"]["value"]
                assert cells[2] == obs["valueQuantity"]["unit"]

        # Problems: active and past by clinical status, immunisations grouped.
        conditions = server_resources(sandbox, "Condition")
        active = {c["code"]["text"] for c in conditions
                  if c["clinicalStatus"]["coding"][0]["code"] == "active"}
        shown_active = {window.problems.row_texts(k)[0]
                        for k in window.problems.row_keys("problems-active")}
        assert shown_active == active
        shown_past = {window.problems.row_texts(k)[0]
                      for k in window.problems.row_keys("problems-past")}
        assert shown_past == {c["code"]["text"] for c in conditions} - active
        immunisations = server_resources(sandbox, "Immunization")
        imm_rows = [k for g in window.problems.group_keys() if g.startswith("immunisations-")
                    for k in window.problems.row_keys(g)]
        assert sorted(imm_rows) == sorted(f"Immunization/{i['id']}" for i in immunisations)

        meds = server_resources(sandbox, "MedicationRequest")
        assert {window.medicines.row_texts(k)[0]
                for k in window.medicines.row_keys("medicines-current")} == {
            m["medicationCodeableConcept"]["text"] for m in meds}
        tasks = server_resources(sandbox, "Task")
        assert sorted(window.tasks.row_keys(GROUP_OPEN_TASKS)) == sorted(
            f"Task/{t['id']}" for t in tasks)
        assert all(not line.shown_text for line in window.status_lines)
        assert window.freshness.text().startswith("Updated ")


async def test_a_new_lab_panel_appears_highlighted_with_a_rendered_event(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        sandbox, workspace = live.sandbox, live.workspace
        window = open_chart(qtbot, live)
        await wait_until(lambda: loaded(window), what="chart loaded")
        await wait_until(lambda: workspace.workstation.status.state.value == "live", what="live")
        vitals_redraws = {k: c.redraws for k, c in window.vitals.cards.items()}
        problem_updates = window.problems.updates

        report, observations = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, LYTES)
        ref = f"DiagnosticReport/{report['id']}"
        await wait_until(lambda: ref in window.labs.group_keys(), what="new report in the chart")
        await wait_until(lambda: len(window.labs.row_keys(ref)) == len(LYTES)
                         and "Result not loaded yet" not in window.labs.row_texts(
                             window.labs.row_keys(ref)[-1]), what="its results")

        assert window.labs.group_keys()[0] == ref  # newest first
        potassium = next(f"Observation/{o['id']}" for o in observations
                         if o["code"]["coding"][0]["code"] == codes.POTASSIUM.code)
        assert window.labs.row_texts(potassium)[1:5] == ("6.8", "mmol/L", "3.5–5.3",
                                                         "HH CRITICAL HIGH")
        assert "CRITICAL RESULT" in window.labs.row_texts(ref)[0]
        assert ref in window.labs.highlighted and potassium in window.labs.highlighted
        shown = rendered_refs(workspace, window.window_id)
        assert shown[ref] == {"1"}
        assert all(shown[f"Observation/{o['id']}"] == {"1"} for o in observations)
        # Only the labs tab repainted.
        assert {k: c.redraws for k, c in window.vitals.cards.items()} == vitals_redraws
        assert window.problems.updates == problem_updates


async def test_new_vitals_redraw_the_trends_and_highlight_the_latest_values(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        sandbox, workspace = live.sandbox, live.workspace
        window = open_chart(qtbot, live)
        await wait_until(lambda: loaded(window), what="chart loaded")
        await wait_until(lambda: workspace.workstation.status.state.value == "live", what="live")
        before = window.vitals.cards["hr"].trend.points
        lab_updates = window.labs.updates
        stored = await sandbox.devices.post_vitals(PATIENT, VitalSigns(
            heart_rate=131, respiratory_rate=27, spo2=90, temperature=38.6, systolic=88,
            diastolic=50, consciousness="V", on_oxygen=True))
        # The round is seven writes; with a short pull debounce it may reach the screen in
        # more than one repaint, so wait until every one of them has been rendered.
        await wait_until(lambda: all(
            rendered_refs(workspace, window.window_id).get(f"Observation/{o['id']}") == {"1"}
            for o in stored), what="the whole round rendered")
        await wait_until(lambda: window.vitals.cards["hr"].trend.points == before + 1
                         and window.vitals.cards["news2"].trend.points == before + 1,
                         what="new round plotted")
        hr = window.vitals.cards["hr"]
        assert hr.heading.text().startswith("Heart rate: 131 /min at ")
        assert hr.highlighted and hr.heading.property("highlighted") == "true"
        assert "high risk" in window.vitals.cards["news2"].heading.text()
        shown = rendered_refs(workspace, window.window_id)
        assert all(shown.get(f"Observation/{o['id']}") == {"1"} for o in stored)
        assert window.labs.updates == lab_updates


async def test_a_task_done_elsewhere_moves_to_done(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        sandbox, workspace = live.sandbox, live.workspace
        window = open_chart(qtbot, live)
        await wait_until(lambda: loaded(window), what="chart loaded")
        await wait_until(lambda: workspace.workstation.status.state.value == "live", what="live")
        task_ref = window.tasks.row_keys(GROUP_OPEN_TASKS)[0]
        task = dict(sandbox.store.read("Task", task_ref.split("/")[1]))
        version = task["meta"]["versionId"]
        task["status"] = "completed"
        # Another workstation completes it (the search never filters on status: the view does).
        await workspace.workstation.fhir.update(task, if_match_version=version)
        await wait_until(lambda: task_ref in window.tasks.row_keys(GROUP_DONE_TASKS),
                         what="task moved to done")
        assert task_ref not in window.tasks.row_keys(GROUP_OPEN_TASKS)
        assert window.tasks.row_texts(task_ref)[3] == "completed"
        assert task_ref in window.tasks.highlighted
        assert rendered_refs(workspace, window.window_id)[task_ref] >= {str(int(version) + 1)}


async def test_failed_loads_say_so_then_recover(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        sandbox = live.sandbox
        sandbox.faults.fail(503, for_s=60)
        window = open_chart(qtbot, live)
        await wait_until(lambda: all(m.shown_text for m in window.messages.values())
                         and window.banner.texts()["name"].startswith("Patient could not"),
                         what="every tab and the banner say what failed")
        assert window.messages["labs"].shown_text == (
            "Lab results could not be loaded: the server had an error — retrying")
        assert window.messages["labs"].severity == "error"
        assert window.messages["vitals"].shown_text.startswith(
            "Vital signs could not be loaded: the server had an error")
        assert window.banner.texts()["name"] == (
            "Patient could not be loaded: the server had an error — retrying")
        assert window.banner.texts()["allergies"].startswith("Allergies: unknown")
        sandbox.faults.clear()
        await wait_until(lambda: loaded(window) and window.labs.group_keys(), timeout_s=15,
                         what="recovered after the retry")
        await wait_until(lambda: not window.messages["labs"].shown_text, what="message cleared")
        server_patient = sandbox.store.read("Patient", PATIENT)
        assert window.banner.texts()["name"] == display_name(server_patient)


async def test_a_slow_fetch_shows_loading_only_after_300_ms(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        sandbox = live.sandbox
        sandbox.faults.slow(delay_s=1.2, for_s=30)
        window = open_chart(qtbot, live)
        await asyncio.sleep(0.15)
        assert window.messages["labs"].shown_text == ""  # no flicker for fast answers
        await wait_until(lambda: window.messages["labs"].shown_text, what="loading message")
        assert window.messages["labs"].shown_text == "Loading lab results…"
        assert window.messages["labs"].severity == "info"
        assert window.banner.texts()["allergies"] == "Allergies: not loaded yet"
        sandbox.faults.clear()
        await wait_until(lambda: window.labs.group_keys(), what="labs loaded")
        await wait_until(lambda: not window.messages["labs"].shown_text, what="message cleared")


async def test_keyboard_shortcuts_accessible_names_and_opening_a_report(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        window = open_chart(qtbot, live)
        await wait_until(lambda: loaded(window) and window.labs.group_keys(), what="loaded")
        window.activateWindow()
        for index in (2, 4, 1, 0):
            QTest.keyClick(window, Qt.Key.Key_1 + index, Qt.KeyboardModifier.ControlModifier)
            assert window.tabs.currentIndex() == index
        # A tab shortcut lands in the tab's content; Tab moves between the tab bar and it.
        QTest.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
        assert QApplication.focusWidget() is window.labs
        QTest.keyClick(window.labs, Qt.Key.Key_Tab)
        assert QApplication.focusWidget() is window.tabs.tabBar()
        QTest.keyClick(window.tabs.tabBar(), Qt.Key.Key_Tab)
        assert QApplication.focusWidget() is window.labs
        for index, (_section, text, name) in enumerate(TABS):
            assert window.tabs.tabText(index) == text and "&" in text  # Alt mnemonic
            assert f"Ctrl+{index + 1}" in window.tabs.tabToolTip(index)
            assert window.pages[_section].accessibleName() == name
        for widget in (window.banner, window.labs, window.problems, window.medicines,
                       window.tasks, window.vitals, *window.banner.labels.values()):
            assert widget.accessibleName(), widget.objectName()
        assert window.banner.accessibleDescription().count(";") >= 5
        for card in window.vitals.cards.values():
            assert card.view.accessibleName().endswith("trend chart")
            assert "readings shown" in card.view.accessibleDescription()

        requested: list[tuple[str, str]] = []
        window.report_requested.connect(lambda rid, pid: requested.append((rid, pid)))
        report_key = window.labs.group_keys()[0]
        result_key = window.labs.row_keys(report_key)[0]
        window.labs.itemActivated.emit(window.labs.item_for(result_key), 0)
        window.labs.itemActivated.emit(window.labs.item_for(report_key), 0)
        report_id = report_key.split("/", 1)[1]
        assert requested == [(report_id, PATIENT), (report_id, PATIENT)]


async def test_closing_the_chart_releases_its_queries(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        workspace = live.workspace
        window = open_chart(qtbot, live)
        await wait_until(lambda: loaded(window), what="chart loaded")
        mine = set(window.open_keys)
        assert len(mine) == 5 and mine <= set(workspace.queries.keys)
        closed: list[str] = []
        window.closed.connect(closed.append)
        window.close()
        assert closed == [window.window_id]
        assert not mine & set(workspace.queries.keys)
