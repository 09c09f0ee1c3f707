"""Value-axis ticks that fit the height a chart has (plain Python, no widgets).

Qt Charts elides a value axis's labels to "…" (and drops some) when more labels are asked for
than the axis length holds, so a short trend chart in a large font showed "…" for every value.
`fitting_ticks` picks a round step (1, 2, 2.5, 5 × 10ⁿ) that covers the range with no more
ticks than fit.
"""

from __future__ import annotations

import math

STEPS = (1.0, 2.0, 2.5, 5.0)
LABEL_SPACING = 1.6  # label heights per tick interval, so neighbouring labels never touch


def max_ticks(axis_px: float, label_px: float) -> int:
    """How many ticks (labels) an axis `axis_px` long holds for labels `label_px` high."""
    if axis_px <= 0 or label_px <= 0:
        return 2
    return max(2, int(axis_px // (label_px * LABEL_SPACING)) + 1)


def fitting_ticks(low: float, high: float, most: int) -> tuple[float, float, int]:
    """(low, high, tick count) on a round step covering `low`..`high`, at most `most` ticks."""
    if most < 2:
        raise ValueError(f"an axis needs at least 2 ticks, not {most}")
    if not high > low:
        high = low + 1.0
    exponent = math.floor(math.log10((high - low) / (most - 1)))
    while True:
        for base in STEPS:
            step = base * 10.0 ** exponent
            lo = math.floor(low / step + 1e-9) * step
            hi = math.ceil(high / step - 1e-9) * step
            ticks = round((hi - lo) / step) + 1
            if ticks <= most:
                return lo, hi, max(ticks, 2)
        exponent += 1
