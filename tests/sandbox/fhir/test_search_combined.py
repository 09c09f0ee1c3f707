"""Several search parameters together select exactly what each selects on its own, however
the store plans them (one criterion lists candidates, the others are checked per candidate)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from wardsync.core import codes
from wardsync.sandbox.fhir.store import FhirStore
from wardsync.sandbox.ward.seed import build_ward

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def store() -> FhirStore:
    s = FhirStore(":memory:")
    s.load(build_ward(7, now=NOW))
    return s


def found(store: FhirStore, rtype: str, params: list[tuple[str, str]]) -> set[str]:
    """Every match, over as many pages as it takes."""
    page = store.search(rtype, [*params, ("_count", "500")])
    ids = [m["id"] for m in page.matches]
    while len(ids) < page.total:
        page = store.search(rtype, [*params, ("_count", "500"), ("_offset", str(len(ids))),
                                    ("_snapshot", str(page.snapshot))])
        assert page.matches
        ids += [m["id"] for m in page.matches]
    assert len(ids) == len(set(ids)) == page.total
    return set(ids)


CRITERIA = [
    ("patient", "Patient/pat-03"),
    ("subject", "Patient/pat-05"),
    ("category", "vital-signs"),
    ("category", "laboratory"),
    ("code", f"http://loinc.org|{codes.HEART_RATE.code}"),
    ("code", f"{codes.POTASSIUM.code},{codes.SODIUM.code}"),
    ("date", f"ge{(NOW - timedelta(hours=12)).isoformat()}"),
    ("date", f"lt{(NOW - timedelta(hours=6)).isoformat()}"),
    ("status", "final"),
    ("_lastUpdated", f"le{(datetime.now(UTC) + timedelta(days=1)).isoformat()}"),
]


@pytest.mark.parametrize("combo", [c for n in (2, 3) for c in
                                   itertools.combinations(CRITERIA, n)],
                         ids=lambda combo: "&".join(f"{k}={v[:12]}" for k, v in combo))
def test_observation_criteria_together_are_the_intersection_of_each(
        store: FhirStore, combo: tuple[tuple[str, str], ...]) -> None:
    each = [found(store, "Observation", [c]) for c in combo]
    assert found(store, "Observation", list(combo)) == set.intersection(*each)


def test_the_ward_has_something_to_intersect(store: FhirStore) -> None:
    # The parametrised cases above are only meaningful if most single criteria match.
    assert all(found(store, "Observation", [c]) for c in CRITERIA)
    assert found(store, "Observation", CRITERIA[0:1] + CRITERIA[2:3] + CRITERIA[6:7])
