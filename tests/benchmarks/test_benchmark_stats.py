"""The benchmarks' arithmetic: percentiles, stalls, pull windows, request-to-key mapping."""

from __future__ import annotations

import math

from benchmarks import common, poke_burst

MS = 1_000_000


def test_percentiles_interpolate_between_ranks() -> None:
    data = [float(x) for x in range(1, 101)]  # 1..100
    assert common.percentile(data, 50) == 50.5
    assert common.percentile(data, 99) == 99.01
    assert common.percentile([7.0], 95) == 7.0
    assert math.isnan(common.percentile([], 50))
    d = common.distribution([3.0, 1.0, 2.0])
    assert (d["n"], d["p50"], d["min"], d["max"], d["mean"]) == (3, 2.0, 1.0, 3.0, 2.0)
    assert common.distribution([]) == {"n": 0}
    assert common.ratio(3, 2) == 1.5 and common.ratio(1, 0) is None


def test_loop_stalls_are_gaps_between_heartbeat_ticks_in_the_window() -> None:
    ticks = [0, 10 * MS, 20 * MS, 150 * MS, 160 * MS, 400 * MS]
    s = common.loop_stalls(ticks, start_ns=5 * MS, end_ns=200 * MS)
    assert s["max_gap_ms"] == 130.0  # 20 -> 150 ms; the 240 ms gap ends outside the window
    assert s["gaps_over"] == 1
    assert s["tick_gap_ms"]["n"] == 4


def test_pull_starts_per_debounce_window_slide() -> None:
    assert poke_burst.max_in_window([0, 60 * MS, 120 * MS], 50 * MS) == 1
    assert poke_burst.max_in_window([0, 30 * MS, 120 * MS], 50 * MS) == 2
    assert poke_burst.max_in_window([], 50 * MS) == 0


def test_requests_map_to_the_keys_that_sent_them() -> None:
    key = poke_burst.key_of_request
    vitals = "patient=Patient%2Fpat-03&category=vital-signs&_count=200"
    reports = "patient=Patient%2Fpat-03&_include=DiagnosticReport%3Aresult"
    results = "patient=Patient%2Fpat-03&category=laboratory"
    assert key("/fhir/Observation", vitals) == ("vitals Patient/pat-03", True)
    assert key("/fhir/DiagnosticReport", reports) == ("labs Patient/pat-03", True)
    assert key("/fhir/Observation", results) == ("labs Patient/pat-03", False)
    assert key("/fhir/Location", "partof=Location%2Fward-a") == ("census", True)
    assert key("/fhir/metadata", "") is None


def test_an_observation_poke_touches_vitals_and_labs_keys() -> None:
    target = poke_burst.Target
    plan = [target("Observation", "o1", "1", "pat-01", "RESOURCE_CHANGED"),
            target("DiagnosticReport", "r1", "1", "pat-01", "LAB_RESULT_READY")]
    assert poke_burst.touched_keys(plan) == {"vitals Patient/pat-01": 1, "labs Patient/pat-01": 2}


def test_long_gaps_are_split_into_own_work_preemption_and_garbage_collection() -> None:
    ticks = [0, 10 * MS, 160 * MS, 170 * MS, 320 * MS]
    cpu = [0, 10 * MS, 150 * MS, 160 * MS, 170 * MS]  # busy in the first gap, not the second
    gc = [(20 * MS, 90 * MS, 2), (200 * MS, 2 * MS, 0)]
    s = common.loop_stalls(ticks, cpu=cpu, gc_pauses=gc)
    assert s["gaps_over"] == 2
    assert s["gaps_over_mostly_own_work"] == 1
    assert s["gc_ms_inside_long_gaps"] == [90.0, 2.0]
    assert s["gc_pause_ms"]["n"] == 2 and s["gc_pause_ms"]["max"] == 90.0
