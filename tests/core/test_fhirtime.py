"""FHIR instants and dateTimes compare as points in time, not as text."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardsync.core.fhirtime import effective_time, format_instant, parse_datetime, parse_instant


def test_offsets_are_honoured() -> None:
    plus_two = parse_instant("2024-05-01T10:00:00+02:00")
    zulu = parse_instant("2024-05-01T09:00:00Z")
    assert plus_two is not None and zulu is not None
    assert plus_two < zulu  # 08:00Z < 09:00Z although the text sorts the other way


def test_fractions_are_kept_to_microseconds() -> None:
    a = parse_instant("2024-05-01T10:00:00.1234567Z")
    b = parse_instant("2024-05-01T10:00:00.123457Z")
    assert a == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert a is not None and b is not None and a < b


def test_leap_second_sorts_between_neighbours() -> None:
    leap = parse_instant("2016-12-31T23:59:60Z")
    assert leap is not None
    assert parse_instant("2016-12-31T23:59:59.5Z") < leap < parse_instant("2017-01-01T00:00:00Z")  # type: ignore[operator]


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T10:00:00",  # an instant needs a zone
        "2024-05-01",
        "2024-02-30T10:00:00Z",  # not a calendar date
        "2024-05-01T10:00:00Z\n",
        " 2024-05-01T10:00:00Z",
        "2024-05-01T24:00:00Z",
        "",
    ],
)
def test_invalid_instants_are_none(text: str) -> None:
    assert parse_instant(text) is None


def test_non_strings_are_none() -> None:
    assert parse_instant(None) is None
    assert parse_instant(1714557600) is None
    assert parse_datetime(["2024"]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-07", datetime(2024, 5, 7, tzinfo=UTC)),
        ("2024-05-07T08:30:00+01:00", datetime(2024, 5, 7, 7, 30, tzinfo=UTC)),
    ],
)
def test_partial_datetimes_start_their_period(text: str, expected: datetime) -> None:
    assert parse_datetime(text) == expected


@pytest.mark.parametrize("text", ["2024-13", "2024-02-30", "24-05-01", "2024-05-07T08:30:00"])
def test_invalid_datetimes_are_none(text: str) -> None:
    assert parse_datetime(text) is None


@pytest.mark.parametrize(("resource", "expected"), [
    ({"effectiveDateTime": "2026-03-01T10:00:00+01:00"}, datetime(2026, 3, 1, 9, tzinfo=UTC)),
    ({"effectiveInstant": "2026-03-01T10:00:00Z"}, datetime(2026, 3, 1, 10, tzinfo=UTC)),
    ({"effectivePeriod": {"start": "2026-03-01T08:00:00Z", "end": "2026-03-01T09:30:00Z"}},
     datetime(2026, 3, 1, 9, 30, tzinfo=UTC)),
    ({"effectivePeriod": {"start": "2026-03-01"}}, datetime(2026, 3, 1, tzinfo=UTC)),
    ({"effectiveDateTime": "yesterday"}, None),
    ({"issued": "2026-03-01T10:00:00Z"}, None),  # not when it was true: not used
    ("not a resource", None),
])
def test_effective_time_is_when_an_observation_was_true(resource, expected) -> None:
    assert effective_time(resource) == expected


# ---------------------------------------------------------------- writing instants

PRECISION_US = {"seconds": 1_000_000, "milliseconds": 1_000, "microseconds": 1}
aware_moments = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)),
                               timezone(-timedelta(hours=9, minutes=30))]),
)


def _truncated(moment: datetime, precision: str) -> datetime:
    step = PRECISION_US[precision]
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % step)


@settings(max_examples=300)
@given(aware_moments, st.sampled_from(sorted(PRECISION_US)), st.booleans())
def test_instant_round_trip_at_every_precision(moment: datetime, precision: str,
                                               zulu: bool) -> None:
    text = format_instant(moment, precision, zulu=zulu)  # type: ignore[arg-type]
    assert parse_instant(text) == _truncated(moment, precision)
    assert text.endswith("Z") == zulu
    fraction = re.search(r"T[0-9:]{8}(\.[0-9]+)?", text)[1] or "."  # type: ignore[index]
    assert len(fraction) - 1 == {"seconds": 0, "milliseconds": 3, "microseconds": 6}[precision]


@given(st.integers(min_value=0, max_value=7_258_118_400), st.sampled_from(sorted(PRECISION_US)))
def test_epoch_seconds_are_written_in_utc(epoch_s: int, precision: str) -> None:
    text = format_instant(float(epoch_s), precision)  # type: ignore[arg-type]
    assert text.endswith("+00:00")
    assert parse_instant(text) == datetime.fromtimestamp(epoch_s, UTC)


def test_instant_formats() -> None:
    moment = datetime(2026, 1, 1, 10, 0, 8, 500_123, tzinfo=UTC)
    assert format_instant(moment) == "2026-01-01T10:00:08.500123+00:00"
    assert format_instant(moment, "milliseconds") == "2026-01-01T10:00:08.500+00:00"
    assert format_instant(moment, "seconds", zulu=True) == "2026-01-01T10:00:08Z"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert format_instant(plus_two, "seconds") == "2026-01-01T12:00:08+02:00"
    assert format_instant(plus_two, "seconds", zulu=True) == "2026-01-01T10:00:08Z"
    with pytest.raises(ValueError, match="time zone"):
        format_instant(datetime(2026, 1, 1, 10, 0))
