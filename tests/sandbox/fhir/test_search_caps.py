"""Search caps (search_query.py) and the time limit (search_runner.py): the requests that held
the whole backend for a minute are refused at once; what is allowed is stopped in time."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web
from fhir_testdata import auth, observation, verify_bearer
from hypothesis import given, settings
from hypothesis import strategies as st

from wardsync.sandbox.fhir import FhirApi, FhirStore
from wardsync.sandbox.fhir.errors import InvalidSearch, SearchTooCostly
from wardsync.sandbox.fhir.search_query import (
    MAX_CRITERIA,
    MAX_INCLUDES,
    MAX_PARAMETER_CHARS,
    MAX_PARAMETERS,
    MAX_SORT_KEYS,
    MAX_VALUES,
    MAX_VALUES_PER_CRITERION,
    parse_search,
)

DATE_VALUES = [f"ge20{i % 100:02d}" for i in range(MAX_VALUES_PER_CRITERION)]


def _over_caps() -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        ("sort keys", [("_sort", ",".join(["date"] * 700))]),
        ("sort keys", [("_sort", ",".join(["-date"] * (MAX_SORT_KEYS + 1)))]),
        ("sort keys", [("_sort", "date,-date,date")] * 2),
        ("parameters", [("date", "ge2000")] * 600),
        ("criteria", [("date", "ge2000")] * (MAX_CRITERIA + 1)),
        ("values", [("patient", ",".join(f"Patient/p{i}" for i in range(1000)))]),
        ("values", [("date", ",".join([*DATE_VALUES, "ge2000"]))]),
        ("values", [("date", ",".join(DATE_VALUES))] * 3),
        ("_include", [("_include", "Observation:patient")] * (MAX_INCLUDES + 1)),
        ("parameters", [("unknown", "x")] * (MAX_PARAMETERS + 1)),
        ("characters", [("code", "x" * (MAX_PARAMETER_CHARS + 1))]),
    ]


@pytest.mark.parametrize(("what", "params"), _over_caps())
def test_searches_over_the_caps_are_refused_as_too_costly(what, params):
    with pytest.raises(SearchTooCostly) as refused:
        parse_search("Observation", params)
    assert refused.value.issues[0].code == "too-costly"
    assert what.split()[-1].rstrip("s") in str(refused.value)


def test_the_largest_allowed_search_parses():
    query = parse_search("Observation", [
        ("_sort", ",".join(["date", "-date"] * (MAX_SORT_KEYS // 2))),
        ("date", ",".join(DATE_VALUES)),
        ("patient", ",".join(f"Patient/p{i}" for i in range(
            MAX_VALUES - MAX_VALUES_PER_CRITERION - (MAX_CRITERIA - 2)))),
        *[("status", "final")] * (MAX_CRITERIA - 2),
        *[("_include", "Observation:patient")] * MAX_INCLUDES,
    ])
    assert len(query.sort) == MAX_SORT_KEYS
    assert len(query.criteria) == MAX_CRITERIA
    assert sum(len(c.values) for c in query.criteria) == MAX_VALUES


_NAMES = st.sampled_from(["date", "patient", "code", "status", "_sort", "_include", "_id",
                          "_lastUpdated", "category", "nope", "_count"])
_VALUES = st.one_of(
    st.lists(st.sampled_from(["ge2000", "Patient/p1", "final", "date", "-date", "x", "\\,"]),
             min_size=1, max_size=150).map(",".join),
    st.sampled_from(["Observation:patient", "Observation:encounter", "500"]),
    st.text(max_size=20),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=80))
def test_every_search_either_parses_within_the_caps_or_is_a_clear_400(params):
    try:
        query = parse_search("Observation", params)
    except InvalidSearch as exc:
        assert exc.issues and exc.issues[0].diagnostics
        return
    assert len(query.sort) <= MAX_SORT_KEYS
    assert len(query.criteria) <= MAX_CRITERIA
    assert len(query.includes) <= MAX_INCLUDES
    assert all(len(c.values) <= MAX_VALUES_PER_CRITERION for c in query.criteria)
    assert sum(len(c.values) for c in query.criteria) <= MAX_VALUES


async def _post_search(http: httpx.AsyncClient, params: list[tuple[str, str]]) -> httpx.Response:
    """POST [type]/_search (R4 http.html#search): no URL length limit in the way."""
    return await http.post("/Observation/_search", content=urlencode(params),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})


async def _serve(store: FhirStore, **api_options: float) -> tuple[web.AppRunner, str]:
    app = web.Application()
    FhirApi(store, verify_bearer, **api_options).install(app, "/fhir")
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/fhir"


async def test_over_cap_searches_get_a_400_outcome_over_http(tmp_path: Path):
    store = FhirStore(tmp_path / "fhir.sqlite3")
    runner, base = await _serve(store)
    try:
        async with httpx.AsyncClient(base_url=base, headers=auth("all"), timeout=10) as http:
            for _what, params in _over_caps():
                response = await _post_search(http, params)
                assert response.status_code == 400, response.text
                issue = response.json()["issue"][0]
                assert response.json()["resourceType"] == "OperationOutcome"
                assert issue["code"] == "too-costly"
    finally:
        await runner.cleanup()
        store.close()


async def test_a_search_past_the_time_limit_is_stopped_with_a_503(tmp_path: Path):
    store = FhirStore(tmp_path / "fhir.sqlite3")
    store.load([{**observation(f"p{i % 50}", when=f"2026-01-{1 + i % 28:02d}T09:00:00Z"),
                 "id": f"o{i}"} for i in range(3000)])
    runner, base = await _serve(store, search_time_limit_s=0.01)
    worst = [*[("date", ",".join(f"ne20{i:02d}" for i in range(10)))] * MAX_CRITERIA,
             ("_sort", "date,-date,date,-date"), ("_count", "500")]
    try:
        async with httpx.AsyncClient(base_url=base, headers=auth("all"), timeout=10) as http:
            started = time.monotonic()
            response = await _post_search(http, worst)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.json()["issue"][0]["code"] == "too-costly"
            assert response.headers["Retry-After"] == "5"
            assert elapsed < 2.0
            # The server is not left stuck: an ordinary search still answers.
            ok = await http.get("/Observation", params={"patient": "p1", "_count": "1"})
            assert ok.status_code == 200
    finally:
        await runner.cleanup()
        store.close()
