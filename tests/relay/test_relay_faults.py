"""The relay through faults of what it depends on: the FHIR server failing (the poll retries
from the same cursor and misses nothing) and the hub down (pokes wait on disk and go out when
it returns; token exchange answers 503)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.relay.relay_fixtures import clinician_session, relay_config, running_relay, scrape
from tests.waiting import wait_for
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # real servers and processes, seconds each

LAB = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory"}]}]


def _lactate(patient: str) -> dict:
    return {
        "resourceType": "Observation", "status": "final", "category": LAB,
        "code": {"coding": [{"system": "http://loinc.org", "code": "2524-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 1.3, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                          "code": "mmol/L"},
    }


async def test_a_failing_fhir_server_delays_but_loses_nothing(ward: Sandbox, tmp_path: Path):
    config = relay_config(ward, tmp_path, tmp_path / "relay", types=["Observation"])
    async with running_relay(config) as relay, httpx.AsyncClient() as http:
        url = relay.ready_info()["metrics_url"]
        await wait_for(lambda: relay.reconciler.rounds >= 1, 10, "first round")
        ward.faults.fail(503, for_s=60)
        stored = ward.store.create(_lactate("pat-01"))  # committed while the API fails
        ref = f"Observation/{stored['id']}"
        failed = await scrape(http, url, "wardsync_relay_reconcile_rounds_total",
                              outcome="failed")
        await wait_for(lambda: relay.reconciler.rounds >= 4, 10, "rounds during the fault")
        assert await scrape(http, url, "wardsync_relay_reconcile_rounds_total",
                            outcome="failed") >= failed + 2
        assert not relay.state.has_version(ref, "1")
        # Said in words an IT engineer reads on /readyz (after its limit) and in the log.
        assert relay.reconciler.last_error == (
            "the FHIR server answered HTTP 503 to the Observation search")
        ward.faults.clear()
        await wait_for(lambda: relay.state.has_version(ref, "1"), 10, "found after recovery")
        # The round that found it clears the error when it ends.
        await wait_for(lambda: relay.reconciler.last_error is None
                       and relay.reconciler.failed_in_a_row == 0, 10, "a clean round")
        await wait_for(lambda: relay.publisher.pending == 0, 10, "published")


async def test_pokes_wait_for_the_hub_and_token_exchange_says_503(
    ward: Sandbox, tmp_path: Path
):
    config = relay_config(ward, tmp_path, tmp_path / "relay", types=["Observation"])
    async with running_relay(config) as relay, httpx.AsyncClient(timeout=10) as http:
        session = await clinician_session(ward, http)
        try:
            await wait_for(lambda: relay.reconciler.rounds >= 1, 10, "first round")
            await wait_for(lambda: relay.publisher.pending == 0, 10, "start-up pokes out")
            port = ward.hub.port
            await ward.hub.stop()
            token_url = relay.ready_info()["token_url"]
            refused = await http.post(token_url, headers={
                "Authorization": f"Bearer {await session.access_token()}"})
            assert refused.status_code == 503
            assert refused.json() == {"error": "temporarily_unavailable"}
            stored = ward.store.create(_lactate("pat-02"))
            ref = f"Observation/{stored['id']}"
            await wait_for(lambda: relay.state.has_version(ref, "1"), 10, "numbered")
            await wait_for(lambda: relay.publisher.pending >= 1, 10, "pending")
            await ward.hub.start(ward.config.host, port)
            await wait_for(lambda: relay.publisher.pending == 0, 20, "published after restart")
            ok = await http.post(token_url, headers={
                "Authorization": f"Bearer {await session.access_token()}"})
            assert ok.status_code == 200
            assert await scrape(http, relay.ready_info()["metrics_url"],
                                "wardsync_relay_publish_failures_total") >= 1
        finally:
            await session.aclose()
