"""Every benchmark runs end to end in a tiny configuration, so CI proves they still work.

Real processes, as in a full run: the sandbox (`wardsync sandbox`), the app side
(`benchmarks.app_process`, offscreen Qt when it has windows) and this process writing.
Targets are not asserted here — the benchmarks report them — but everything that must hold
whatever the machine is: each written resource is followed through the whole chain, counts
add up, timings are causal, and the result file names the machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import common, poke_burst, poke_to_render, polling_baseline

pytestmark = pytest.mark.slow  # each benchmark end to end, tens of seconds


def check_result_file(name: str, result: dict, out: Path) -> dict:
    path = common.write_result(name, result, out)
    body = json.loads(path.read_text())
    machine = body["machine"]
    assert machine["cpu_cores"] and machine["cpu_model"] and machine["python"]
    assert machine["os"] and machine["ram_gib"]
    return body


async def test_poke_to_render_follows_every_write_into_every_window(tmp_path: Path) -> None:
    cfg = poke_to_render.Config(windows=2, runs=1, duration_s=1.0, round_interval_s=0.5,
                                patients=4, variants=("app_defaults",), floor_samples=5,
                                warmup_rounds=1, settle_s=1.0)
    result = await poke_to_render.run(cfg)
    [variant] = result["configs"]
    [run] = variant["runs"]
    assert run["resources_written"] == 2 * 7  # two rounds of seven vital signs
    assert run["missing"] == {"poke": 0, "pull": 0, "render": 0}
    assert run["render_samples"] == 2 * 7 * 2  # every resource in both windows
    w2r, w2p, p2r = (run[k] for k in ("write_to_render_ms", "write_to_poke_ms",
                                      "poke_to_render_ms"))
    # Every poke and render comes after its commit (the cross-process join holds), and the
    # app's share is part of the whole. A resource may be shown before its own poke arrives
    # (the pull for a poke of the same round brought it): those renders are counted apart.
    assert w2p["min"] > 0 and w2r["min"] > 0 and p2r["p50"] < w2r["p50"]
    assert p2r["n"] + run["rendered_before_own_poke"] == run["render_samples"]
    # A bare subscriber saw every poke too, no later than the app (same host clock).
    assert run["write_to_poke_bare_subscriber_ms"]["n"] == 2 * 7
    assert run["bare_subscriber_to_app_poke_ms"]["p50"] > -5.0
    assert run["rendered_to_paint_ms"]["n"] > 0  # the windows really painted
    assert run["event_loop"]["tick_gap_ms"]["n"] > 0
    assert "gaps_over_mostly_own_work" in run["event_loop"]
    assert result["fhir_read_floor_ms"]["n"] == 5
    assert set(variant["targets_met"]) == {"p50_le_50_ms", "p99_le_200_ms",
                                           "every_write_rendered_in_every_window"}
    check_result_file("poke_to_render", result, tmp_path)


async def test_poke_burst_counts_requests_and_pulls_per_key(tmp_path: Path) -> None:
    cfg = poke_burst.Config(patients=6, pokes=60, burst_s=0.3, writes=20, runs=1,
                            scenarios=("pokes", "writes"), clients=("headless",),
                            settle_s=1.0)
    result = await poke_burst.run(cfg)
    [pokes] = result["scenarios"]["pokes"]["headless"]["runs"]
    assert pokes["burst"]["pokes"] == 60
    assert pokes["pokes_accepted"] == 60
    assert pokes["pokes_duplicate"] == pokes["seq_gaps"] == pokes["catch_ups"] == 0
    assert pokes["keys_open"] == 1 + 2 * 6  # census, vitals and labs per patient
    assert 0 < pokes["keys_pulled"] <= 2 * 6
    # Each pull of a vitals key is one search, of a labs key two.
    assert pokes["pulls_total"] <= pokes["fhir_requests"] <= 2 * pokes["pulls_total"]
    # Single-flight loops with a debounce: never two pulls of one key inside one window.
    assert pokes["max_pull_starts_of_one_key_in_one_debounce_window"] == 1
    [writes] = result["scenarios"]["writes"]["headless"]["runs"]
    assert writes["burst"]["writes"] >= 20
    assert writes["pokes_accepted"] == writes["burst"]["writes"]
    assert writes["fhir_requests"] > 0
    summary = result["scenarios"]["pokes"]["headless"]["summary"]
    assert summary["runs"] == 1 and set(summary["targets_met"]) == {
        "at_most_one_pull_per_key_per_debounce_window", "no_event_loop_stall_over_100_ms"}
    check_result_file("poke_burst", result, tmp_path)


async def test_polling_baseline_compares_both_clients_on_the_same_writes(
        tmp_path: Path) -> None:
    cfg = polling_baseline.Config(patients=4, polling_interval_s=1.0, idle_s=1.5,
                                  duration_s=2.0, write_interval_s=1.0, runs=1, settle_s=0.5)
    result = await polling_baseline.run(cfg)
    realtime, polling = result["pooled"]["realtime"], result["pooled"]["polling"]
    assert realtime["never_arrived"] == polling["never_arrived"] == 0
    assert realtime["staleness_s"]["n"] == polling["staleness_s"]["n"] > 0
    assert realtime["staleness_s"]["min"] > 0 and polling["staleness_s"]["min"] > 0
    # Idle, a realtime client asks nothing; a polling client asks for every key each poll.
    assert realtime["fhir_requests_per_min_idle"]["mean"] == 0
    assert polling["fhir_requests_per_min_idle"]["mean"] > 0
    assert result["runs"][0]["polling"]["polls"] >= 2
    assert result["ratios"]["requests_per_min_idle_polling_minus_realtime"] > 0
    check_result_file("polling_baseline", result, tmp_path)
