"""NEWS2, the National Early Warning Score 2 (Royal College of Physicians, 2017).

Chart 1 of the RCP report scores seven parameters 0-3 and adds them up:

    parameter              3        2        1        0         1        2        3
    respiration rate /min  <=8               9-11     12-20              21-24    >=25
    SpO2 scale 1 %         <=91     92-93    94-95    >=96
    SpO2 scale 2 %         <=83     84-85    86-87    88-92,               95-96    >=97
                                                      >=93 air  93-94 O2   on O2    on O2
    air or oxygen                   oxygen            air
    systolic BP mmHg       <=90     91-100   101-110  111-219                       >=220
    pulse /min             <=40              41-50    51-90     91-110   111-130  >=131
    consciousness                                     alert                        CVPU
    temperature C          <=35.0            35.1-36.0 36.1-38.0 38.1-39.0 >=39.1

Scale 2 is only for patients with hypercapnic respiratory failure whose prescribed target
is 88-92%; it is a clinical decision passed in by the caller. Clinical risk (Chart 2):
high for an aggregate of 7 or more, medium for 5-6, low-medium when any single parameter
scores 3, low otherwise (0-4).

The chart lists whole numbers (temperature to 0.1 C); values are rounded half-up to that
precision before scoring, as a chart is filled in. A missing parameter is never scored as
0: the result says which parameters are missing and has no total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any, Final

from wardsync.core import codes
from wardsync.core.fhirtime import parse_datetime
from wardsync.core.resources import codes_of, has_code, quantity_value
from wardsync.core.store import is_newer


class Parameter(StrEnum):
    """The seven NEWS2 parameters, in chart order."""

    RESPIRATION_RATE = "respiration_rate"
    SPO2 = "spo2"
    AIR_OR_OXYGEN = "air_or_oxygen"
    SYSTOLIC_BP = "systolic_bp"
    PULSE = "pulse"
    CONSCIOUSNESS = "consciousness"
    TEMPERATURE = "temperature"


class RiskBand(StrEnum):
    """NEWS2 clinical risk (RCP 2017, Chart 2)."""

    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


HIGH_RISK_MIN: Final = 7
MEDIUM_RISK_MIN: Final = 5
RED_SCORE: Final = 3  # a single parameter scoring 3 makes at least low-medium risk


def _chart(value: float, places: int = 0) -> Decimal:
    """`value` rounded half-up to the chart's precision (whole numbers, or 0.1 C)."""
    if isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"a vital sign must be a finite number, got {value!r}")
    return Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def _band(value: Decimal, bands: tuple[tuple[int | Decimal, int], ...], *, above: int) -> int:
    """The score of the first chart band whose upper limit (inclusive) holds `value`, or
    `above` beyond the last one: the rows of RCP 2017 Chart 1, lowest band first."""
    for upper, score in bands:
        if value <= upper:
            return score
    return above


def score_respiration_rate(per_min: float) -> int:
    """Respiration rate, breaths per minute."""
    return _band(_chart(per_min), ((8, 3), (11, 1), (20, 0), (24, 2)), above=3)


def score_spo2_scale1(percent: float) -> int:
    """SpO2 on scale 1 (most patients)."""
    return _band(_chart(percent), ((91, 3), (93, 2), (95, 1)), above=0)


def score_spo2_scale2(percent: float, on_oxygen: bool) -> int:
    """SpO2 on scale 2 (target 88-92%): above 92% scores only when on oxygen."""
    v = _chart(percent)
    if not on_oxygen:
        return _band(v, ((83, 3), (85, 2), (87, 1)), above=0)
    return _band(v, ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2)), above=3)


def score_air_or_oxygen(on_oxygen: bool) -> int:
    """Supplemental oxygen scores 2, air 0."""
    return 2 if on_oxygen else 0


def score_systolic_bp(mmhg: float) -> int:
    """Systolic blood pressure, mmHg."""
    return _band(_chart(mmhg), ((90, 3), (100, 2), (110, 1), (219, 0)), above=3)


def score_pulse(per_min: float) -> int:
    """Pulse, beats per minute."""
    return _band(_chart(per_min), ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2)), above=3)


def score_consciousness(acvpu: str) -> int:
    """ACVPU: Alert scores 0; new Confusion, Voice, Pain or Unresponsive score 3."""
    if acvpu not in codes.CONSCIOUSNESS_LEVELS:
        raise ValueError(f"consciousness must be one of {codes.CONSCIOUSNESS_LEVELS}")
    return 0 if acvpu == "A" else 3


def score_temperature(celsius: float) -> int:
    """Temperature, degrees Celsius."""
    return _band(_chart(celsius, 1),
                 ((Decimal("35.0"), 3), (Decimal("36.0"), 1), (Decimal("38.0"), 0),
                  (Decimal("39.0"), 1)), above=2)


def risk_band(total: int, scores: Iterable[int]) -> RiskBand:
    """The clinical risk band of an aggregate score and its parameter scores."""
    if total >= HIGH_RISK_MIN:
        return RiskBand.HIGH
    if total >= MEDIUM_RISK_MIN:
        return RiskBand.MEDIUM
    if any(s >= RED_SCORE for s in scores):
        return RiskBand.LOW_MEDIUM
    return RiskBand.LOW


@dataclass(frozen=True, slots=True)
class VitalSignValues:
    """One set of NEWS2 inputs; None means not measured."""

    respiration_rate: float | None = None
    spo2: float | None = None
    on_oxygen: bool | None = None
    systolic_bp: float | None = None
    pulse: float | None = None
    consciousness: str | None = None
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class News2:
    """A NEWS2 result. When any parameter is missing, `total` and `band` are None.

    `scores` holds the parameters that could be scored; `partial_total` is their sum (a
    lower bound of the true total). `observed_at` is when the oldest input was measured:
    the score is only as current as that.
    """

    scores: Mapping[Parameter, int]
    missing: tuple[Parameter, ...]
    spo2_scale: int = 1
    observed_at: datetime | None = field(default=None, compare=False)

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def partial_total(self) -> int:
        return sum(self.scores.values())

    @property
    def total(self) -> int | None:
        return self.partial_total if self.complete else None

    @property
    def band(self) -> RiskBand | None:
        return risk_band(self.partial_total, self.scores.values()) if self.complete else None

    @property
    def has_red_score(self) -> bool:
        """True if any scored parameter scores 3 (urgent ward-based response)."""
        return any(s >= RED_SCORE for s in self.scores.values())


def news2(
    values: VitalSignValues, *, spo2_scale: int = 1, observed_at: datetime | None = None
) -> News2:
    """Score one set of vital signs."""
    if spo2_scale not in (1, 2):
        raise ValueError("spo2_scale must be 1 or 2")
    scores: dict[Parameter, int] = {}
    if values.respiration_rate is not None:
        scores[Parameter.RESPIRATION_RATE] = score_respiration_rate(values.respiration_rate)
    if values.spo2 is not None:
        if spo2_scale == 1:
            scores[Parameter.SPO2] = score_spo2_scale1(values.spo2)
        elif values.on_oxygen is not None or _chart(values.spo2) <= 92:
            scores[Parameter.SPO2] = score_spo2_scale2(values.spo2, bool(values.on_oxygen))
        # else: scale 2 above 92% cannot be scored without knowing air or oxygen.
    if values.on_oxygen is not None:
        scores[Parameter.AIR_OR_OXYGEN] = score_air_or_oxygen(values.on_oxygen)
    if values.systolic_bp is not None:
        scores[Parameter.SYSTOLIC_BP] = score_systolic_bp(values.systolic_bp)
    if values.pulse is not None:
        scores[Parameter.PULSE] = score_pulse(values.pulse)
    if values.consciousness is not None:
        scores[Parameter.CONSCIOUSNESS] = score_consciousness(values.consciousness)
    if values.temperature is not None:
        scores[Parameter.TEMPERATURE] = score_temperature(values.temperature)
    ordered = {p: scores[p] for p in Parameter if p in scores}
    missing = tuple(p for p in Parameter if p not in scores)
    return News2(ordered, missing, spo2_scale, observed_at)


# ---------------------------------------------------------------- from FHIR Observations

# FHIR R4 vital signs profile: SpO2 is coded 2708-6 with 59408-5 (pulse oximetry) beside it.
OXYGEN_SATURATION_ARTERIAL: Final = "2708-6"
USABLE_STATUSES: Final = frozenset({"preliminary", "final", "amended", "corrected"})

_PER_MIN: Final = frozenset({"/min", "{breaths}/min", "{beats}/min"})
_PERCENT: Final = frozenset({"%"})
_MMHG: Final = frozenset({"mm[Hg]", "mmHg"})
_CELSIUS: Final = frozenset({"Cel", "°C"})
_FAHRENHEIT: Final = frozenset({"[degF]", "°F"})

_PARAMETER_OF_CODE: Final = {
    codes.RESPIRATORY_RATE.code: Parameter.RESPIRATION_RATE,
    codes.OXYGEN_SATURATION.code: Parameter.SPO2,
    OXYGEN_SATURATION_ARTERIAL: Parameter.SPO2,
    codes.SUPPLEMENTAL_OXYGEN.code: Parameter.AIR_OR_OXYGEN,
    codes.BLOOD_PRESSURE_PANEL.code: Parameter.SYSTOLIC_BP,
    codes.SYSTOLIC_BP.code: Parameter.SYSTOLIC_BP,
    codes.HEART_RATE.code: Parameter.PULSE,
    codes.CONSCIOUSNESS.code: Parameter.CONSCIOUSNESS,
    codes.BODY_TEMPERATURE.code: Parameter.TEMPERATURE,
}


def _parameter_of(obs: Mapping[str, Any]) -> Parameter | None:
    for code in codes_of(obs.get("code"), codes.LOINC):
        if code in _PARAMETER_OF_CODE:
            return _PARAMETER_OF_CODE[code]
    return None


def _effective(obs: Mapping[str, Any]) -> datetime | None:
    period = obs.get("effectivePeriod")
    candidates = [obs.get("effectiveDateTime"), obs.get("effectiveInstant")]
    if isinstance(period, Mapping):
        candidates += [period.get("end"), period.get("start")]
    candidates.append(obs.get("issued"))
    for candidate in candidates:
        when = parse_datetime(candidate)
        if when is not None:
            return when
    return None


def _quantity(holder: Mapping[str, Any], units: frozenset[str]) -> float | None:
    return quantity_value(holder.get("valueQuantity"), units)


def _value_of(parameter: Parameter, obs: Mapping[str, Any]) -> float | bool | str | None:
    """The usable NEWS2 input in `obs`, or None (no value, unknown unit, bad code)."""
    match parameter:
        case Parameter.RESPIRATION_RATE | Parameter.PULSE:
            return _quantity(obs, _PER_MIN)
        case Parameter.SPO2:
            return _quantity(obs, _PERCENT)
        case Parameter.SYSTOLIC_BP:
            if has_code(obs.get("code"), codes.SYSTOLIC_BP.code, codes.LOINC):
                return _quantity(obs, _MMHG)
            components = obs.get("component")
            for comp in components if isinstance(components, list) else []:
                if isinstance(comp, Mapping) and has_code(comp.get("code"),
                                                          codes.SYSTOLIC_BP.code, codes.LOINC):
                    return _quantity(comp, _MMHG)
            return None
        case Parameter.TEMPERATURE:
            celsius = _quantity(obs, _CELSIUS)
            if celsius is not None:
                return celsius
            fahrenheit = _quantity(obs, _FAHRENHEIT)
            return None if fahrenheit is None else (fahrenheit - 32.0) * 5.0 / 9.0
        case Parameter.AIR_OR_OXYGEN:
            flag = obs.get("valueBoolean")
            if isinstance(flag, bool):
                return flag
            fio2 = _quantity(obs, _PERCENT)  # inspired O2 fraction: room air is 21%
            return None if fio2 is None else fio2 > 21.0
        case Parameter.CONSCIOUSNESS:
            for code in codes_of(obs.get("valueCodeableConcept")):
                if code in codes.CONSCIOUSNESS_LEVELS:
                    return code
            return None
    return None


def _later(
    a: Mapping[str, Any], a_when: datetime | None, b: Mapping[str, Any], b_when: datetime | None
) -> bool:
    """True if observation `a` is more recent than `b` (measured later, else newer version)."""
    if a_when is not None and b_when is not None and a_when != b_when:
        return a_when > b_when
    if (a_when is None) != (b_when is None):
        return a_when is not None
    return is_newer(a.get("meta"), b.get("meta"))


def news2_from_observations(
    observations: Iterable[Mapping[str, Any]], *, spo2_scale: int = 1
) -> News2 | None:
    """NEWS2 from one patient's vital-sign Observations, using the latest of each parameter.

    "Latest" is by effective time (then `issued`, then version). If the latest observation
    of a parameter has no usable value (no value, unknown unit), that parameter is missing:
    an older value is not silently used in its place. None when no vital sign is present.
    """
    latest: dict[Parameter, tuple[Mapping[str, Any], datetime | None]] = {}
    for obs in observations:
        if not isinstance(obs, Mapping) or obs.get("status") not in USABLE_STATUSES:
            continue
        parameter = _parameter_of(obs)
        if parameter is None:
            continue
        when = _effective(obs)
        held = latest.get(parameter)
        if held is None or _later(obs, when, held[0], held[1]):
            latest[parameter] = (obs, when)
    if not latest:
        return None

    found: dict[Parameter, Any] = {p: _value_of(p, obs) for p, (obs, _) in latest.items()}
    values = VitalSignValues(
        respiration_rate=found.get(Parameter.RESPIRATION_RATE),
        spo2=found.get(Parameter.SPO2),
        on_oxygen=found.get(Parameter.AIR_OR_OXYGEN),
        systolic_bp=found.get(Parameter.SYSTOLIC_BP),
        pulse=found.get(Parameter.PULSE),
        consciousness=found.get(Parameter.CONSCIOUSNESS),
        temperature=found.get(Parameter.TEMPERATURE),
    )
    times = [when for p, (_, when) in latest.items() if when is not None and found[p] is not None]
    return news2(values, spo2_scale=spo2_scale, observed_at=min(times, default=None))
