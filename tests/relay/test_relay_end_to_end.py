"""End to end on loopback: lab result written through the lab client -> the relay's
reconciliation poll -> one poke per version through the real hub -> a real ably subscriber
holding a relay-minted token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.relay.relay_fixtures import (
    clinician_session,
    poke_watcher,
    relay_config,
    running_relay,
)
from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # real servers and processes, seconds each

NORMAL_LYTES = {
    codes.SODIUM.code: 139.0, codes.POTASSIUM.code: 4.1, codes.UREA.code: 5.2,
    codes.CREATININE.code: 80.0, codes.GLUCOSE.code: 5.5,
}
CRITICAL_LYTES = {**NORMAL_LYTES, codes.POTASSIUM.code: 6.9}


async def test_a_lab_result_becomes_one_poke_per_version(ward: Sandbox, tmp_path: Path):
    config = relay_config(ward, tmp_path, tmp_path / "relay")
    async with httpx.AsyncClient(timeout=10) as http, running_relay(config) as relay:
        session = await clinician_session(ward, http)
        try:
            async with poke_watcher(ward, session, http, relay.ready_info()["token_url"]) as w:
                await wait_for(lambda: w.client.connection.state == "connected", 10)
                report, observations = await ward.lab.post_panel(
                    "pat-03", codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
                expected = {(f"DiagnosticReport/{report['id']}", "1")} | {
                    (f"Observation/{o['id']}", "1") for o in observations}
                await wait_for(lambda: expected <= set(w.per_version()), 15, "every poke")
                # Let several more poll rounds pass: nothing is poked twice.
                rounds = relay.reconciler.rounds
                await wait_for(lambda: relay.reconciler.rounds >= rounds + 3, 10, "3 rounds")
                assert all(n == 1 for n in w.per_version().values()), w.per_version()
                # Contiguous from the first poke this subscriber saw (the start-up round may
                # have announced recent seed writes before it attached).
                first = w.seqs()[0]
                assert w.seqs() == list(range(first, first + len(w.pokes)))
                by_ref = {f"{p['resourceType']}/{p['id']}": p for p in w.pokes}
                poke = by_ref[f"DiagnosticReport/{report['id']}"]
                assert poke["type"] == "CRITICAL_LAB_RESULT" and poke["priority"] == "urgent"
                assert poke["patientId"] == "pat-03"
                obs = by_ref[f"Observation/{observations[0]['id']}"]
                assert (obs["type"], obs["priority"]) == ("LAB_RESULT_READY", "routine")
                metrics = (await http.get(relay.ready_info()["metrics_url"])).text
                assert 'wardsync_relay_pokes_published_total{type="CRITICAL_LAB_RESULT"} 1.0' \
                    in metrics
                assert 'wardsync_relay_token_exchanges_total{outcome="issued"}' in metrics
        finally:
            await session.aclose()
