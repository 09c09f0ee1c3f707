"""Sizing table and tree columns to their contents once per refresh.

Never `QHeaderView.ResizeToContents` on a view whose cells change often: in that mode Qt
measures the whole column again for every cell that changes, so a refresh that rewrites
hundreds of cells costs hundreds of full measurements (seconds on the GUI thread; found by
the soak and alert benchmarks). Views use `Interactive` (or `Stretch` for the column that takes
the spare width) and call `fit_columns` after a refresh that changed something.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QHeaderView


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
