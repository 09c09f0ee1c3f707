"""The GUI-thread garbage collector: collections happen on the GUI thread, as often as
CPython's own thresholds ask, and full passes wait for a quiet moment without being skipped."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from wardsync.ui.gc_guard import (
    CHECK_INTERVAL_MS,
    FULL_MAX_DEFER_S,
    FULL_MIN_INTERVAL_S,
    MainThreadGarbageCollector,
)

TICK_S = CHECK_INTERVAL_MS / 1000.0


def test_garbage_collection_runs_on_the_gui_thread(qapp) -> None:
    guard = MainThreadGarbageCollector(qapp)
    guard.start()
    try:
        assert not gc.isenabled()
        junk = []
        for _ in range(5000):
            a: list = []
            a.append(a)  # a reference cycle only the collector frees
            junk.append(a)
        del junk
        assert guard.check() is not None
        assert sum(guard.collections) >= 1
    finally:
        guard.stop()


def test_startup_objects_can_be_frozen_out_of_full_collections(qapp) -> None:
    guard = MainThreadGarbageCollector(qapp)
    try:
        assert guard.freeze_startup_objects() > 0
    finally:
        gc.unfreeze()


@pytest.fixture
def guard_on_a_clock(qapp) -> Iterator[tuple[MainThreadGarbageCollector, list[float]]]:
    """A started guard on a clock the test moves, with generations small enough that a few
    hundred allocations make a full pass due."""
    saved = gc.get_threshold()
    gc.set_threshold(100, 2, 2)
    clock = [0.0]
    guard = MainThreadGarbageCollector(qapp, monotonic=lambda: clock[0])
    guard.start()
    try:
        yield guard, clock
    finally:
        guard.stop()
        gc.set_threshold(*saved)


def run_ticks(guard: MainThreadGarbageCollector, clock: list[float], seconds: float,
              per_tick: int) -> list[float]:
    """Simulate `seconds` of GUI ticks allocating `per_tick` containers each (kept alive);
    return when each full collection ran."""
    kept: list[list] = []
    fulls = []
    for _ in range(round(seconds / TICK_S)):
        clock[0] += TICK_S
        kept.extend([] for _ in range(per_tick))
        if guard.check() == 2:
            fulls.append(clock[0])
    return fulls


def test_full_collections_wait_while_busy_but_are_never_put_off_for_long(
        guard_on_a_clock: tuple[MainThreadGarbageCollector, list[float]]) -> None:
    guard, clock = guard_on_a_clock
    # Busy: more than a young generation's worth of allocations every tick.
    fulls = run_ticks(guard, clock, 60.0, per_tick=300)
    assert guard.full_deferred > 0
    assert len(fulls) >= 2, "full collections must still happen under constant load"
    gaps = [b - a for a, b in zip([0.0, *fulls], fulls, strict=False)]
    # Each one put off for the longest allowed once due (due a few ticks after the last),
    # where a quiet app would have collected at the minimum spacing.
    assert all(FULL_MAX_DEFER_S + 0.5 < g <= FULL_MIN_INTERVAL_S + FULL_MAX_DEFER_S + 1
               for g in gaps), gaps
    assert guard.collections[1] > guard.collections[2]


def test_when_quiet_a_due_full_collection_runs_once_spaced(
        guard_on_a_clock: tuple[MainThreadGarbageCollector, list[float]]) -> None:
    guard, clock = guard_on_a_clock
    # Quiet: fewer allocations per tick than one young generation, yet enough over time to
    # make full passes due.
    fulls = run_ticks(guard, clock, 60.0, per_tick=60)
    assert len(fulls) >= 4
    gaps = [b - a for a, b in zip([0.0, *fulls], fulls, strict=False)]
    assert all(FULL_MIN_INTERVAL_S <= g < FULL_MIN_INTERVAL_S + 0.5 for g in gaps), gaps
