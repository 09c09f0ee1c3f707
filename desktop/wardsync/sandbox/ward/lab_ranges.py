"""Adult reference ranges, critical limits and the interpretation flag of a lab value.

One table serves the synthetic ward (seed), the laboratory client and the simulator, so a
value written by any of them carries the same `referenceRange` and `interpretation`.

Ranges are typical UK adult ranges; the critical limits are those of docs/architecture.md §5
(potassium < 2.8 or > 6.2 mmol/L, sodium < 120 or > 160 mmol/L, glucose < 2.5 or > 25 mmol/L,
haemoglobin < 70 g/L, lactate > 4 mmol/L). Flags are v3 ObservationInterpretation codes
(terminology.hl7.org CodeSystem-v3-ObservationInterpretation): N, L, H, LL, HH.
"""

from __future__ import annotations

from dataclasses import dataclass

from wardsync.core import codes

NORMAL = "N"
LOW = "L"
HIGH = "H"
CRITICAL_LOW = "LL"
CRITICAL_HIGH = "HH"

INTERPRETATION_DISPLAY: dict[str, str] = {
    NORMAL: "Normal",
    LOW: "Low",
    HIGH: "High",
    CRITICAL_LOW: "Critical low",
    CRITICAL_HIGH: "Critical high",
}
CRITICAL_FLAGS = frozenset({CRITICAL_LOW, CRITICAL_HIGH})


@dataclass(frozen=True, slots=True)
class LabRange:
    """Reference interval and critical limits of one test, in the test's UCUM unit.

    The reference interval is inclusive (`low <= value <= high` is normal); a critical limit is
    exclusive (`value < critical_low` or `value > critical_high` is critical), matching how the
    limits are stated ("potassium < 2.8"). `None` means no limit on that side. `decimals` is
    the precision the analyser reports.
    """

    low: float | None
    high: float | None
    critical_low: float | None = None
    critical_high: float | None = None
    decimals: int = 1

    def interpret(self, value: float) -> str:
        """The v3 ObservationInterpretation code for `value` (N, L, H, LL or HH)."""
        if self.critical_low is not None and value < self.critical_low:
            return CRITICAL_LOW
        if self.critical_high is not None and value > self.critical_high:
            return CRITICAL_HIGH
        if self.low is not None and value < self.low:
            return LOW
        if self.high is not None and value > self.high:
            return HIGH
        return NORMAL

    def is_critical(self, value: float) -> bool:
        """True if `value` lies beyond a critical limit."""
        return self.interpret(value) in CRITICAL_FLAGS

    def round(self, value: float) -> float:
        """`value` at the precision the analyser reports."""
        return round(value, self.decimals) if self.decimals else float(round(value))


LAB_RANGES: dict[str, LabRange] = {
    codes.SODIUM.code: LabRange(133, 146, critical_low=120, critical_high=160, decimals=0),
    codes.POTASSIUM.code: LabRange(3.5, 5.3, critical_low=2.8, critical_high=6.2),
    codes.UREA.code: LabRange(2.5, 7.8),
    codes.CREATININE.code: LabRange(45, 110, decimals=0),
    codes.GLUCOSE.code: LabRange(3.9, 7.8, critical_low=2.5, critical_high=25),
    codes.HAEMOGLOBIN.code: LabRange(120, 170, critical_low=70, decimals=0),
    codes.WHITE_CELL_COUNT.code: LabRange(4.0, 11.0),
    codes.PLATELETS.code: LabRange(150, 400, decimals=0),
    codes.LACTATE.code: LabRange(0.5, 2.0, critical_high=4.0),
    # High-sensitivity troponin T: the 99th-percentile upper reference limit is 14 ng/L.
    codes.TROPONIN_T.code: LabRange(None, 14, decimals=0),
}

# Tests that have at least one critical limit, per panel (a panel without any cannot carry a
# critical result).
CRITICAL_TESTS_BY_PANEL: dict[str, tuple[str, ...]] = {
    panel: tuple(
        t.code
        for t in tests
        if LAB_RANGES[t.code].critical_low is not None
        or LAB_RANGES[t.code].critical_high is not None
    )
    for panel, tests in codes.LAB_PANELS.items()
}


def lab_range(test_code: str) -> LabRange:
    """The range table entry of a LOINC test code; `KeyError` names an unknown code."""
    try:
        return LAB_RANGES[test_code]
    except KeyError:
        raise KeyError(f"no reference range for lab test {test_code!r}") from None


def interpret(test_code: str, value: float) -> str:
    """The interpretation code (N, L, H, LL, HH) of `value` for the LOINC test `test_code`."""
    return lab_range(test_code).interpret(value)
