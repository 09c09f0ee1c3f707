"""Value-axis ticks fit the chart's height on round steps."""

from __future__ import annotations

import pytest

from wardsync.viewmodels.axis_ticks import fitting_ticks, max_ticks


def test_ticks_are_round_cover_the_range_and_never_exceed_what_fits() -> None:
    assert fitting_ticks(40, 140, 6) == (40, 140, 6)  # step 20
    assert fitting_ticks(40, 140, 4) == (0, 150, 4)  # step 50
    assert fitting_ticks(34.2, 39.8, 4) == (34, 40, 4)  # step 2
    for low, high in ((0, 200), (20, 140), (80, 130), (34, 41), (0, 3)):
        for most in range(2, 9):
            lo, hi, ticks = fitting_ticks(low, high, most)
            assert lo <= low and hi >= high and 2 <= ticks <= most


def test_how_many_labels_an_axis_holds() -> None:
    assert max_ticks(103, 17) == 4  # the short trend chart in the high-contrast font
    assert max_ticks(300, 17) == 12
    assert max_ticks(0, 17) == 2
    with pytest.raises(ValueError):
        fitting_ticks(0, 1, 1)
