"""The load benchmark and the soak run end to end in tiny configurations (seconds, not minutes).

Real processes as in a full run: the sandbox, station hosts with real headless workstations
(or the app with its 8 windows, offscreen), and this process writing. Targets are not
asserted — the benchmarks report them — but what must hold on any machine: every write is
followed into every workstation, nothing is lost, the baseline really polls, the soak's
windows end equal to the server, and the result file names the machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import common, load_ward, soak

pytestmark = pytest.mark.slow  # each benchmark end to end, tens of seconds


def check_result_file(name: str, result: dict, out: Path) -> dict:
    body = json.loads(common.write_result(name, result, out).read_text())
    machine = body["machine"]
    assert machine["cpu_cores"] and machine["cpu_model"] and machine["python"]
    assert machine["loadavg_at_start"] and machine["loadavg_at_end"]
    return body


async def test_load_ward_follows_every_write_into_every_workstation(tmp_path: Path) -> None:
    cfg = load_ward.Config(stations=(3,), processes=2, rate_per_s=10.0, duration_s=3.0,
                           idle_s=1.0, warmup_s=0.5, polling_interval_s=1.0, patients=4)
    result = await load_ward.run(cfg)
    [level] = result["levels"]
    written = level["writes"]["resources"]
    assert written >= 20 and not level["writes"]["failures"]
    # Every written version reached all three stores, through a poke each.
    assert level["poke_to_fresh_s"]["n"] == 3 * written
    assert level["never_fresh"] == 0 and level["stations_mismatched_at_end"] == 0
    assert level["pokes_accepted"] == level["pokes_expected"] == 3 * written
    assert level["stations_not_live"] == 0 and level["seq_gaps"] == 0
    assert 0 < level["pulls_per_poke"] <= 2.0
    assert level["commit_to_poke_bare_subscriber_ms"]["n"] == written
    assert level["poke_to_fresh_s"]["min"] > 0  # causal: the store after the commit
    assert sum(k["searches"] for k in level["searches_by_kind"].values()) > 0
    sandbox = level["resources"][load_ward.SANDBOX]
    assert sandbox["cpu_percent_of_one_core"] > 0 and sandbox["rss_mib"]["max"] > 10
    assert level["resources"]["machine"]["cores"] == os.cpu_count()
    assert set(level["sustained"]) == {"p99_poke_to_fresh_le_1s", "no_lost_update",
                                       "every_station_stayed_live", "writer_kept_rate"}
    # The baseline: the same writes, workstations polling instead of following pokes.
    polling = result["baseline"]["polling"]
    assert polling["mode"] == "polling" and polling["stations"] == 3
    assert polling["never_fresh"] == 0 and polling["stations_mismatched_at_end"] == 0
    assert polling["pokes_accepted"] == 0 and polling["polls"] >= 3
    # Idle, the realtime client asks nothing; the polling one asks for every query each poll.
    assert level["fhir_requests_per_min_idle"] == 0
    assert polling["fhir_requests_per_min_idle"] > 0
    assert polling["poke_to_fresh_s"]["mean"] > level["poke_to_fresh_s"]["mean"]
    assert result["baseline"]["ratios"]["mean_staleness_polling_over_realtime"] > 1
    check_result_file("load_ward", result, tmp_path)


async def test_soak_keeps_eight_windows_fresh_and_samples_memory(tmp_path: Path) -> None:
    cfg = soak.Config(duration_s=20.0, warmup_s=5.0, sample_s=1.0, ack_interval_s=4.0,
                      progress_s=10.0, results_per_min=40.0, vitals_per_min=60.0,
                      critical_probability=0.5)
    result = await soak.run(cfg)
    assert len(result["windows"]) == soak.WINDOW_COUNT
    kinds = {w["kind"] for w in result["fresh_at_end"]["windows"]}
    assert kinds == {"ward", "chart", "report", "alerts", "diagnostics"}
    fresh = result["fresh_at_end"]
    assert fresh["all_windows_equal_server"], fresh["windows"]
    assert all(w["refs"] > 0 for w in fresh["windows"] if w["kind"] != "diagnostics")
    assert all(w["connection"].startswith("● Live") for w in fresh["windows"])
    assert all(r["shown_at_an_older_version"] == 0
               for r in fresh["rendered_versus_server"].values())
    traffic = result["traffic"]
    assert traffic["pokes_accepted_by_app"] > 20 and traffic["seq_gaps"] == 0
    assert traffic["alerts_acknowledged"] > 0  # the clinician acknowledged criticals
    memory = result["memory"]["after_warmup"]
    assert memory["samples"] >= 10 and memory["rss_mib_growth"] is not None
    assert memory["store_resources"]["at_end"] > memory["store_resources"]["at_start"]
    loop = result["event_loop"]
    assert loop["tick_gap_ms"]["n"] > 500 and loop["max_gap_ms"] >= 10.0
    assert "gc_ms_inside_long_gaps" in loop
    assert result["resources"]["app"]["cpu_percent_of_one_core"] > 0
    check_result_file("soak", result, tmp_path)
