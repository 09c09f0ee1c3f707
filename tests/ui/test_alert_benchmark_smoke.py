"""The alert latency benchmark still runs end to end (a tiny configuration) and its summary
joins every written result to when it became visible, exactly once."""

from __future__ import annotations

import pytest
from benchmarks.alerts_latency import TARGET_P99_MS, Config, measure, summarise
from pytestqt.qtbot import QtBot

from tests.ui.test_alert_ui import garbage_collected_on_the_gui_thread  # noqa: F401 (autouse)

pytestmark = pytest.mark.slow  # the alert latency benchmark end to end


async def test_the_alert_latency_benchmark_measures_every_result(qtbot: QtBot) -> None:
    config = Config(results=3, runs=1, warmup=1, interval_s=0.05, patient_windows=1)
    run = await measure(config)
    assert len(run["samples"]) == 3
    for sample in run["samples"]:
        # Each step happens after the commit and the banner after the alert was raised.
        assert 0 < sample["raised_ms"] <= sample["banner_ms"] < 10_000
        assert sample["poke_received_ms"] is not None
    assert run["alerts_raised_per_version_max"] == 1
    summary = summarise(config, [run])
    assert summary["commit_to_banner_visible_ms"]["n"] == 3
    assert summary["target_p99_ms"] == TARGET_P99_MS
    assert len(summary["slowest"]) == 3 and len(summary["runs"]) == 1
