"""FHIR date/time values: parsed into comparable, timezone-aware datetimes, and instants written.

Ordering resources by `meta.lastUpdated` or vitals by `effectiveDateTime` must compare
instants, never strings: "2024-05-01T10:00:00+02:00" is earlier than
"2024-05-01T09:00:00Z" although it sorts after it as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

# How many fraction digits a written instant carries: none, 3 or 6.
InstantPrecision = Literal["seconds", "milliseconds", "microseconds"]

# FHIR R4 datatypes.html#instant: full precision, timezone mandatory. Seconds may be 60 (leap
# second); fractions may have any number of digits.
_INSTANT = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>0[1-9]|1[0-2])-(?P<d>0[1-9]|[12][0-9]|3[01])"
    r"T(?P<h>[01][0-9]|2[0-3]):(?P<mi>[0-5][0-9]):(?P<s>[0-5][0-9]|60)(?:\.(?P<f>[0-9]+))?"
    r"(?P<tz>Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00)"
)
# FHIR R4 datatypes.html#dateTime: YYYY, YYYY-MM, YYYY-MM-DD, or a full time with a zone.
_PARTIAL_DATE = re.compile(r"(?P<y>[0-9]{4})(?:-(?P<mo>0[1-9]|1[0-2])(?:-(?P<d>[0-9]{2}))?)?")


def _zone(tz: str) -> timezone:
    if tz == "Z":
        return UTC
    sign = 1 if tz[0] == "+" else -1
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_instant(value: object) -> datetime | None:
    """Parse a FHIR `instant` into an aware datetime; None if it is not a valid instant.

    Fractions beyond microseconds are truncated; a leap second (:60) becomes :59.999999 so
    the order with its neighbours is kept.
    """
    if not isinstance(value, str):
        return None
    m = _INSTANT.fullmatch(value)
    if m is None:
        return None
    second = int(m["s"])
    micro = int((m["f"] or "0")[:6].ljust(6, "0"))
    if second == 60:
        second, micro = 59, 999_999
    try:
        return datetime(
            int(m["y"]),
            int(m["mo"]),
            int(m["d"]),
            int(m["h"]),
            int(m["mi"]),
            second,
            micro,
            tzinfo=_zone(m["tz"]),
        )
    except ValueError:  # e.g. 2023-02-30: well formed but not a calendar date
        return None


def instant_seconds(value: object) -> float | None:
    """A FHIR `instant` as epoch seconds; None if it is not a valid instant."""
    moment = parse_instant(value)
    return moment.timestamp() if moment is not None else None


def parse_datetime(value: object) -> datetime | None:
    """Parse a FHIR `dateTime` (possibly partial) into an aware datetime, or None.

    A partial value (year, year-month, date) stands for the start of that period in UTC;
    FHIR gives partial dates no zone (datatypes.html#dateTime), so UTC is a documented choice.
    """
    instant = parse_instant(value)
    if instant is not None or not isinstance(value, str):
        return instant
    m = _PARTIAL_DATE.fullmatch(value)
    if m is None:
        return None
    try:
        return datetime(int(m["y"]), int(m["mo"] or 1), int(m["d"] or 1), tzinfo=UTC)
    except ValueError:
        return None


def effective_time(resource: object) -> datetime | None:
    """When an Observation-like resource was clinically true: the latest of its `effective[x]`
    (dateTime, instant, or a Period's end, else start), or None when it has none parsable."""
    if not isinstance(resource, Mapping):
        return None
    for key in ("effectiveDateTime", "effectiveInstant"):
        moment = parse_datetime(resource.get(key))
        if moment is not None:
            return moment
    period = resource.get("effectivePeriod")
    if isinstance(period, Mapping):
        return parse_datetime(period.get("end")) or parse_datetime(period.get("start"))
    return None


def format_instant(
    moment: datetime | float, precision: InstantPrecision = "microseconds", *, zulu: bool = False,
) -> str:
    """Write a FHIR `instant` (R4 datatypes.html#instant) at `precision`.

    `moment` is an aware datetime (written with its own offset) or epoch seconds (written in
    UTC). `zulu` writes the moment in UTC with the "Z" designator. A naive datetime has no
    place on the time line, so it is refused (ValueError): FHIR instants need a zone.
    Fractions beyond `precision` are truncated, never rounded, so a written instant is never
    later than the moment it stands for.
    """
    if isinstance(moment, datetime):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("FHIR instants need a time zone; pass an aware datetime")
    else:
        moment = datetime.fromtimestamp(moment, UTC)
    if zulu:
        return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=precision) + "Z"
    return moment.isoformat(timespec=precision)
