"""Sizing table and tree columns to their contents once per refresh.

Never `QHeaderView.ResizeToContents` on a view whose cells change often: in that mode Qt
measures the whole column again for every cell that changes, so a refresh that rewrites
hundreds of cells costs hundreds of full measurements (seconds on the GUI thread; found by
the soak and alert benchmarks). Views use `Interactive` (or `Stretch` for the column that takes
the spare width) and call `fit_columns` after a refresh that changed something.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QFont, QFontMetricsF
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QStyle, QTableView


def fit_columns(header: QHeaderView, resize: Callable[[int], None]) -> None:
    """Fit every column that does not take the spare width (Stretch, or the last one when the
    header stretches it) with `resize` (the view's `resizeColumnToContents`), once each."""
    last = header.count() - 1
    for column in range(header.count()):
        if header.sectionResizeMode(column) == QHeaderView.ResizeMode.Stretch:
            continue
        if column == last and header.stretchLastSection():
            continue
        resize(column)


def drawn_text_width(view: QAbstractItemView, index: QModelIndex) -> int:
    """The width a cell needs for its text to be drawn whole: the text's advance, rounded up,
    plus the delegate's margin on each side (QStyledItemDelegate draws in the cell rect less
    PM_FocusFrameHMargin + 1 per side and elides what does not fit), plus one pixel against
    sub-pixel rounding. `sizeHintForIndex` can be a pixel short of this, which elides."""
    text = index.data(Qt.ItemDataRole.DisplayRole)
    if text is None or text == "":
        return 0
    font = index.data(Qt.ItemDataRole.FontRole)
    metrics = QFontMetricsF(font if isinstance(font, QFont) else view.font())
    margin = view.style().pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view) + 1
    return math.ceil(metrics.horizontalAdvance(str(text))) + 2 * margin + 1


def cell_width(view: QAbstractItemView, index: QModelIndex) -> int:
    return max(view.sizeHintForIndex(index).width(), drawn_text_width(view, index))


def widen_to_fit(view: QAbstractItemView, top: int, bottom: int, columns: range) -> list[int]:
    """Widen the columns whose changed cells (rows `top`..`bottom`) no longer fit, measuring
    only those cells (`sizeHintForIndex`, what `resizeColumnToContents` measures per cell), so
    a poke that rewrites one row costs one row of measurements, never a whole column. Columns
    that take the spare width are left alone; returns the columns widened."""
    header = view.horizontalHeader() if isinstance(view, QTableView) else None
    if header is None:
        return []
    model = view.model()
    last = header.count() - 1
    widened: list[int] = []
    for column in columns:
        if header.isSectionHidden(column):
            continue
        if header.sectionResizeMode(column) == QHeaderView.ResizeMode.Stretch or (
                column == last and header.stretchLastSection()):
            continue
        need = max((cell_width(view, model.index(row, column))
                    for row in range(top, bottom + 1)), default=0)
        if need > header.sectionSize(column):
            header.resizeSection(column, need)
            widened.append(column)
    return widened
