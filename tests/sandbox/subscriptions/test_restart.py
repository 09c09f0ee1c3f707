"""Pending deliveries, event counters and the matcher's cursor survive a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
from subs_bed import TEST_POLICY, Endpoint, observation, start_bed, stop_bed, subscription, until

from tests.sandbox_fixtures import running_sandbox
from wardsync.core.timer import FakeTimer
from wardsync.sandbox.fhir import FhirStore
from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionLedger
from wardsync.sandbox.server import Sandbox, SandboxConfig


async def test_restart_keeps_pending_events_numbers_and_cursor(tmp_path: Path,
                                                              endpoint: Endpoint) -> None:
    timer = FakeTimer(wall=1_800_000_000.0)
    store = FhirStore(tmp_path / "fhir.sqlite3")
    ledger = SubscriptionLedger(tmp_path / "subscriptions.sqlite3")
    bed = await start_bed(store, ledger, timer, policy=TEST_POLICY)
    sub_id = await bed.subscribe(subscription(endpoint.url))
    await until(lambda: bed.service.spec(sub_id).status == "active", timer)  # type: ignore[union-attr]
    endpoint.status = 503
    for _ in range(3):
        await bed.write_observation()
    await until(lambda: ledger.counters(sub_id).events == 3, timer)
    await stop_bed(bed)
    # Written while the subscription service is down: matched after the restart.
    store.create(observation("p9"))
    store.close()
    ledger.close()

    endpoint.status = 200
    store = FhirStore(tmp_path / "fhir.sqlite3")
    ledger = SubscriptionLedger(tmp_path / "subscriptions.sqlite3")
    bed = await start_bed(store, ledger, FakeTimer(wall=1_800_000_100.0), policy=TEST_POLICY)
    try:
        await until(lambda: endpoint.event_numbers() == [1, 2, 3, 4], bed.timer)
        await bed.write_observation()
        await until(lambda: endpoint.event_numbers() == [1, 2, 3, 4, 5], bed.timer)
        assert ledger.counters(sub_id).events == 5
        assert ledger.cursor() == store.last_seq()
    finally:
        await stop_bed(bed)
        store.close()
        ledger.close()


async def test_sandbox_restart_with_data_dir_delivers_what_was_pending(
        seeded_data_dir: Path, tmp_path: Path, endpoint: Endpoint) -> None:
    async with running_sandbox(seeded_data_dir, tmp_path, relay=False) as sandbox, \
            httpx.AsyncClient(timeout=10.0) as http:
        data_dir = sandbox.data_dir
        info = sandbox.ready_info()

        async def token(client: dict[str, str], scope: str) -> dict[str, str]:
            r = await http.post(sandbox.token_url, auth=(client["client_id"],
                                                         client["client_secret"]),
                                data={"grant_type": "client_credentials", "scope": scope})
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        auth = await token(info["relay_client"], "system/Subscription.cruds")
        lab = await token(info["lab_client"], "system/Observation.cru")
        r = await http.post(f"{sandbox.fhir_base}/Subscription",
                            json=subscription(endpoint.url), headers=auth)
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]
        await until(lambda: bool(endpoint.bundles("handshake")))
        endpoint.status = 503
        for _ in range(2):
            r = await http.post(f"{sandbox.fhir_base}/Observation", json=observation(),
                                headers=lab)
            assert r.status_code == 201, r.text
        assert sandbox.subscriptions is not None
        ledger = sandbox.subscriptions.ledger
        await until(lambda: ledger.counters(sub_id).events == 2)
    assert endpoint.event_numbers() == []
    endpoint.status = 200
    # The same data directory again, as `wardsync sandbox --data-dir` would reopen it.
    again = Sandbox(SandboxConfig(data_dir=data_dir, simulator=False, relay=False))
    await again.start()
    try:
        await until(lambda: endpoint.event_numbers() == [1, 2], real_limit_s=15)
        assert again.subscriptions is not None
        assert again.subscriptions.ledger.counters(sub_id).events == 2
    finally:
        await again.stop()
