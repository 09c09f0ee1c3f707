"""The lab result detail window against the real sandbox: one report with its results and its
status history read from the server's version history; a correction by the laboratory shows
up in an open detail window and an open chart at once; failures say what failed and retry."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from tests.ui.test_patient_chart_harness import (
    PATIENT,
    LiveChart,
    live_chart,
    rendered_refs,
    wait_until,
)
from wardsync.core import codes
from wardsync.fhir.errors import ServerError
from wardsync.ui.lab_report import LabReportWindow
from wardsync.ui.patient_chart import PatientChartWindow
from wardsync.viewmodels.banner_facts import allergy_text
from wardsync.viewmodels.report_history import read_history
from wardsync.viewmodels.ward_rows import display_name, mrn

REPORT = "dr-03-1"  # the seeded electrolytes panel of pat-03


def open_report(qtbot: QtBot, live: LiveChart, report: str = REPORT) -> LabReportWindow:
    window = LabReportWindow.in_workspace(live.workspace, report, PATIENT)
    live.show(qtbot, window)
    return window


def potassium_ref(window: LabReportWindow) -> str:
    report = window.panel.store.get(window.report_ref)
    return next(r["reference"] for r in report["result"]
                if window.panel.store.get(r["reference"])["code"]["coding"][0]["code"]
                == codes.POTASSIUM.code)


async def test_detail_shows_the_report_its_results_and_its_release(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        window = open_report(qtbot, live)
        await wait_until(lambda: window.history_loads >= 1, what="history read")
        report = live.sandbox.store.read("DiagnosticReport", REPORT)
        header = {k: label.text() for k, label in window.header_labels.items()}
        assert header["panel"] == report["code"]["text"]
        assert header["status"] == "final"
        assert header["accession"] == report["identifier"][0]["value"]
        assert window.results.row_keys() == [r["reference"] for r in report["result"]]
        for ref in window.results.row_keys():
            obs = live.sandbox.store.read("Observation", ref.split("/")[1])
            assert float(window.results.row_texts(ref)[1]) == obs["valueQuantity"]["value"]
        assert [window.history.row_texts(k)[1:] for k in window.history.row_keys()] == [
            ("report v1", "Report released: final")]
        assert window.report_message.shown_text == ""
        # The title names both the report and the patient, whichever was painted last.
        await wait_until(lambda: window.banner.texts()["name"] in window.windowTitle(),
                         what="the patient's name in the title")
        assert "Electrolytes" in window.windowTitle()
        window.render_banner()
        window.render_sections(None)
        assert "Electrolytes" in window.windowTitle()
        assert window.banner.texts()["name"] in window.windowTitle()


async def test_a_correction_appears_in_the_open_detail_window_and_chart(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        detail = open_report(qtbot, live)
        chart = PatientChartWindow.in_workspace(live.workspace, PATIENT)
        live.show(qtbot, chart)
        await wait_until(lambda: detail.history_loads >= 1
                         and f"DiagnosticReport/{REPORT}" in chart.labs.group_keys(),
                         what="both windows loaded")
        await wait_until(lambda: live.workspace.workstation.status.state.value == "live",
                         what="live")
        k_ref = potassium_ref(detail)
        before = detail.results.row_texts(k_ref)[1]

        stored, _ = await live.sandbox.lab.correct_report(
            REPORT, {codes.POTASSIUM.code: 6.9})
        assert stored["meta"]["versionId"] == "2"
        await wait_until(lambda: detail.header_labels["status"].text()
                         == "corrected after release", what="detail shows the correction")
        await wait_until(lambda: chart.labs.row_texts(k_ref)[1] == "6.9", what="chart too")
        assert detail.results.row_texts(k_ref)[1:] == ("6.9", "mmol/L", "3.5–5.3",
                                                       "HH CRITICAL HIGH", "corrected")
        assert k_ref in detail.results.highlighted and k_ref in chart.labs.highlighted
        assert "corrected after release" in chart.labs.row_texts(f"DiagnosticReport/{REPORT}")[0]
        for window in (detail, chart):
            shown = rendered_refs(live.workspace, window.window_id)
            assert "2" in shown[f"DiagnosticReport/{REPORT}"], window.window_id
            assert "2" in shown[k_ref], window.window_id

        await wait_until(lambda: len(detail.history.row_keys()) == 3, what="history re-read")
        changes = [detail.history.row_texts(k)[2] for k in detail.history.row_keys()]
        assert f"Potassium corrected: {before} mmol/L → 6.9 mmol/L HH" in changes
        assert "Report status changed: final → corrected after release" in changes
        assert changes[-1] == "Report released: final"


async def test_the_banner_is_the_same_in_every_window_about_the_patient(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        detail = open_report(qtbot, live)
        chart = PatientChartWindow.in_workspace(live.workspace, PATIENT)
        live.show(qtbot, chart)
        state = live.workspace.queries.state
        await wait_until(lambda: all(state(k).status != "loading" for w in (detail, chart)
                                     for k in w.open_keys), what="both loaded")
        patient = live.sandbox.store.read("Patient", PATIENT)
        assert detail.banner.texts() == chart.banner.texts()
        texts = detail.banner.texts()
        assert texts["name"] == display_name(patient)
        assert texts["mrn"] == f"MRN {mrn(patient)}"
        assert texts["location"] == "Bed 03, Ward 7A Acute Medicine"
        assert all(text.strip() for text in texts.values())
        # The allergies line says exactly what the server holds for this patient.
        assert state(detail.allergies_key).status == "ok"
        held = live.sandbox.store.search(
            "AllergyIntolerance", [("patient", f"Patient/{PATIENT}")]).matches
        assert held, "the seed records an allergy statement for every patient"
        assert texts["allergies"] == allergy_text(held, "ok")[0]
        assert texts["allergies"] != "Allergies: not loaded yet"
        assert detail.banner.property("highlighted") is None


async def test_history_read_failures_are_shown_and_retried(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        window = open_report(qtbot, live)
        await wait_until(lambda: window.history_loads >= 1, what="history read")
        live.sandbox.faults.fail(503, for_s=60)
        window.request_history()
        await wait_until(lambda: window.history_message.shown_text, what="error shown")
        assert window.history_message.shown_text == (
            "Status history could not be loaded: the server had an error — retrying in 1 s")
        assert window.history_message.severity == "error"
        assert window.history.row_keys(), "the history read before stays on screen"
        live.sandbox.faults.clear()
        await wait_until(lambda: window.history_loads >= 2, timeout_s=5, what="retried")
        assert window.history_message.shown_text == ""


async def test_a_report_that_cannot_be_loaded_or_does_not_exist_says_so(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        live.sandbox.faults.fail(503, for_s=60)
        failing = open_report(qtbot, live)
        await wait_until(lambda: failing.report_message.shown_text, what="error shown")
        assert failing.report_message.shown_text == (
            "Lab result could not be loaded: the server had an error — retrying")
        assert failing.results.row_keys() == []
        live.sandbox.faults.clear()
        await wait_until(lambda: failing.results.row_keys(), timeout_s=10, what="recovered")
        assert failing.report_message.shown_text == ""

        missing = open_report(qtbot, live, "no-such-report")
        await wait_until(lambda: missing.report_message.shown_text, what="not found")
        assert missing.report_message.shown_text.startswith(
            "This lab report was not found on the server")
        assert missing.history_loads == 0

        # A report of another patient is never shown under this patient's banner.
        other = open_report(qtbot, live, "dr-04-1")
        await wait_until(lambda: other.report_message.shown_text, what="refused")
        assert other.report_message.shown_text.startswith(
            "This lab report is about another patient")
        assert other.results.row_keys() == [] and other.history_loads == 0
        assert other.header_labels["panel"].text() == "—"


async def test_open_chart_button_and_shortcut_ask_for_the_patient_chart(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        window = open_report(qtbot, live)
        await wait_until(lambda: window.results.row_keys(), what="loaded")
        requested: list[str] = []
        window.patient_requested.connect(requested.append)
        QTest.mouseClick(window.open_chart_button, Qt.MouseButton.LeftButton)
        QTest.keyClick(window, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier
                       | Qt.KeyboardModifier.ShiftModifier)
        assert requested == [PATIENT, PATIENT]
        assert window.open_chart_button.accessibleName() == "Open this patient's chart"
        for widget in (window.results, window.history, *window.header_labels.values()):
            assert widget.accessibleName()


async def test_closing_during_a_history_read_leaves_nothing_running(
        qtbot: QtBot, seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        window = open_report(qtbot, live)
        await wait_until(lambda: window.history_loads >= 1, what="history read")
        live.sandbox.faults.slow(delay_s=5, for_s=30)
        window.request_history()
        await asyncio.sleep(0.1)
        task = window._history_task
        assert task is not None and not task.done()
        window.close()
        await window.wait_closed()
        assert task.cancelled()
        assert window.history_loads == 1
        live.sandbox.faults.clear()


async def test_read_history_returns_every_version_oldest_first(
        seeded_data_dir: Path, tmp_path: Path) -> None:
    async with live_chart(seeded_data_dir, tmp_path) as live:
        fhir = live.workspace.workstation.fhir
        assert [v["meta"]["versionId"] for v in
                await read_history(fhir, f"DiagnosticReport/{REPORT}")] == ["1"]
        await live.sandbox.lab.correct_report(REPORT, {codes.SODIUM.code: 150})
        versions = await read_history(fhir, f"DiagnosticReport/{REPORT}")
        assert [(v["meta"]["versionId"], v["status"]) for v in versions] == [
            ("1", "final"), ("2", "corrected")]
        live.sandbox.faults.fail(503, for_s=10)
        try:
            await read_history(fhir, f"DiagnosticReport/{REPORT}")
        except ServerError as exc:
            assert exc.status == 503
        else:
            raise AssertionError("a failed history read must raise")
        finally:
            live.sandbox.faults.clear()
        for bad in ("DiagnosticReport", "DiagnosticReport/", "a/b/c"):
            try:
                await read_history(fhir, bad)
            except ValueError:
                continue
            raise AssertionError(f"{bad!r} accepted")
