"""Vital-sign trend charts (QtCharts): heart rate, respiratory rate, SpO₂, temperature, blood
pressure and the NEWS2 total, over the same time axis.

Each chart sits in a `VitalTrendCard` with a heading that states the latest value in words
(so the numbers are readable without the chart, by screen readers and in print). A card
redraws only when its own data changed; its heading is highlighted for a few seconds when a
new reading arrives. Colours are Qt properties set by the .qss themes; sizes follow the
font, never fixed pixels, so the charts scale on high-DPI screens.
"""

from __future__ import annotations

from PySide6.QtCharts import QChart, QChartView, QDateTimeAxis, QLineSeries, QValueAxis
from PySide6.QtCore import QDateTime, QMargins, QPointF, QRectF, Qt, QTimer
from PySide6.QtGui import QBrush, QColor, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QVBoxLayout, QWidget

from wardsync.ui.chart_widgets.grouped_table import HIGHLIGHT_S
from wardsync.ui.chart_widgets.theme_colours import colour_property
from wardsync.viewmodels.axis_ticks import fitting_ticks, max_ticks
from wardsync.viewmodels.vital_series import TRENDS, Trend, TrendSpec, VitalTrends, format_clock

NEWS2_THRESHOLDS = ((5.0, "NEWS2 5: urgent response threshold"),
                    (7.0, "NEWS2 7: emergency response threshold"))
CHART_HEIGHT_LINES = 11  # chart height in lines of text, so it scales with the font
TIME_AXIS_TICKS = 5
HOUR_MS = 3_600_000.0
TICK_STEPS_H = (1, 2, 3, 4, 5, 6, 8, 12, 24)
MAX_TIME_TICKS = 9
PREFERRED_TIME_TICKS = 7


def _points(series: tuple[tuple[float, float], ...]) -> list[QPointF]:
    return [QPointF(t, v) for t, v in series]


def time_axis(start_ms: float, end_ms: float) -> tuple[float, float, int]:
    """(low, high, tick count) of a time axis with ticks on whole hours.

    The step (hours between ticks) wastes the least axis length, then gives a tick count
    closest to `PREFERRED_TIME_TICKS`; any slack goes to the older (left) end so the latest
    reading stays at the right edge.
    """
    hour = HOUR_MS
    hi = -(-end_ms // hour) * hour
    hours = max(1, int(-(-(hi - start_ms) // hour)))
    best = min(
        (((-(-hours // step)) * step - hours, abs(-(-hours // step) - PREFERRED_TIME_TICKS + 1),
          step) for step in TICK_STEPS_H if -(-hours // step) <= MAX_TIME_TICKS - 1),
        default=(0, 0, TICK_STEPS_H[-1]),
    )
    step = best[2]
    intervals = -(-hours // step)
    return hi - intervals * step * hour, hi, intervals + 1


class VitalTrendCard(QFrame):
    """One vital sign: a heading with the latest value, and its trend chart."""

    def __init__(self, spec: TrendSpec, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.setObjectName(f"trend-{spec.key}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.heading = QLabel(self)
        self.heading.setObjectName("trendHeading")
        self.heading.setTextFormat(Qt.TextFormat.PlainText)
        self.chart = QChart()
        self.chart.setAnimationOptions(QChart.AnimationOption.NoAnimation)
        self.chart.setMargins(QMargins(2, 2, 2, 2))
        self.chart.setBackgroundRoundness(0)
        self.chart.legend().setVisible(len(spec.series) > 1)
        self.chart.legend().setAlignment(Qt.AlignmentFlag.AlignTop)
        self.x_axis = QDateTimeAxis()
        self.x_axis.setFormat("HH:mm")
        self.x_axis.setTickCount(TIME_AXIS_TICKS)
        self.y_axis = QValueAxis()
        self.y_axis.setLabelFormat("%g")
        self.chart.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        self.chart.addAxis(self.y_axis, Qt.AlignmentFlag.AlignLeft)
        self.series: list[QLineSeries] = []
        for name in spec.series:
            line = QLineSeries()
            line.setName(name)
            line.setPointsVisible(True)
            self.chart.addSeries(line)
            line.attachAxis(self.x_axis)
            line.attachAxis(self.y_axis)
            self.series.append(line)
        self.thresholds: list[QLineSeries] = []
        if spec.key == "news2":
            for _value, name in NEWS2_THRESHOLDS:
                line = QLineSeries()
                line.setName(name)
                self.chart.addSeries(line)
                line.attachAxis(self.x_axis)
                line.attachAxis(self.y_axis)
                self.thresholds.append(line)
            for marker in self.chart.legend().markers():
                marker.setVisible(False)
        self.view = QChartView(self.chart, self)
        self.view.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.view.setMinimumHeight(self.fontMetrics().height() * CHART_HEIGHT_LINES)
        self.view.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # reachable by Tab, read aloud
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.heading)
        layout.addWidget(self.view, 1)
        self.trend: Trend | None = None
        self._y_wanted: tuple[float, float] | None = None  # the range before rounding
        self._fitted_height = -1.0  # the plot height the y ticks were fitted to
        self._fitting = False
        self.chart.plotAreaChanged.connect(self._on_chart_plot_area_changed)
        self.redraws = 0
        self.highlighted = False
        self._highlight_timer = QTimer(self)
        self._highlight_timer.setSingleShot(True)
        self._highlight_timer.timeout.connect(self._on_highlight_timer_timeout)
        self._colours = {
            "plotBackground": QColor("#ffffff"), "textColour": QColor("#1f2328"),
            "gridColour": QColor("#d8dde5"), "lineColour": QColor("#1f5fbf"),
            "secondLineColour": QColor("#b3261e"), "thresholdColour": QColor("#a14d00"),
        }
        self._apply_colours()
        self._set_heading(None)

    # ------------------------------------------------------------------ theme properties
    def _set_colour(self, name: str, colour: QColor) -> None:
        self._colours[name] = QColor(colour)
        self._apply_colours()

    plotBackground = colour_property("plotBackground")
    textColour = colour_property("textColour")
    gridColour = colour_property("gridColour")
    lineColour = colour_property("lineColour")
    secondLineColour = colour_property("secondLineColour")
    thresholdColour = colour_property("thresholdColour")

    def _apply_colours(self) -> None:
        c = self._colours
        self.chart.setBackgroundBrush(QBrush(c["plotBackground"]))
        self.view.setBackgroundBrush(QBrush(c["plotBackground"]))  # around the chart, too
        self.chart.setPlotAreaBackgroundBrush(QBrush(c["plotBackground"]))
        self.chart.setPlotAreaBackgroundVisible(True)
        self.chart.legend().setLabelColor(c["textColour"])
        for axis in (self.x_axis, self.y_axis):
            axis.setLabelsColor(c["textColour"])
            axis.setGridLineColor(c["gridColour"])
            axis.setLinePenColor(c["textColour"])
        width = max(2.0, self.logicalDpiX() / 48.0)  # ~2 px at 96 dpi, thicker on high DPI
        for line, colour in zip(self.series, (c["lineColour"], c["secondLineColour"]),
                                strict=False):
            pen = QPen(colour)
            pen.setWidthF(width)
            line.setPen(pen)
            line.setColor(colour)
        for line in self.thresholds:
            pen = QPen(c["thresholdColour"])
            pen.setStyle(Qt.PenStyle.DashLine)
            pen.setWidthF(width / 2)
            line.setPen(pen)

    # ------------------------------------------------------------------ data
    def _set_heading(self, trend: Trend | None) -> None:
        spec = self.spec
        if trend is None or not trend.latest:
            text = f"{spec.title}: no readings in the last 24 h"
        else:
            text = f"{spec.title}: {trend.latest} at {format_clock(trend.latest_at_ms)}"
        self.heading.setText(text)
        self.view.setAccessibleName(f"{spec.title} trend chart")
        readings = trend.points if trend else 0
        self.view.setAccessibleDescription(f"{text}; {readings} readings shown")
        self.setAccessibleName(text)

    def show_trend(self, trend: Trend, start_ms: float | None, end_ms: float | None) -> bool:
        """Redraw if `trend` differs from what is shown; True if it did."""
        if trend == self.trend:
            self._set_range(trend, start_ms, end_ms)
            return False
        first = self.trend is None or not self.trend.points
        new_reading = self.trend is not None and trend.latest_at_ms != self.trend.latest_at_ms
        self.trend = trend
        for line, data in zip(self.series, trend.series, strict=False):
            line.replace(_points(data))
        self._set_range(trend, start_ms, end_ms)
        self._set_heading(trend)
        self.redraws += 1
        if new_reading and not first:
            self._highlight()
        return True

    def _set_range(self, trend: Trend, start_ms: float | None, end_ms: float | None) -> None:
        if start_ms is None or end_ms is None:
            return
        lo_t, hi_t, ticks = time_axis(start_ms, end_ms)
        self.x_axis.setRange(QDateTime.fromMSecsSinceEpoch(int(lo_t)),
                             QDateTime.fromMSecsSinceEpoch(int(hi_t)))
        self.x_axis.setTickCount(ticks)
        low, high = self.spec.y_range
        values = [v for s in trend.series for _, v in s]
        if values:  # the usual range, widened (never below zero) to fit unusual values
            low = max(0.0, min(low, min(values) - 2))
            high = max(high, max(values) + 2)
        self._y_wanted = (low, high)
        self._fit_y_ticks()
        for line, (value, _name) in zip(self.thresholds, NEWS2_THRESHOLDS, strict=False):
            line.replace([QPointF(lo_t, value), QPointF(hi_t, value)])

    def _fit_y_ticks(self) -> None:
        """Round ticks, no more than the plot's height holds: Qt Charts elides every label to
        "…" when too many are asked for (viewmodels/axis_ticks.py)."""
        if self._y_wanted is None:
            return
        low, high = self._y_wanted
        height = self.chart.plotArea().height() or self.view.height() * 0.6
        self._fitted_height = self.chart.plotArea().height()
        most = max_ticks(height, QFontMetricsF(self.y_axis.labelsFont()).height())
        lo, hi, ticks = fitting_ticks(low, high, most)
        if (self.y_axis.min(), self.y_axis.max()) != (lo, hi):
            self.y_axis.setRange(lo, hi)
        if self.y_axis.tickCount() != ticks:
            self.y_axis.setTickCount(ticks)

    def _on_chart_plot_area_changed(self, area: QRectF) -> None:
        # Only a new height changes what fits; new ticks change the labels' width, and with
        # it the plot area, synchronously (so width changes are not followed, no recursion).
        if self._y_wanted is not None and area.height() != self._fitted_height \
                and not self._fitting:
            self._fitting = True  # a height change from our own ticks is not followed
            try:
                self._fit_y_ticks()
            finally:
                self._fitting = False

    def _highlight(self) -> None:
        self.highlighted = True
        self.heading.setProperty("highlighted", "true")
        self.heading.style().unpolish(self.heading)
        self.heading.style().polish(self.heading)
        self._highlight_timer.start(int(HIGHLIGHT_S * 1000))

    def _on_highlight_timer_timeout(self) -> None:
        self.highlighted = False
        self.heading.setProperty("highlighted", "false")
        self.heading.style().unpolish(self.heading)
        self.heading.style().polish(self.heading)


class VitalTrendsPanel(QWidget):
    """The six trend cards in a grid, sharing one time range."""

    COLUMNS = 2

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("vitalTrends")
        self.setAccessibleName("Vital sign trends")
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.cards: dict[str, VitalTrendCard] = {}
        for i, spec in enumerate(TRENDS):
            card = VitalTrendCard(spec, self)
            self.cards[spec.key] = card
            grid.addWidget(card, i // self.COLUMNS, i % self.COLUMNS)
        self.data: VitalTrends | None = None

    def show_trends(self, data: VitalTrends) -> set[str]:
        """Show `data`; returns the keys of the charts that were redrawn."""
        self.data = data
        return {key for key, card in self.cards.items()
                if card.show_trend(data.trends[key], data.start_ms, data.end_ms)}

    @property
    def has_readings(self) -> bool:
        return bool(self.data and any(t.points for t in self.data.trends.values()))
