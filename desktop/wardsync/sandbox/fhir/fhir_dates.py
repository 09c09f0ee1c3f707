"""FHIR date, dateTime and instant values as ranges of epoch microseconds.

A FHIR date-like value with partial precision stands for the whole interval it names
("2024-03" is all of March), which is how search compares them (R4 search.html#date). Ranges
here are inclusive at both ends, in integer microseconds since 1970-01-01T00:00:00Z, so the
instants the server stamps (microsecond precision) compare exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

from wardsync.core import fhirtime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
# Smallest and largest representable microsecond, used for open period ends.
MIN_US = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // _ONE_US
MAX_US = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // _ONE_US

# R4 datatypes.html#dateTime, widened for search (minutes without seconds are allowed there).
_DATE_LIKE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


@dataclass(frozen=True, slots=True)
class MicroRange:
    """An inclusive interval [low, high] of epoch microseconds."""

    low: int
    high: int


def parse_date_range(text: str) -> MicroRange | None:
    """The interval a FHIR date/dateTime/instant covers, or None if `text` is not one.

    A time without a zone is taken as UTC (R4 leaves it to the server); so is a bare date.
    """
    m = _DATE_LIKE.match(text)
    if not m:
        return None
    year = int(m["y"])
    month = int(m["m"] or 1)
    day = int(m["d"] or 1)
    hour = int(m["H"] or 0)
    minute = int(m["M"] or 0)
    second = int(m["S"] or 0)
    frac = m["f"] or ""
    tz = _zone(m["tz"])
    if tz is None:
        return None
    micro = int((frac + "000000")[:6])
    try:
        start = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        if m["f"] is not None:
            # More than six digits are beyond what we store: treat as microsecond precision.
            width = timedelta(microseconds=10 ** (6 - min(len(frac), 6)))
        elif m["S"] is not None:
            width = timedelta(seconds=1)
        elif m["M"] is not None:
            width = timedelta(minutes=1)
        elif m["d"] is not None:
            width = timedelta(days=1)
        elif m["m"] is not None:
            width = _month_after(start) - start
        else:
            width = start.replace(year=year + 1) - start
        low = (start - _EPOCH) // _ONE_US
    except (ValueError, OverflowError):
        return None
    return MicroRange(low, low + width // _ONE_US - 1)


def _zone(text: str | None) -> timezone | None:
    if text is None or text == "Z":
        return UTC
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        return None
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if text[0] == "-" else offset)


def _month_after(start: datetime) -> datetime:
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def format_instant(epoch_us: int) -> str:
    """The server's `meta.lastUpdated` stamp: microseconds, UTC as "Z" (e.g.
    `2026-11-02T09:15:00.000001Z`), so stamps compare exactly with the search ranges here."""
    return fhirtime.format_instant(_EPOCH + timedelta(microseconds=epoch_us), "microseconds",
                                   zulu=True)


def http_date(epoch_us: int) -> str:
    """An HTTP date (RFC 9110 §5.6.7 IMF-fixdate) for `Last-Modified`, whole seconds."""
    moment = _EPOCH + timedelta(microseconds=epoch_us)
    return format_datetime(moment.replace(microsecond=0), usegmt=True)
