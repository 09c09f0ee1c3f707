"""The subscription latency benchmark runs end to end in a tiny configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import common, subscription_latency

pytestmark = pytest.mark.slow


async def test_every_write_is_notified_through_both_dialects_and_poked_by_the_relay(
        tmp_path: Path) -> None:
    cfg = subscription_latency.Config(writes=5, interval_s=0.02, settle_s=1.0)
    result = await subscription_latency.run(cfg)
    assert result["writes"] == 5
    assert result["missing"] == {"topic": 0, "classic": 0, "poke": 0}
    for key in ("commit_to_topic_notification_ms", "commit_to_classic_put_ms",
                "commit_to_poke_through_relay_ms"):
        assert result[key]["n"] == 5 and result[key]["min"] > 0  # causal: after the commit
    body = json.loads(common.write_result("subscription_latency", result, tmp_path).read_text())
    assert body["machine"]["cpu_cores"] and body["machine"]["cpu_model"]
