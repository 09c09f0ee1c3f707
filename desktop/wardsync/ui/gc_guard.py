"""Python's cyclic garbage collector runs on the GUI thread only, and full passes wait for a
quiet moment.

The collector normally runs in whichever thread happens to allocate past its threshold. The
app validates large FHIR bundles in worker threads, so a closed window caught in a reference
cycle could be destroyed there — Qt objects must be deleted on their own thread, and doing it
elsewhere crashes ("Timers cannot be stopped from another thread", then a segfault). The guard
turns automatic collection off and collects from a GUI-thread timer with the same generation
thresholds, so young collections happen as often as before, only in the right place.

A full collection walks every tracked object: with a ward of resources in memory that holds
the GUI for up to ~100 ms, long enough to be felt during a burst of results. Full passes are
therefore spaced (at most one per `FULL_MIN_INTERVAL_S`) and put off while the app is busy
(allocating faster than one young generation per tick), for at most `FULL_MAX_DEFER_S`, after
which they run anyway so garbage in reference cycles is always reclaimed.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer

CHECK_INTERVAL_MS = 200
FULL_MIN_INTERVAL_S = 10.0
FULL_MAX_DEFER_S = 10.0


class MainThreadGarbageCollector(QObject):
    """`MainThreadGarbageCollector(app).start()`; `stop()` restores automatic collection."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = CHECK_INTERVAL_MS, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._was_enabled = gc.isenabled()
        self._monotonic = monotonic
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._young_at_last_check = 0
        self._last_full: float | None = None
        self._full_due_since: float | None = None
        self.collections = [0, 0, 0]
        self.full_deferred = 0  # checks that put a due full collection off (diagnostics)

    def start(self) -> None:
        gc.disable()
        self._last_full = self._monotonic()
        self._young_at_last_check = gc.get_count()[0]
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
        self._last_full = self._monotonic()
        gc.freeze()
        return gc.get_freeze_count()

    def check(self) -> int | None:
        """Collect the oldest generation whose count passed its threshold (as gc would),
        except that a due full collection waits for a quiet moment (see the module doc)."""
        counts = gc.get_count()
        busy = counts[0] - self._young_at_last_check >= self._thresholds[0]
        generation = None
        for gen in (2, 1, 0):
            if self._thresholds[gen] and counts[gen] > self._thresholds[gen]:
                generation = gen
                break
        if generation == 2 and not self._full_now(busy):
            self.full_deferred += 1
            generation = 1
        if generation is not None:
            gc.collect(generation)
            self.collections[generation] += 1
        self._young_at_last_check = gc.get_count()[0]
        return generation

    def _full_now(self, busy: bool) -> bool:
        now = self._monotonic()
        if self._full_due_since is None:
            self._full_due_since = now
        spaced = self._last_full is None or now - self._last_full >= FULL_MIN_INTERVAL_S
        overdue = now - self._full_due_since >= FULL_MAX_DEFER_S
        if (spaced and not busy) or overdue:
            self._last_full = now
            self._full_due_since = None
            return True
        return False

    def _on_timer_timeout(self) -> None:
        self.check()
