"""Backoff: exponential, capped, jittered within documented bounds, reproducible."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core.backoff import Backoff, Jitter


def test_without_jitter_the_timeline_is_exact() -> None:
    b = Backoff(0.5, 2.0, 8.0, Jitter.NONE)
    assert [b.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    b = Backoff(1.0, 2.0, 30.0, Jitter.NONE)
    assert b.delay(5000) == 30.0  # 2.0**5000 would overflow a float


def test_factor_one_is_a_constant_delay() -> None:
    b = Backoff(3.0, 1.0, 10.0, Jitter.NONE)
    assert {b.delay(n) for n in range(20)} == {3.0}


def test_seeded_full_jitter_is_reproducible() -> None:
    a = Backoff(1.0, 2.0, 60.0, Jitter.FULL, random.Random(42))
    b = Backoff(1.0, 2.0, 60.0, "full", random.Random(42))
    assert [a.delay(n) for n in range(10)] == [b.delay(n) for n in range(10)]


def test_seeded_full_jitter_matches_the_uniform_draws() -> None:
    b = Backoff(1.0, 2.0, 60.0, Jitter.FULL, random.Random(7))
    reference = random.Random(7)
    expected = [reference.uniform(0, min(60.0, 2.0**n)) for n in range(8)]
    assert [b.delay(n) for n in range(8)] == expected


def test_jitter_spreads_retries() -> None:
    b = Backoff(1.0, 2.0, 60.0, Jitter.FULL, random.Random(1))
    delays = {round(b.delay(5), 6) for _ in range(50)}
    assert len(delays) > 40  # not all workstations come back at the same instant


@given(
    attempt=st.integers(0, 200),
    initial=st.floats(0.01, 10),
    factor=st.floats(1, 4),
    seed=st.integers(0, 2**32),
)
def test_jittered_delays_stay_within_documented_bounds(
    attempt: int, initial: float, factor: float, seed: int
) -> None:
    cap = initial * 50
    base = Backoff(initial, factor, cap, Jitter.NONE).delay(attempt)
    assert initial <= base <= cap
    full = Backoff(initial, factor, cap, Jitter.FULL, random.Random(seed)).delay(attempt)
    equal = Backoff(initial, factor, cap, Jitter.EQUAL, random.Random(seed)).delay(attempt)
    assert 0.0 <= full <= base
    assert base / 2 <= equal <= base


@given(st.integers(0, 100))
def test_base_delay_never_decreases(attempt: int) -> None:
    b = Backoff(0.2, 1.7, 45.0, Jitter.NONE)
    assert b.delay(attempt) <= b.delay(attempt + 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"initial_s": -1.0},
        {"initial_s": float("nan")},
        {"factor": 0.5},
        {"cap_s": 0.1},
        {"cap_s": float("inf")},
        {"jitter": "sometimes"},
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict) -> None:
    args = {"initial_s": 1.0, "factor": 2.0, "cap_s": 30.0, "jitter": Jitter.NONE} | kwargs
    with pytest.raises(ValueError):
        Backoff(**args)


def test_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(1.0).delay(-1)
