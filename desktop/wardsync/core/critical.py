"""Critical lab result rules (docs/architecture.md §5), configurable per site.

A result is critical when the laboratory flagged it so, or when its value lies beyond the
site's critical limit for that test:

- Flags: `Observation.interpretation` codes of the v3 ObservationInterpretation code system
  (terminology.hl7.org CodeSystem-v3-ObservationInterpretation). In its normality hierarchy
  A (abnormal) has children AA (critical abnormal), H and L; AA has children HH (critical
  high) and LL (critical low) — HH and LL also sit under HU/LU. So "is-a AA" is exactly
  {AA, HH, LL}; the rest of "is-a A" (A, H, L, HU, LU and the deprecated H>, L<) is abnormal
  and N is normal. HL7 v2 table 0078 uses the same letters, so its codings count too.
- Limits: compared only when the result's unit is the limit's unit; otherwise the limit
  check is "unknown" rather than a guess. Comparators (`<1.5`) are honoured.

Reasons are short, name the test, value and limit, and never the patient.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from wardsync.core import codes
from wardsync.core.loinc import is_loinc_syntax
from wardsync.core.resources import codes_of, codings, relative_ref, version_id

V2_INTERPRETATION: Final = "http://terminology.hl7.org/CodeSystem/v2-0078"
INTERPRETATION_SYSTEMS: Final = frozenset({codes.INTERPRETATION, V2_INTERPRETATION})

# is-a AA in v3 ObservationInterpretation.
CRITICAL_INTERPRETATIONS: Final = frozenset({"AA", "HH", "LL"})
# is-a A, minus the critical family.
ABNORMAL_INTERPRETATIONS: Final = frozenset({"A", "H", "L", "HU", "LU", "H>", "L<"})
NORMAL_INTERPRETATIONS: Final = frozenset({"N"})
_FLAG_WORDS: Final = {
    "AA": "critical",
    "HH": "critical high",
    "LL": "critical low",
    "A": "abnormal",
    "H": "high",
    "L": "low",
    "HU": "significantly high",
    "LU": "significantly low",
    "H>": "significantly high",
    "L<": "significantly low",
}

# DiagnosticReport.status values whose results may raise an alert. `preliminary` and
# `partial` are included on purpose: labs phone critical values as soon as they are known,
# before final verification; the alert's key changes when the report is finalised/corrected.
ALERTABLE_REPORT_STATUSES: Final = frozenset(
    {"partial", "preliminary", "final", "amended", "corrected", "appended"}
)
# FHIR R4 valueset-diagnostic-report-status: `appended` and `corrected` specialise `amended`.
CORRECTION_STATUSES: Final = frozenset({"amended", "corrected", "appended"})
WITHDRAWN_STATUSES: Final = frozenset({"cancelled", "entered-in-error"})

Level = Literal["critical", "abnormal", "normal", "unknown"]
_RANK: Final = {"unknown": 0, "normal": 1, "abnormal": 2, "critical": 3}

# UCUM has "l" and "L" as synonyms for litre; a standalone l is normalised to L.
_LITRE = re.compile(r"(?<![A-Za-z])l(?![A-Za-z])")


class CriticalLimitsError(ValueError):
    """A site's critical-limits table is invalid; the message names the bad entry."""


@dataclass(frozen=True, slots=True)
class CriticalLimit:
    """Values below `low` or above `high` (UCUM `unit`) are critical for LOINC test `loinc`."""

    loinc: str
    low: float | None
    high: float | None
    unit: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise CriticalLimitsError(f"critical limit {self.loinc!r}: needs a low or a high")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise CriticalLimitsError(f"critical limit {self.loinc!r}: low must be below high")

    @property
    def label(self) -> str:
        """A short test name for reasons ("Potassium")."""
        return self.name or _test_label(self.loinc)


def _test_label(loinc: str | None) -> str:
    test = codes.LAB_TESTS_BY_CODE.get(loinc or "")
    return test.display.split(" [", 1)[0] if test is not None else "Result"


class CriticalLimits(Mapping[str, CriticalLimit]):
    """A site's critical limits, keyed by LOINC code."""

    def __init__(self, limits: Iterable[CriticalLimit] = ()) -> None:
        self._limits: dict[str, CriticalLimit] = {}
        for limit in limits:
            if limit.loinc in self._limits:
                raise CriticalLimitsError(f"critical limit {limit.loinc!r}: given twice")
            self._limits[limit.loinc] = limit

    def __getitem__(self, loinc: str) -> CriticalLimit:
        return self._limits[loinc]

    def __iter__(self) -> Iterator[str]:
        return iter(self._limits)

    def __len__(self) -> int:
        return len(self._limits)

    def __repr__(self) -> str:
        return f"CriticalLimits({list(self._limits.values())!r})"

    def merged(self, overrides: CriticalLimits) -> CriticalLimits:
        """These limits with `overrides` replacing (or adding) entries by LOINC code."""
        combined = {**self._limits, **overrides._limits}
        return CriticalLimits(combined.values())

    @classmethod
    def from_mapping(cls, table: object) -> CriticalLimits:
        """Build from a site table such as the `[critical_limits]` section of config.toml.

        `{"2823-3": {"low": 2.8, "high": 6.2, "unit": "mmol/L", "name": "Potassium"}}`;
        `low` or `high` may be omitted (one is required), `name` is optional. Raises
        `CriticalLimitsError` naming the offending key.
        """
        if not isinstance(table, Mapping):
            raise CriticalLimitsError("critical limits must be a table keyed by LOINC code")
        limits = []
        for key, entry in table.items():
            where = f"critical_limits[{key!r}]"
            if not is_loinc_syntax(key):
                raise CriticalLimitsError(f"{where}: key must be a LOINC code like '2823-3'")
            if not isinstance(entry, Mapping):
                raise CriticalLimitsError(f"{where}: must be a table with low/high/unit")
            unknown = sorted(str(k) for k in entry if k not in ("low", "high", "unit", "name"))
            if unknown:
                raise CriticalLimitsError(f"{where}: unknown field(s) {', '.join(unknown)}")
            bounds: dict[str, float | None] = {}
            for bound in ("low", "high"):
                value = entry.get(bound)
                if value is not None and (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                ):
                    raise CriticalLimitsError(f"{where}.{bound}: must be a number")
                bounds[bound] = None if value is None else float(value)
            unit = entry.get("unit")
            if not isinstance(unit, str) or not unit.strip():
                raise CriticalLimitsError(f"{where}.unit: must be a UCUM unit string")
            name = entry.get("name", "")
            if not isinstance(name, str):
                raise CriticalLimitsError(f"{where}.name: must be text")
            low, high = bounds["low"], bounds["high"]
            if low is None and high is None:
                raise CriticalLimitsError(f"{where}: needs a low or a high")
            if low is not None and high is not None and not low < high:
                raise CriticalLimitsError(f"{where}: low must be below high")
            limits.append(CriticalLimit(key, low, high, unit, name))
        return cls(limits)


DEFAULT_CRITICAL_LIMITS: Final = CriticalLimits(
    [
        CriticalLimit(codes.POTASSIUM.code, 2.8, 6.2, "mmol/L", "Potassium"),
        CriticalLimit(codes.SODIUM.code, 120.0, 160.0, "mmol/L", "Sodium"),
        CriticalLimit(codes.GLUCOSE.code, 2.5, 25.0, "mmol/L", "Glucose"),
        CriticalLimit(codes.HAEMOGLOBIN.code, 70.0, None, "g/L", "Haemoglobin"),
        CriticalLimit(codes.LACTATE.code, None, 4.0, "mmol/L", "Lactate"),
    ]
)


@dataclass(frozen=True, slots=True)
class Assessment:
    """How worrying a result (or report) is, and why, in words without patient identity."""

    level: Level
    reasons: tuple[str, ...] = ()

    @property
    def is_critical(self) -> bool:
        return self.level == "critical"


# ---------------------------------------------------------------- observation helpers


def _interpretation_codes(obs: Mapping[str, Any]) -> list[str]:
    concepts = obs.get("interpretation")
    # A coding without a system is read as v3: a dropped system must not hide an HH.
    return [
        c["code"] for c in codings(concepts if isinstance(concepts, list) else [])
        if isinstance(c.get("code"), str)
        and (c.get("system") is None or c.get("system") in INTERPRETATION_SYSTEMS)
    ]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _unit_of(quantity: Mapping[str, Any]) -> str | None:
    code = quantity.get("code")
    if quantity.get("system") == codes.UCUM and isinstance(code, str):
        return code
    unit = quantity.get("unit")
    return unit if isinstance(unit, str) else None


def _same_unit(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and _LITRE.sub("L", a) == _LITRE.sub("L", b)


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class _Interval:
    """What a (possibly comparator-qualified) quantity says about the true value."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def of(cls, value: float, comparator: object) -> _Interval | None:
        match comparator:
            case None:
                return cls(value, value)
            case "<":
                return cls(-math.inf, value, high_open=True)
            case "<=":
                return cls(-math.inf, value)
            case ">":
                return cls(value, math.inf, low_open=True)
            case ">=":
                return cls(value, math.inf)
        return None  # "ad" (sufficient to achieve this total) or invalid: not comparable

    def surely_below(self, bound: float) -> bool:
        return self.high < bound or (self.high == bound and self.high_open)

    def surely_above(self, bound: float) -> bool:
        return self.low > bound or (self.low == bound and self.low_open)

    def surely_within(self, low: float | None, high: float | None) -> bool:
        return (low is None or self.low >= low) and (high is None or self.high <= high)


def _shown(quantity: Mapping[str, Any], value: float, unit: str | None) -> str:
    comparator = quantity.get("comparator")
    prefix = (
        comparator if isinstance(comparator, str) and comparator in ("<", "<=", ">", ">=") else ""
    )
    return f"{prefix}{_fmt(value)} {unit}".strip() if unit else f"{prefix}{_fmt(value)}"


def _check_limit(
    label: str, quantity: Mapping[str, Any], limit: CriticalLimit
) -> tuple[Level, str | None]:
    value = _number(quantity.get("value"))
    if value is None:
        return "unknown", None
    unit = _unit_of(quantity)
    if not _same_unit(unit, limit.unit):
        return "unknown", (
            f"{label} unit {unit or 'missing'} differs from critical limit unit {limit.unit}; "
            "limit not checked"
        )
    interval = _Interval.of(value, quantity.get("comparator"))
    if interval is None:
        return "unknown", None
    shown = _shown(quantity, value, unit)
    if limit.low is not None and interval.surely_below(limit.low):
        return "critical", f"{label} {shown} below critical limit {_fmt(limit.low)}"
    if limit.high is not None and interval.surely_above(limit.high):
        return "critical", f"{label} {shown} above critical limit {_fmt(limit.high)}"
    if interval.surely_within(limit.low, limit.high):
        return "normal", None  # within critical limits: says nothing about the reference range
    return "unknown", None


def _check_reference_range(
    label: str, obs: Mapping[str, Any], quantity: Mapping[str, Any]
) -> Level:
    ranges = obs.get("referenceRange")
    value = _number(quantity.get("value"))
    if not isinstance(ranges, list) or not ranges or value is None:
        return "unknown"
    interval = _Interval.of(value, quantity.get("comparator"))
    first = ranges[0]
    if interval is None or not isinstance(first, Mapping):
        return "unknown"
    unit = _unit_of(quantity)
    bounds: list[float | None] = []
    for side in ("low", "high"):
        q = first.get(side)
        if q is None:
            bounds.append(None)
            continue
        bound = _number(q.get("value")) if isinstance(q, Mapping) else None
        if bound is None or not _same_unit(_unit_of(q), unit):
            return "unknown"
        bounds.append(bound)
    low, high = bounds
    if low is None and high is None:
        return "unknown"
    if (low is not None and interval.surely_below(low)) or (
        high is not None and interval.surely_above(high)
    ):
        return "abnormal"
    return "normal" if interval.surely_within(low, high) else "unknown"


def _worst(levels: Iterable[Level]) -> Level:
    return max(levels, key=_RANK.__getitem__, default="unknown")


# ---------------------------------------------------------------- public rules


def assess_observation(
    obs: Mapping[str, Any], limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS
) -> Assessment:
    """Classify one result Observation as critical, abnormal, normal or unknown.

    Critical: an interpretation in the AA family, or a value beyond the site limit.
    Abnormal: another abnormal interpretation (H, L, A, ...) or a value outside the
    Observation's own reference range. Normal: interpretation N or a value inside the
    reference range. Unknown: nothing to go on (no flag, no comparable value).
    """
    status = obs.get("status")
    if status in WITHDRAWN_STATUSES:
        return Assessment("unknown", (f"Result withdrawn ({status})",))
    loincs = codes_of(obs.get("code"), codes.LOINC)
    limit = next((limits[c] for c in loincs if c in limits), None)
    label = limit.label if limit is not None else _test_label(next(iter(loincs), None))

    levels: list[Level] = []
    reasons: list[str] = []
    for flag in _interpretation_codes(obs):
        if flag in CRITICAL_INTERPRETATIONS:
            levels.append("critical")
            reasons.append(f"{label} flagged {_FLAG_WORDS[flag]} by the laboratory ({flag})")
        elif flag in ABNORMAL_INTERPRETATIONS:
            levels.append("abnormal")
            reasons.append(f"{label} flagged {_FLAG_WORDS[flag]} ({flag})")
        elif flag in NORMAL_INTERPRETATIONS:
            levels.append("normal")

    quantity = obs.get("valueQuantity")
    if isinstance(quantity, Mapping):
        if limit is not None:
            level, reason = _check_limit(label, quantity, limit)
            # Within the critical limits is not "normal": only a flag or range says that.
            if level != "normal":
                levels.append(level)
            if reason is not None:
                reasons.append(reason)
        range_level = _check_reference_range(label, obs, quantity)
        levels.append(range_level)
        if range_level == "abnormal" and not any(r.startswith(label) for r in reasons):
            reasons.append(f"{label} outside reference range")

    worst = _worst(levels)
    kept = tuple(r for r in reasons if worst != "critical" or "critical" in r or "not checked" in r)
    return Assessment(worst, kept)


def assess_report(
    report: Mapping[str, Any],
    observations: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
    limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS,
) -> Assessment:
    """Classify a DiagnosticReport from its result Observations.

    `observations` maps "Observation/id" to the resource, or is an iterable of them; only
    those the report's `result` references count. A report is critical only when its status
    is alertable (`ALERTABLE_REPORT_STATUSES`) and at least one result is critical.
    """
    status = report.get("status")
    if status not in ALERTABLE_REPORT_STATUSES:
        return Assessment("unknown", (f"Report status {status!s} is not assessed",))
    by_ref: Mapping[str, Mapping[str, Any]]
    if isinstance(observations, Mapping):
        by_ref = observations
    else:
        by_ref = {f"Observation/{o.get('id')}": o for o in observations if isinstance(o, Mapping)}
    results = report.get("result")
    refs = [
        ref
        for r in (results if isinstance(results, list) else [])
        if isinstance(r, Mapping) and (ref := relative_ref(r.get("reference"))) is not None
    ]
    if not refs:
        return Assessment("unknown", ("No results yet",))
    assessments = []
    missing = 0
    for ref in refs:
        obs = by_ref.get(ref)
        if obs is None:
            missing += 1
            continue
        assessments.append(assess_observation(obs, limits))
    levels: list[Level] = [a.level for a in assessments]
    if missing:
        levels.append("unknown")
    worst = _worst(levels)
    if worst == "normal" and any(level == "unknown" for level in levels):
        worst = "unknown"  # normal only when every result is known to be normal
    reasons = [r for a in assessments if a.level == worst for r in a.reasons]
    if missing:
        reasons.append(f"{missing} result(s) not loaded")
    return Assessment(worst, tuple(reasons))


def alert_key(resource: Mapping[str, Any]) -> tuple[str, str]:
    """(reference, versionId) identifying one alertable version: re-alert only on a new one."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    return f"{rtype}/{rid}", version_id(resource) or ""


def is_correction(report: Mapping[str, Any]) -> bool:
    """True when the report was amended, corrected or appended after release (re-alert)."""
    return report.get("status") in CORRECTION_STATUSES
