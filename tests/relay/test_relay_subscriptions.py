"""The relay learns of changes through the sandbox's FHIR Subscriptions (topic-based and
classic), with the reconciliation poll held back so that only notifications can explain a
poke: one poke per version within a second, its own Subscriptions reused after a restart,
lost notifications recovered with `$events` (gaps, silence), a dead Subscription replaced,
and the notify endpoint refusing what is not from the server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.postgres_fixtures import free_port
from tests.relay.notify_proxy import NotifyProxy
from tests.relay.relay_fixtures import (
    RelayProcess,
    clinician_session,
    poke_watcher,
    relay_config,
    relay_flags,
    running_relay,
    scrape,
)
from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.relay.config import RelayConfig
from wardsync.relay.service import Relay
from wardsync.relay.subscriptions import reason_for
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # real servers, seconds each

LACTATE = {codes.LACTATE.code: 1.4}
NO_POLL_S = 3600.0  # after its start-up round the poll waits an hour


def subscribed_config(ward: Sandbox, tmp_path: Path, *, mode: str = "topic",
                      interval_s: float = NO_POLL_S, heartbeat_s: float = 60.0,
                      data_dir: str = "relay") -> RelayConfig:
    config = relay_config(ward, tmp_path, tmp_path / data_dir, interval_s=interval_s)
    config.subscriptions.mode = mode
    config.subscriptions.heartbeat_s = heartbeat_s
    config.subscriptions.silence_margin_s = 0.5
    return config


async def ready_relay(relay: Relay) -> None:
    assert relay.subscriptions is not None
    await asyncio.wait_for(relay.subscriptions.ready.wait(), 15)
    await wait_for(lambda: relay.reconciler.rounds >= 1, 10, "start-up round")
    await wait_for(lambda: relay.publisher.pending == 0, 10, "start-up pokes out")


@contextlib.asynccontextmanager
async def proxied_relay(config: RelayConfig) -> AsyncIterator[tuple[Relay, NotifyProxy]]:
    proxy = NotifyProxy()
    await proxy.start()
    config.relay.public_url = proxy.url
    try:
        async with running_relay(config) as relay:
            proxy.target = f"http://127.0.0.1:{relay.port}"
            yield relay, proxy
    finally:
        await proxy.stop()


async def post_lactate(ward: Sandbox, patient: str = "pat-02") -> set[tuple[str, str]]:
    report, observations = await ward.lab.post_panel(patient, codes.LACTATE_PANEL.code,
                                                     LACTATE)
    return {(f"DiagnosticReport/{report['id']}", "1")} | {
        (f"Observation/{o['id']}", "1") for o in observations}


async def own_subscriptions(relay: Relay) -> list[dict]:
    assert relay.subscriptions is not None and relay._fhir_client is not None
    found = await relay._fhir_client.search(
        "Subscription", {"url": relay.subscriptions.notify_url})
    return [s for s in found.matches if s.get("reason") == relay.subscriptions.reason]


@pytest.mark.parametrize("mode", ["topic", "classic"])
async def test_a_lab_result_reaches_a_workstation_as_one_poke_within_a_second(
    ward: Sandbox, tmp_path: Path, mode: str
):
    config = subscribed_config(ward, tmp_path, mode=mode)
    async with httpx.AsyncClient(timeout=10) as http, running_relay(config) as relay:
        await ready_relay(relay)
        assert relay.subscriptions is not None and relay.subscriptions.mode == mode
        session = await clinician_session(ward, http)
        try:
            async with poke_watcher(ward, session, http, relay.ready_info()["token_url"]) as w:
                await wait_for(lambda: w.client.connection.state == "connected", 10)
                started = time.monotonic()
                expected = await post_lactate(ward)
                await wait_for(lambda: expected <= set(w.per_version()), 5, "the pokes")
                assert time.monotonic() - started < 1.0
                assert relay.reconciler.rounds == 1  # the poll had no part in it
                await asyncio.sleep(0.5)  # a late duplicate would show
                assert all(n == 1 for n in w.per_version().values()), w.per_version()
                url = relay.ready_info()["metrics_url"]
                assert await scrape(http, url, "wardsync_relay_notifications_total",
                                    source=mode, outcome="ok") >= 1
                if mode == "topic":
                    assert await scrape(http, url,
                                        "wardsync_relay_subscription_handshakes_total") >= 1
        finally:
            await session.aclose()
        subs = await own_subscriptions(relay)
        assert len(subs) == len(relay.subscriptions.subscriptions) >= 1
        for sub in subs:
            assert sub["reason"] == reason_for(relay.public_url)
            assert sub["status"] == "active"
            secret = sub["channel"]["header"][0].removeprefix("Authorization: Bearer ")
            assert relay.subscriptions.by_secret(secret) is not None


async def test_a_restarted_relay_reuses_its_subscriptions(ward: Sandbox, tmp_path: Path):
    config = subscribed_config(ward, tmp_path)
    async with running_relay(config) as relay:
        await ready_relay(relay)
        first = sorted(s["id"] for s in await own_subscriptions(relay))
    # Same address as before, same state: the same Subscriptions, none created.
    config.relay.listen = f"127.0.0.1:{relay.port}"
    async with httpx.AsyncClient(timeout=10) as http, running_relay(config) as relay:
        await ready_relay(relay)
        assert sorted(s["id"] for s in await own_subscriptions(relay)) == first
        assert await scrape(http, relay.ready_info()["metrics_url"],
                            "wardsync_relay_subscriptions_created_total", reason="new") == 0
    # State lost: its old Subscriptions (no secret on record) are deleted, not piled up.
    fresh = subscribed_config(ward, tmp_path, data_dir="fresh")
    fresh.relay.listen = config.relay.listen
    async with running_relay(fresh) as relay:
        await ready_relay(relay)
        ids = sorted(s["id"] for s in await own_subscriptions(relay))
        assert len(ids) == len(first) and not set(ids) & set(first)


async def test_a_gap_in_event_numbers_is_recovered_with_events(ward: Sandbox, tmp_path: Path):
    config = subscribed_config(ward, tmp_path)
    async with httpx.AsyncClient(timeout=10) as http, proxied_relay(config) as (relay, proxy):
        await ready_relay(relay)
        proxy.drop = True
        lost = await post_lactate(ward, "pat-03")
        await wait_for(lambda: proxy.dropped >= 1, 5, "a notification lost")
        await asyncio.sleep(0.3)
        assert not any(relay.state.has_version(ref, v) for ref, v in lost)
        proxy.drop = False
        later = await post_lactate(ward, "pat-04")
        await wait_for(lambda: all(relay.state.has_version(r, v) for r, v in lost | later),
                       5, "the lost versions recovered")
        assert relay.reconciler.rounds == 1  # recovered by $events, not by the poll
        assert await scrape(http, relay.ready_info()["metrics_url"],
                            "wardsync_relay_subscription_gaps_recovered_total",
                            via="events") >= len({r for r, _ in lost if "Observation" in r})


async def test_silence_is_noticed_and_the_missed_events_recovered(ward: Sandbox,
                                                                  tmp_path: Path):
    config = subscribed_config(ward, tmp_path, heartbeat_s=1.0)
    async with httpx.AsyncClient(timeout=10) as http, proxied_relay(config) as (relay, proxy):
        await ready_relay(relay)
        proxy.drop = proxy.drop_heartbeats = True
        lost = await post_lactate(ward, "pat-05")
        # Nothing arrives: after 2 x heartbeat + margin the relay asks $status and replays.
        await wait_for(lambda: all(relay.state.has_version(r, v) for r, v in lost), 10,
                       "recovered after silence")
        assert relay.reconciler.rounds == 1
        url = relay.ready_info()["metrics_url"]
        assert await scrape(http, url, "wardsync_relay_subscription_heartbeats_missed_total") >= 1
        assert await scrape(http, url, "wardsync_relay_subscription_gaps_recovered_total",
                            via="events") >= 1


async def test_notifications_lost_for_good_are_found_by_reconciliation_within_its_bound(
    ward: Sandbox, tmp_path: Path
):
    interval_s = 1.0
    config = subscribed_config(ward, tmp_path, interval_s=interval_s)
    async with proxied_relay(config) as (relay, proxy):
        await ready_relay(relay)
        proxy.drop = True
        written_at = time.monotonic()
        lost = await post_lactate(ward, "pat-06")
        await wait_for(lambda: all(relay.state.has_version(r, v) for r, v in lost),
                       interval_s + 5, "found by the poll")
        # Bound (docs/relay.md): interval + the round's duration (well under a second here).
        assert time.monotonic() - written_at < interval_s + 1.5
        assert proxy.dropped >= 1


async def test_a_subscription_turned_off_is_replaced(ward: Sandbox, tmp_path: Path):
    config = subscribed_config(ward, tmp_path, heartbeat_s=1.0)
    async with running_relay(config) as relay:
        await ready_relay(relay)
        assert relay.subscriptions is not None and relay._fhir_client is not None
        victim = relay.subscriptions.subscriptions[0]
        old = await relay._fhir_client.read("Subscription", str(victim.sub_id))
        await relay._fhir_client.update({**old, "status": "off"},
                                        if_match_version=old["meta"]["versionId"])
        await wait_for(lambda: victim not in relay.subscriptions.subscriptions, 10,
                       "replaced")
        replacement = [s for s in relay.subscriptions.subscriptions
                       if s.criteria == victim.criteria]
        assert len(replacement) == 1 and replacement[0].sub_id != victim.sub_id
        ids = {s["id"] for s in await own_subscriptions(relay)}
        assert victim.sub_id not in ids and replacement[0].sub_id in ids


async def test_the_notify_endpoint_refuses_what_the_server_did_not_send(
    ward: Sandbox, tmp_path: Path
):
    config = subscribed_config(ward, tmp_path)
    async with httpx.AsyncClient(timeout=10) as http, running_relay(config) as relay:
        await ready_relay(relay)
        assert relay.subscriptions is not None
        notify = relay.ready_info()["notify_url"]
        url = relay.ready_info()["metrics_url"]
        live = next(s for s in relay.subscriptions.subscriptions if s.sub_id)
        good = {"Authorization": f"Bearer {live.secret}",
                "Content-Type": "application/fhir+json"}
        assert (await http.post(notify, content=b"{}")).status_code == 401
        forged = {**good, "Authorization": "Bearer not-the-secret"}
        assert (await http.post(notify, content=b"{}", headers=forged)).status_code == 401
        assert (await http.put(f"{notify}/Observation/x", content=b"{}",
                               headers=forged)).status_code == 401
        assert await scrape(http, url, "wardsync_relay_notifications_total", source="topic",
                            outcome="unauthorized") == 2
        big = b" " * (300 * 1024)
        assert (await http.post(notify, content=big, headers=good)).status_code == 413
        text = {**good, "Content-Type": "text/plain"}
        assert (await http.post(notify, content=b"{}", headers=text)).status_code == 415
        rounds = relay.reconciler.rounds
        resp = await http.post(notify, content=b'{"resourceType": "Bundle"}', headers=good)
        assert resp.status_code == 400 and resp.json()["reason"] == "bundle_type"
        assert await scrape(http, url, "wardsync_relay_notifications_total", source="topic",
                            outcome="malformed") == 1
        # A notification it could not read makes the relay reconcile at once.
        await wait_for(lambda: relay.reconciler.rounds > rounds, 5, "a reconciliation round")
        other = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
            "resourceType": "Parameters", "parameter": [
                {"name": "subscription", "valueReference": {"reference": "Subscription/other"}},
                {"name": "type", "valueCode": "heartbeat"},
                {"name": "events-since-subscription-start", "valueString": "0"}]}}]}
        resp = await http.post(notify, json=other, headers=good)
        assert resp.status_code == 403
        resp = await http.put(f"{notify}/Observation/x", json={"resourceType": "Patient",
                                                               "id": "x"}, headers=good)
        assert resp.status_code == 400 and resp.json()["reason"] == "path_mismatch"


SUBSCRIBED_PROCESS_CONFIG = """
[reconcile]
interval_s = 3600
initial_lookback_s = 0
types = ["DiagnosticReport", "Observation"]

[subscriptions]
mode = "topic"
heartbeat_s = 60
"""


async def test_sigkill_mid_stream_through_subscriptions_loses_and_repeats_nothing(
    ward: Sandbox, tmp_path: Path
):
    config_file = tmp_path / "relay.toml"
    config_file.write_text(SUBSCRIBED_PROCESS_CONFIG)
    flags = relay_flags(ward, tmp_path, tmp_path / "relay-data")
    flags["listen"] = f"127.0.0.1:{free_port()}"  # the notify_url must survive the restart
    relay = RelayProcess(flags, config_file, tmp_path / "relay.log")
    written: set[tuple[str, str]] = set()

    async def write_results(count: int) -> None:
        for _ in range(count):
            written.update(await post_lactate(ward, "pat-07"))
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(timeout=10) as http:
        session = await clinician_session(ward, http)
        try:
            ready = await relay.start()
            async with poke_watcher(ward, session, http, ready["token_url"]) as watcher:
                await wait_for(lambda: watcher.client.connection.state == "connected", 10)
                await write_results(3)
                await wait_for(lambda: len(watcher.pokes) >= 2, 15, "the first pokes")
                await write_results(2)
                await relay.kill()  # mid-stream
                await write_results(3)  # committed while no relay runs
                await relay.start()
                await write_results(2)
                await wait_for(lambda: written <= set(watcher.per_version()), 30,
                               f"every version poked ({relay.log_tail()})")
                await asyncio.sleep(1.0)  # a late duplicate would show
                counts = watcher.per_version()
                assert {v: n for v, n in counts.items() if n != 1} == {}
                first = watcher.seqs()[0]
                assert watcher.seqs() == list(range(first, first + len(watcher.pokes)))
                url = relay.ready["metrics_url"]
                # The poll never ran again: the Subscriptions (and $events) did it all.
                assert await scrape(http, url, "wardsync_relay_reconcile_rounds_total",
                                    outcome="ok") == 1
                assert await scrape(http, url, "wardsync_relay_subscriptions_created_total",
                                    reason="new") == 0
        finally:
            await relay.close()
            await session.aclose()
