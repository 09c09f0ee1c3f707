"""The chart's widgets on their own: the grouped table updates line by line (items kept,
moved, removed, changed ones highlighted), trend cards redraw only on new data, the banner
highlights what changed and the theme colours reach the widgets through the .qss."""

from __future__ import annotations

from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from wardsync.core.bus import EventBus
from wardsync.core.store import ResourceStore
from wardsync.sync.alerts import Clinician
from wardsync.sync.edits import new_nursing_note
from wardsync.ui.chart_widgets.grouped_table import GroupedTable
from wardsync.ui.chart_widgets.vital_trends import VitalTrendCard, VitalTrendsPanel, time_axis
from wardsync.ui.nursing_note import NursingNotesPanel
from wardsync.ui.patient_banner import PatientBanner
from wardsync.ui.stylesheets import load_stylesheet
from wardsync.viewmodels.banner_facts import BannerFacts
from wardsync.viewmodels.table_rows import Group, Row
from wardsync.viewmodels.vital_series import TRENDS_BY_KEY, Trend, VitalTrends

HOUR_MS = 3_600_000


def row(key: str, value: str, version: str = "1", level: str = "") -> Row:
    return Row(key, (key.split("/")[-1], value), version, level)  # type: ignore[arg-type]


def test_grouped_table_updates_lines_in_place_and_highlights_changes(qtbot: QtBot) -> None:
    table = GroupedTable(("Test", "Value"), object_name="t", accessible_name="Test table")
    qtbot.addWidget(table)
    first = [Group("DiagnosticReport/a", "Panel A", (row("Observation/1", "4.1"),
                                                     row("Observation/2", "139")), "1"),
             Group("DiagnosticReport/b", "Panel B", (row("Observation/3", "7"),), "1")]
    table.set_groups(first)
    assert table.group_keys() == ["DiagnosticReport/a", "DiagnosticReport/b"]
    assert table.highlighted == set()  # the first fill is not news
    kept = table.item_for("Observation/2")

    changed = table.set_groups([
        Group("DiagnosticReport/c", "Panel C", (row("Observation/4", "1.2"),), "1"),
        Group("DiagnosticReport/a", "Panel A (corrected)",
              (row("Observation/1", "6.9", "2", "critical"), row("Observation/2", "139")), "2"),
    ])
    assert table.group_keys() == ["DiagnosticReport/c", "DiagnosticReport/a"]
    assert table.item_for("Observation/2") is kept  # untouched line: same item
    assert table.row_texts("Observation/1") == ("1", "6.9")
    assert table.item_for("Observation/3") is None  # removed with its group
    assert {"DiagnosticReport/c", "Observation/4", "Observation/1",
            "DiagnosticReport/a", "DiagnosticReport/b", "Observation/3"} == changed
    assert table.highlighted == {"DiagnosticReport/c", "Observation/4", "Observation/1",
                                 "DiagnosticReport/a"}
    item = table.item_for("Observation/1")
    assert item.background(0).color() == table.highlightBackground

    # A line moving to another group keeps its key and is shown under the new group.
    table.set_groups([Group("open", "Open", ()),
                      Group("done", "Done", (row("Task/t1", "completed", "2"),))])
    table.set_groups([Group("open", "Open", (row("Task/t1", "requested", "3"),)),
                      Group("done", "Done", ())])
    assert table.row_keys("open") == ["Task/t1"] and table.row_keys("done") == []


def test_critical_lines_use_the_theme_colours_once_the_highlight_fades(qtbot: QtBot) -> None:
    table = GroupedTable(("Test", "Value"), object_name="t", accessible_name="t", flat=True)
    qtbot.addWidget(table)
    table.set_rows([row("Observation/1", "6.9", level="critical")])
    item = table.item_for("Observation/1")
    assert item.background(0).color() == table.criticalBackground
    app = QApplication.instance()
    old = app.styleSheet()
    try:
        app.setStyleSheet(load_stylesheet("high-contrast"))
        table.show()
        qtbot.waitUntil(lambda: table.criticalBackground.name() == "#ff0000")
        assert item.background(0).color().name() == "#ff0000"
    finally:
        app.setStyleSheet(old)


def test_trend_cards_redraw_only_when_their_data_changes(qtbot: QtBot) -> None:
    panel = VitalTrendsPanel()
    qtbot.addWidget(panel)

    def trends(hr_points: tuple[tuple[float, float], ...]) -> VitalTrends:
        out = {key: Trend(spec, tuple(() for _ in spec.series))
               for key, spec in TRENDS_BY_KEY.items()}
        out["hr"] = Trend(TRENDS_BY_KEY["hr"], (hr_points,), f"{hr_points[-1][1]:g} /min",
                          hr_points[-1][0])
        return VitalTrends(out, {}, hr_points[0][0], hr_points[-1][0])

    one = ((10 * HOUR_MS, 80.0),)
    assert panel.show_trends(trends(one)) == set(TRENDS_BY_KEY)  # first draw: every card
    assert panel.show_trends(trends(one)) == set()
    assert panel.show_trends(trends((*one, (11 * HOUR_MS, 95.0)))) == {"hr"}
    card = panel.cards["hr"]
    assert card.series[0].count() == 2 and card.highlighted
    assert card.heading.text().startswith("Heart rate: 95 /min at ")
    assert panel.cards["rr"].heading.text() == "Respiratory rate: no readings in the last 24 h"


def test_trend_colours_come_from_the_theme(qtbot: QtBot) -> None:
    card = VitalTrendCard(TRENDS_BY_KEY["bp"])
    qtbot.addWidget(card)
    app = QApplication.instance()
    old = app.styleSheet()
    try:
        app.setStyleSheet(load_stylesheet("high-contrast"))
        card.show()
        qtbot.waitUntil(lambda: card.plotBackground.name() == "#000000")
        assert card.chart.backgroundBrush().color().name() == "#000000"
        assert card.series[0].pen().color().name() == "#00ffff"
        assert card.series[1].pen().color().name() == "#ffff00"
    finally:
        app.setStyleSheet(old)


def test_time_axis_ticks_fall_on_whole_hours_with_the_latest_reading_at_the_right() -> None:
    low, high, ticks = time_axis(21.6 * HOUR_MS, 45.6 * HOUR_MS)
    assert high == 46 * HOUR_MS and low <= 21.6 * HOUR_MS
    step = (high - low) / (ticks - 1)
    assert step % HOUR_MS == 0 and 4 <= ticks <= 9
    assert time_axis(5 * HOUR_MS, 5 * HOUR_MS)[2] >= 2


def test_banner_highlights_only_fields_that_changed_after_the_first_fill(
        qtbot: QtBot) -> None:
    banner = PatientBanner()
    qtbot.addWidget(banner)
    facts = BannerFacts("ZZSAMPLE, Alpha", "Born 12-Mar-1948 (78y)", "Female", "SYN1",
                        "Bed 07, Ward X", "Allergies: none recorded", "none",
                        {"Patient/p1": "1"})
    assert banner.show_facts(facts) == {"name", "born", "sex", "mrn", "location", "allergies"}
    assert banner.highlighted == set()
    moved = BannerFacts(*(getattr(facts, f) for f in ("name", "born", "sex", "mrn")),
                        "Bed 12, Ward X", facts.allergies, "none", {"Patient/p1": "1"})
    assert banner.show_facts(moved) == {"location"}
    assert banner.highlighted == {"location"}
    assert banner.labels["location"].property("highlighted") == "true"
    assert banner.texts()["mrn"] == "MRN SYN1"


def test_nursing_notes_panel_lists_notes_and_still_paints_like_any_widget(qtbot: QtBot) -> None:
    store = ResourceStore(EventBus())
    note = new_nursing_note("p1", "Comfortable overnight.",
                            Clinician("Practitioner/n1", "Nurse Example"), 1_767_225_600.0)
    store.apply([{**note, "id": "n1", "meta": {"versionId": "3"}}])
    panel = NursingNotesPanel(store=store, patient_id="p1", subscribe=lambda *_: None,
                              edits=None, presence=None)
    qtbot.addWidget(panel)
    assert panel.render_notes() == {"Observation/n1": "3"}
    assert panel.table.row_texts("Observation/n1")[1:3] == ("Nurse Example",
                                                           "Comfortable overnight.")
    # Listing the notes has its own name: QWidget.render (paint into a device) is not hidden.
    panel.resize(400, 200)
    pixmap = QPixmap(panel.size())
    panel.render(pixmap)
    assert not pixmap.isNull()
