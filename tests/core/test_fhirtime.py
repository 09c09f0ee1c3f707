"""FHIR instants and dateTimes compare as points in time, not as text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wardsync.core.fhirtime import effective_time, parse_datetime, parse_instant


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
