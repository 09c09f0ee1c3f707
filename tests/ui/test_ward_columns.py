"""Ward overview: the patient's name, NEWS2 and BP are never truncated at 1100 px, changed
cells widen their column without re-measuring the ward, and a selected row keeps its band
colour."""

from __future__ import annotations

import dataclasses
import math

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFontMetricsF
from PySide6.QtWidgets import QStyle
from pytestqt.qtbot import QtBot

from tests.waiting import wait_for
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.news2 import News2, Parameter, RiskBand
from wardsync.infra.settings import Settings
from wardsync.sandbox.ward.names import SYNTHETIC_FAMILY_NAMES, SYNTHETIC_GIVEN_NAMES
from wardsync.ui.app import AppController
from wardsync.ui.ward_overview import (
    BAND_COLOURS,
    BP_COLUMN,
    NEVER_TRUNCATED,
    NEWS2_COLUMN,
    WardOverviewWindow,
)

LONGEST_FAMILY = max(SYNTHETIC_FAMILY_NAMES, key=len).upper()
LONGEST_GIVEN = max(SYNTHETIC_GIVEN_NAMES, key=len)
LONGEST_NAME = f"{LONGEST_FAMILY}, {LONGEST_GIVEN}"
HIGH_NEWS2 = News2(scores={p: 3 for p in Parameter if p != Parameter.AIR_OR_OXYGEN}
                   | {Parameter.AIR_OR_OXYGEN: 2}, missing=())


def _truncated_cells(ward: WardOverviewWindow) -> list[str]:
    """Cells of the never-truncated columns whose drawn text is wider than the room the cell
    gives it, or that lie outside the visible part of the table."""
    table = ward.table
    fm = QFontMetricsF(table.font())
    # QStyledItemDelegate's text margin: PM_FocusFrameHMargin + 1 on each side (qcommonstyle).
    margin = 2 * (table.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin,
                                            None, table) + 1)
    bad: list[str] = []
    for row in range(ward.model.rowCount()):
        for col in NEVER_TRUNCATED:
            index = ward.model.index(row, col)
            text = str(index.data())
            rect = table.visualRect(index)
            need = math.ceil(fm.horizontalAdvance(text)) + margin
            if need > rect.width():
                bad.append(f"row {row} col {col}: {text!r} needs {need} px, has {rect.width()}")
            if rect.right() > table.viewport().width():
                bad.append(f"row {row} col {col}: beyond the visible width")
    return bad


async def test_identity_and_risk_cells_never_truncate_at_1100_px(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    try:
        ward = controller.open_ward_overview()
        qtbot.addWidget(ward)
        ward.resize(1100, 700)
        ward.show()
        await wait_for(lambda: len(ward.model.rows) == 24
                       and all(r.news2 is not None for r in ward.model.rows),
                       what="the ward with its vitals")
        assert ward.width() == 1100
        assert _truncated_cells(ward) == []
        # Data changes (not a rebuild) bring the longest synthetic name, a high NEWS2 and a
        # wide BP: their columns widen, nothing is cut.
        rows = {}
        for i, r in enumerate(ward.model.rows[:4]):
            rows[r.patient_ref] = dataclasses.replace(
                r, name=LONGEST_NAME, systolic=288.0 + i, diastolic=188.0,
                news2=HIGH_NEWS2)
        ward.model.update_rows(rows)
        assert [ward.model.index(i, 1).data() for i in range(4)] == [LONGEST_NAME] * 4
        assert ward.model.index(0, NEWS2_COLUMN).data() == "20 HIGH"
        assert ward.model.index(0, BP_COLUMN).data() == "288/188"
        assert _truncated_cells(ward) == []

        # The selected row keeps its band colour in the NEWS2 cell (a selection frame instead).
        ward.table.selectRow(0)
        ward.table.viewport().repaint()
        image = ward.table.viewport().grab().toImage()
        rect = ward.table.visualRect(ward.model.index(0, NEWS2_COLUMN))
        inside = image.pixelColor(rect.left() + 4, rect.center().y())
        assert inside == QColor(BAND_COLOURS[RiskBand.HIGH]), inside.name()
    finally:
        await controller.aclose()


async def test_tab_leaves_the_ward_table_without_moving_the_selection(
    qtbot: QtBot, settings: Settings, metrics: MemoryMetrics
) -> None:
    controller = AppController(settings, metrics, demo=True)
    await controller.start()
    try:
        ward = controller.open_ward_overview()
        qtbot.addWidget(ward)
        await wait_for(lambda: len(ward.model.rows) == 24, what="the ward")
        selected: list[str] = []
        ward.patient_selected.connect(selected.append)
        ward.table.setFocus()
        ward.table.setCurrentIndex(ward.model.index(0, 0))
        first = list(selected)
        for _ in range(len(ward.model.rows) * 2):
            qtbot.keyClick(ward.table, Qt.Key.Key_Tab)
        assert ward.table.currentIndex().row() == 0
        assert selected == first  # no linked chart was told to switch patient
        assert not ward.table.tabKeyNavigation()
    finally:
        await controller.aclose()
