"""Clocks: the fake one moves only when told, and never backwards."""

from __future__ import annotations

import time

import pytest

from wardsync.core.clock import Clock, FakeClock, SystemClock


def test_fake_clock_advances_both_clocks() -> None:
    clock = FakeClock(monotonic=10.0, wall=1000.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.wall()) == (12.5, 1002.5)


def test_fake_clock_refuses_to_go_backwards() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert clock.monotonic() == 0.0


def test_setting_wall_time_leaves_monotonic_alone() -> None:
    clock = FakeClock(monotonic=5.0, wall=100.0)
    clock.set_wall(50.0)  # the OS corrected the time backwards
    assert (clock.monotonic(), clock.wall()) == (5.0, 50.0)


def test_system_clock_tracks_real_time() -> None:
    clock: Clock = SystemClock()
    before_wall, before_mono = time.time(), time.monotonic()
    wall, mono = clock.wall(), clock.monotonic()
    assert before_wall <= wall <= time.time()
    assert before_mono <= mono <= time.monotonic()
