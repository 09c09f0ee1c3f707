"""Changes in: the notification interface (`Relay.on_change`), ward resolution that follows
a patient's Encounter, paging of the reconciliation poll, and the service endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from ably import AblyRest

from tests.relay.relay_fixtures import relay_config, running_relay, scrape
from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.core.heartbeats import POKE_MESSAGE_NAME
from wardsync.relay import reconcile
from wardsync.relay.service import Relay
from wardsync.sandbox.server import Sandbox

LACTATE = {codes.LACTATE.code: 1.4}


async def _ward_history(ward: Sandbox, channel: str) -> list:
    info = ward.ready_info()
    host, port = info["ably_endpoint"].split(":")
    rest = AblyRest(key=info["ably_key"], use_token_auth=True, endpoint=host, port=int(port),
                    tls=False)
    try:
        # The hub keeps the last 200 messages per channel; the start-up round may have
        # announced recent seed writes, so ask for all of them.
        page = await rest.channels.get(channel).history(direction="forwards", limit=1000)
        return [m for m in page.items if m.name == POKE_MESSAGE_NAME]  # not heartbeats
    finally:
        await rest.close()


@pytest.fixture
async def idle_relay(ward: Sandbox, tmp_path: Path) -> AsyncIterator[Relay]:
    """A relay whose poll runs once at start and then waits an hour."""
    config = relay_config(ward, tmp_path, tmp_path / "relay", interval_s=3600.0)
    async with running_relay(config) as relay:
        await wait_for(lambda: relay.reconciler.rounds >= 1, 10, "first round")
        yield relay


async def test_on_change_reads_classifies_and_publishes_once(ward: Sandbox, idle_relay: Relay):
    await wait_for(lambda: idle_relay.publisher.pending == 0, 10, "start-up pokes out")
    before = idle_relay.state.last_seq(ward.ward)
    report, _ = await ward.lab.post_panel("pat-02", codes.LACTATE_PANEL.code, LACTATE)
    ref = f"DiagnosticReport/{report['id']}"
    stored = await idle_relay.on_change(ref, "1")
    assert stored is not None
    assert (stored.ward, stored.poke.type, stored.poke.seq) == (
        ward.ward, "LAB_RESULT_READY", before + 1)
    assert await idle_relay.on_change(ref, "1") is None  # a re-delivered notification
    assert await idle_relay.on_change(ref, None) is None  # id-only, version unknown: read
    assert await idle_relay.on_change("DiagnosticReport/never-written", "1") is None
    assert await idle_relay.on_change("Secret/x", "1") is None  # not announced at all
    await wait_for(lambda: idle_relay.publisher.pending == 0, 10, "published")
    items = await _ward_history(ward, f"ward:{ward.ward}")
    assert [m.data["seq"] for m in items if m.data["id"] == report["id"]] == [before + 1]
    seqs = [m.data["seq"] for m in items]
    assert seqs == list(range(seqs[0], before + 2))
    async with httpx.AsyncClient() as http:
        dupes = await scrape(http, idle_relay.ready_info()["metrics_url"],
                             "wardsync_relay_duplicate_versions_total", source="notification")
    assert dupes == 2


async def test_a_patient_with_no_stay_is_announced_on_the_default_ward_only_when_set(
    ward: Sandbox, tmp_path: Path
):
    newcomer = ward.store.create({"resourceType": "Patient",
                                  "name": [{"family": "Zzexample", "given": ["Transfer"]}]})
    for default, expected in ((None, None), ("ward-receiving", "ward-receiving")):
        config = relay_config(ward, tmp_path, tmp_path / f"relay-{default}", interval_s=3600.0)
        config.relay.default_ward = default
        async with running_relay(config) as relay:
            report, _ = await ward.lab.post_panel(
                newcomer["id"], codes.LACTATE_PANEL.code, {codes.LACTATE.code: 6.5})
            stored = await relay.on_change(f"DiagnosticReport/{report['id']}", "1")
            async with httpx.AsyncClient() as http:
                unrouted = await scrape(http, relay.ready_info()["metrics_url"],
                                        "wardsync_relay_unrouted_changes_total", reason="no_ward")
            if expected is None:
                # Nowhere to announce it (the report and its result, once each at least).
                assert stored is None and unrouted >= 1
            else:
                assert stored is not None and unrouted == 0
                assert (stored.ward, stored.poke.type) == (expected, "CRITICAL_LAB_RESULT")


async def test_a_patient_moved_to_another_ward_is_announced_there(
    ward: Sandbox, tmp_path: Path
):
    config = relay_config(ward, tmp_path, tmp_path / "relay")
    async with running_relay(config) as relay:
        ward.store.update("Location", "ward-b", {
            "resourceType": "Location", "id": "ward-b", "status": "active", "name": "Ward B",
            "physicalType": {"coding": [{"code": "wa"}]},
        })
        report, _ = await ward.lab.post_panel("pat-06", codes.LACTATE_PANEL.code, LACTATE)
        first = f"DiagnosticReport/{report['id']}"
        await wait_for(lambda: relay.state.has_version(first, "1"), 10, "first result")
        page = ward.store.search("Encounter", [("patient", "Patient/pat-06"),
                                               ("status", "in-progress")])
        encounter = dict(page.matches[0])
        encounter["location"] = [{"location": {"reference": "Location/ward-b"},
                                  "status": "active"}]
        moved = ward.store.update("Encounter", encounter["id"], encounter)
        await wait_for(lambda: relay.state.has_version(
            f"Encounter/{moved['id']}", moved["meta"]["versionId"]), 10, "the move")
        report, _ = await ward.lab.post_panel("pat-06", codes.LACTATE_PANEL.code, LACTATE)
        second = f"DiagnosticReport/{report['id']}"
        await wait_for(lambda: relay.state.has_version(second, "1"), 10, "second result")
        await wait_for(lambda: relay.publisher.pending == 0, 10, "published")
    on_b = {f"{m.data['resourceType']}/{m.data['id']}" for m in
            await _ward_history(ward, "ward:ward-b")}
    on_home = {f"{m.data['resourceType']}/{m.data['id']}" for m in
               await _ward_history(ward, f"ward:{ward.ward}")}
    assert second in on_b and second not in on_home
    assert first in on_home and first not in on_b
    # The move itself is news on both wards: the patient arrived on one and left the other.
    assert f"Encounter/{moved['id']}" in on_b and f"Encounter/{moved['id']}" in on_home


async def test_the_poll_follows_next_links(ward: Sandbox, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(reconcile, "PAGE_SIZE", 2)
    config = relay_config(ward, tmp_path, tmp_path / "relay", interval_s=3600.0,
                          types=["Observation"])
    async with running_relay(config) as relay:
        await wait_for(lambda: relay.reconciler.rounds >= 1, 10, "first round")
        written = []
        for i in range(3):
            _, observations = await ward.lab.post_panel(
                "pat-07", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0 + i})
            written += [f"Observation/{o['id']}" for o in observations]
        sent = relay.fhir_requests_sent
        assert await relay.reconciler.round() == 3
        assert relay.fhir_requests_sent - sent >= 2  # more than one page
        assert all(relay.state.has_version(ref, "1") for ref in written)
        assert await relay.reconciler.round() == 0  # the overlap re-reads, nothing re-poked


async def test_health_readiness_metrics_and_notify(ward: Sandbox, idle_relay: Relay):
    info = idle_relay.ready_info()
    async with httpx.AsyncClient() as http:
        assert (await http.get(info["health_url"])).status_code == 200
        ready = await http.get(info["health_url"].replace("healthz", "readyz"))
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert ready.json()["reason"] is None
        # Notifications need a Subscription's secret (test_relay_subscriptions.py).
        assert (await http.post(info["notify_url"], json={"resourceType": "Bundle"})
                ).status_code == 401
        assert (await http.put(f"{info['notify_url']}/Observation/1", json={})).status_code \
            == 401
        metrics = await http.get(info["metrics_url"])
        assert metrics.headers["Content-Type"].startswith("text/plain")
        assert "wardsync_relay_reconcile_rounds_total" in metrics.text


async def test_a_first_start_announces_nothing_older_than_its_starting_point(
    ward: Sandbox, tmp_path: Path
):
    before, _ = await ward.lab.post_panel("pat-03", codes.LACTATE_PANEL.code, LACTATE)
    # A wide overlap would re-read the write above; the first start's floor stops it.
    config = relay_config(ward, tmp_path, tmp_path / "relay", overlap_s=60.0,
                          types=["DiagnosticReport"])
    async with running_relay(config) as relay:
        await wait_for(lambda: relay.reconciler.rounds >= 2, 10, "two rounds")
        assert not relay.state.has_version(f"DiagnosticReport/{before['id']}", "1")
        after, _ = await ward.lab.post_panel("pat-03", codes.LACTATE_PANEL.code, LACTATE)
        await wait_for(lambda: relay.state.has_version(f"DiagnosticReport/{after['id']}", "1"),
                       10, "the write after the start")
        assert relay.state.count() == 1
