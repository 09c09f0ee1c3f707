"""Trend charts in the high-contrast theme: every value-axis label has the room Qt Charts needs
to draw it (too many ticks for a short chart drew every label as "…" and dropped some)."""

from __future__ import annotations

from PySide6.QtGui import QFontMetricsF
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from wardsync.ui.chart_widgets.vital_trends import VitalTrendsPanel
from wardsync.ui.stylesheets import load_stylesheet
from wardsync.viewmodels.axis_ticks import LABEL_SPACING
from wardsync.viewmodels.vital_series import TRENDS_BY_KEY, Trend, VitalTrends

HOUR_MS = 3_600_000


def test_value_axis_labels_fit_a_short_chart_in_high_contrast(qtbot: QtBot) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    old = app.styleSheet()
    try:
        app.setStyleSheet(load_stylesheet("high-contrast"))
        panel = VitalTrendsPanel()
        qtbot.addWidget(panel)
        start = 1_765_000_000_000 // HOUR_MS * HOUR_MS
        trends = {}
        for key, spec in TRENDS_BY_KEY.items():
            low, high = spec.y_range
            series = tuple(tuple((start + h * HOUR_MS, low + (high - low) * (h + i) / 30)
                                 for h in range(24)) for i, _ in enumerate(spec.series))
            trends[key] = Trend(spec, series, "", start + 23 * HOUR_MS)
        panel.resize(1060, 560)  # the vitals tab of a patient window at 1100 px
        panel.show()
        qtbot.waitExposed(panel)
        panel.show_trends(VitalTrends(trends, {}, start, start + 23 * HOUR_MS))
        qtbot.wait(100)
        for key, card in panel.cards.items():
            axis = card.y_axis
            label_px = QFontMetricsF(axis.labelsFont()).height()
            interval = card.chart.plotArea().height() / (axis.tickCount() - 1)
            assert interval >= label_px * LABEL_SPACING, (key, axis.tickCount(), interval)
            assert axis.tickCount() >= 2
            lo, hi = TRENDS_BY_KEY[key].y_range
            assert axis.min() <= lo and axis.max() >= hi  # the usual range stays in view
    finally:
        app.setStyleSheet(old)
