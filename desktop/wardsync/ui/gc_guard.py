"""Python's cyclic garbage collector runs on the GUI thread only.

The collector normally runs in whichever thread happens to allocate past its threshold. The
app validates large FHIR bundles in worker threads, so a closed window caught in a reference
cycle could be destroyed there — Qt objects must be deleted on their own thread, and doing it
elsewhere crashes ("Timers cannot be stopped from another thread", then a segfault). The guard
turns automatic collection off and collects from a GUI-thread timer with the same generation
thresholds, so collections happen as often as before, only in the right place.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

CHECK_INTERVAL_MS = 200


class MainThreadGarbageCollector(QObject):
    """`MainThreadGarbageCollector(app).start()`; `stop()` restores automatic collection."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = CHECK_INTERVAL_MS):
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._was_enabled = gc.isenabled()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_timer_timeout)
        self.collections = [0, 0, 0]

    def start(self) -> None:
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        if self._was_enabled:
            gc.enable()

    def freeze_startup_objects(self) -> int:
        """After start-up (modules, windows, the first load of the ward): move every live
        object to the permanent generation so later full collections — which stall the GUI
        for tens of milliseconds per pass over a big heap — only walk what came later."""
        gc.collect()
        gc.freeze()
        return gc.get_freeze_count()

    def check(self) -> int | None:
        """Collect the oldest generation whose count passed its threshold (as gc would)."""
        counts = gc.get_count()
        generation = None
        for gen in (2, 1, 0):
            if self._thresholds[gen] and counts[gen] > self._thresholds[gen]:
                generation = gen
                break
        if generation is not None:
            gc.collect(generation)
            self.collections[generation] += 1
        return generation

    def _on_timer_timeout(self) -> None:
        self.check()
