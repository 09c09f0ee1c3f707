"""Vital-sign trend series for the patient chart, from Observations (plain Python, no Qt).

One series per measurement (FHIR R4 vital signs profile codes), blood pressure as systolic and
diastolic components, and the NEWS2 total of each round of observations (RCP NEWS2, 2017):
a round is the set of Observations measured at the same moment, scored on its own so an
older reading is never carried into a later score. Points are (epoch milliseconds, value),
sorted by time, within `TREND_WINDOW_H` of the latest reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from wardsync.core import codes
from wardsync.core.news2 import (
    OXYGEN_SATURATION_ARTERIAL,
    USABLE_STATUSES,
    RiskBand,
    news2_from_observations,
)
from wardsync.core.resources import quantity_value
from wardsync.viewmodels.clinical_text import concept_codes, format_number, ref_of, version_of, when

Resource = Mapping[str, Any]
Point = tuple[float, float]

TREND_WINDOW_H = 24.0  # hours of history the charts show, ending at the latest reading
BAND_WORDS = {RiskBand.LOW: "low", RiskBand.LOW_MEDIUM: "low-medium (red score)",
              RiskBand.MEDIUM: "medium", RiskBand.HIGH: "high"}


@dataclass(frozen=True)
class TrendSpec:
    """One chart: its key, title, unit shown and the usual y range (widened to fit data)."""

    key: str
    title: str
    unit: str
    series: tuple[str, ...]
    y_range: tuple[float, float]


TRENDS: tuple[TrendSpec, ...] = (
    TrendSpec("hr", "Heart rate", "/min", ("Heart rate",), (40, 140)),
    TrendSpec("rr", "Respiratory rate", "/min", ("Respiratory rate",), (5, 35)),
    TrendSpec("spo2", "SpO₂", "%", ("SpO₂",), (85, 100)),
    TrendSpec("temp", "Temperature", "°C", ("Temperature",), (35, 40)),
    TrendSpec("bp", "Blood pressure", "mmHg", ("Systolic", "Diastolic"), (40, 200)),
    TrendSpec("news2", "NEWS2 total", "", ("NEWS2",), (0, 12)),
)
TRENDS_BY_KEY = {t.key: t for t in TRENDS}

_SIMPLE: dict[str, tuple[str, frozenset[str]]] = {
    codes.HEART_RATE.code: ("hr", frozenset({"/min", "{beats}/min"})),
    codes.RESPIRATORY_RATE.code: ("rr", frozenset({"/min", "{breaths}/min"})),
    codes.OXYGEN_SATURATION.code: ("spo2", frozenset({"%"})),
    OXYGEN_SATURATION_ARTERIAL: ("spo2", frozenset({"%"})),
    codes.BODY_TEMPERATURE.code: ("temp", frozenset({"Cel", "°C"})),
}
_FAHRENHEIT = frozenset({"[degF]", "°F"})


@dataclass(frozen=True)
class Trend:
    """The data of one chart; `latest` is the newest value as text ("88 /min")."""

    spec: TrendSpec
    series: tuple[tuple[Point, ...], ...]
    latest: str = ""
    latest_at_ms: float | None = None

    @property
    def points(self) -> int:
        return sum(len(s) for s in self.series)


@dataclass(frozen=True)
class VitalTrends:
    """All charts of one patient, and every Observation version they plot."""

    trends: dict[str, Trend]
    shown: dict[str, str] = field(default_factory=dict, compare=False)
    start_ms: float | None = None
    end_ms: float | None = None


def _ms(moment: datetime) -> float:
    return moment.timestamp() * 1000.0


def _readings(obs: Resource) -> list[tuple[str, int, float]]:
    """(trend key, series index, value) of one Observation."""
    loinc = concept_codes(obs.get("code"), codes.LOINC)
    out: list[tuple[str, int, float]] = []
    for code in loinc:
        if code in _SIMPLE:
            key, units = _SIMPLE[code]
            value = quantity_value(obs.get("valueQuantity"), units)
            if value is None and key == "temp":
                f = quantity_value(obs.get("valueQuantity"), _FAHRENHEIT)
                value = None if f is None else round((f - 32.0) * 5.0 / 9.0, 1)
            if value is not None:
                out.append((key, 0, value))
            return out
        if code == codes.BLOOD_PRESSURE_PANEL.code:
            for comp in obs.get("component") or ():
                if not isinstance(comp, Mapping):
                    continue
                comp_codes = concept_codes(comp.get("code"), codes.LOINC)
                index = (0 if codes.SYSTOLIC_BP.code in comp_codes
                         else 1 if codes.DIASTOLIC_BP.code in comp_codes else None)
                value = quantity_value(comp.get("valueQuantity"), frozenset({"mm[Hg]", "mmHg"}))
                if index is not None and value is not None:
                    out.append(("bp", index, value))
            return out
    return out


def _latest_text(spec: TrendSpec, series: list[list[Point]]) -> tuple[str, float | None]:
    if spec.key == "bp":
        if not series[0]:
            return "", None
        t, sys_v = series[0][-1]
        dia = next((v for tt, v in reversed(series[1]) if tt == t), None)
        shown = f"{format_number(sys_v)}/{format_number(dia) if dia is not None else '—'}"
        return f"{shown} {spec.unit}", t
    if not series[0]:
        return "", None
    t, value = series[0][-1]
    return f"{format_number(value)} {spec.unit}".strip(), t


def vital_trends(observations: Iterable[Resource], *, window_h: float = TREND_WINDOW_H
                 ) -> VitalTrends:
    """The chart data of one patient's vital-sign Observations."""
    usable = []
    for obs in observations:
        if not isinstance(obs, Mapping) or obs.get("status") not in USABLE_STATUSES:
            continue
        moment = when(obs.get("effectiveDateTime")) or when(obs.get("effectiveInstant"))
        if moment is not None:
            usable.append((moment, obs))
    if not usable:
        return VitalTrends({s.key: Trend(s, tuple(() for _ in s.series)) for s in TRENDS})
    end = max(m for m, _ in usable)
    start = end - timedelta(hours=window_h)
    in_window = [(m, o) for m, o in usable if m >= start]

    data: dict[str, list[list[Point]]] = {s.key: [[] for _ in s.series] for s in TRENDS}
    shown: dict[str, str] = {}
    rounds: dict[datetime, list[Resource]] = {}
    for moment, obs in in_window:
        readings = _readings(obs)
        for key, index, value in readings:
            data[key][index].append((_ms(moment), value))
        rounds.setdefault(moment, []).append(obs)
        if readings:
            shown[ref_of(obs)] = version_of(obs)
    news_band = ""
    for moment in sorted(rounds):
        score = news2_from_observations(rounds[moment])
        if score is not None and score.total is not None:
            data["news2"][0].append((_ms(moment), float(score.total)))
            news_band = BAND_WORDS.get(score.band, "") if score.band else ""
            for obs in rounds[moment]:
                shown[ref_of(obs)] = version_of(obs)

    trends: dict[str, Trend] = {}
    for spec in TRENDS:
        series = [sorted(s) for s in data[spec.key]]
        latest, at = _latest_text(spec, series)
        if spec.key == "news2" and latest and news_band:
            latest = f"{latest} ({news_band} risk)"
        trends[spec.key] = Trend(spec, tuple(tuple(s) for s in series), latest, at)
    return VitalTrends(trends, shown, _ms(start), _ms(end))


def format_clock(ms: float | None, tz: tzinfo | None = None) -> str:
    """"14:05" for a point's time in the workstation's zone."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000.0, tz).strftime("%H:%M")
