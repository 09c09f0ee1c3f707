"""Records when a widget starts painting (the app side's only Qt-specific instrument)."""

from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QObject


class PaintProbe(QObject):
    """Event filter: appends `time.monotonic_ns()` for every Paint event of its target."""

    def __init__(self, sink: list[int], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sink = sink

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self._sink.append(time.monotonic_ns())
        return False  # observe only: the widget paints as usual
