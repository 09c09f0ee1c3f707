"""Deletes reach the ward as one `RESOURCE_DELETED` poke per delete version, whatever told the
relay: a topic notification whose focus read answers 410 Gone, a classic `DELETE
[notify_url]/[type]/[id]`, or the reconciliation poll's `GET [type]/_history?_since=` (a
search never returns a deleted resource). The poke carries the delete's version id and the
patient the last version named; it goes out once even when several sources report it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.relay.relay_fixtures import (
    clinician_session,
    poke_watcher,
    relay_config,
    running_relay,
    scrape,
)
from tests.relay.test_relay_subscriptions import NO_POLL_S, ready_relay, subscribed_config
from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.core.pokes import RESOURCE_DELETED
from wardsync.relay.config import RelayConfig
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # real servers, seconds each

LACTATE = {codes.LACTATE.code: 1.4}


def config_for(ward: Sandbox, tmp_path: Path, source: str) -> RelayConfig:
    if source == "poll":
        config = relay_config(ward, tmp_path, tmp_path / "relay", interval_s=0.2)
        assert config.subscriptions.mode == "none"
        return config
    # Notifications only: the poll waits an hour after its start-up round.
    return subscribed_config(ward, tmp_path, mode=source, interval_s=NO_POLL_S)


async def lab_result(ward: Sandbox, patient: str = "pat-02") -> str:
    _report, observations = await ward.lab.post_panel(patient, codes.LACTATE_PANEL.code,
                                                      LACTATE)
    return str(observations[0]["id"])


@pytest.mark.parametrize("source", ["topic", "classic", "poll"])
async def test_a_deleted_observation_is_announced_once_as_deleted_within_a_second(
    ward: Sandbox, tmp_path: Path, source: str
):
    async with httpx.AsyncClient(timeout=10) as http, \
            running_relay(config_for(ward, tmp_path, source)) as relay:
        if source == "poll":
            await wait_for(lambda: relay.reconciler.rounds >= 1, 10, "start-up round")
        else:
            await ready_relay(relay)
        session = await clinician_session(ward, http)
        try:
            async with poke_watcher(ward, session, http, relay.ready_info()["token_url"]) as w:
                await wait_for(lambda: w.client.connection.state == "connected", 10)
                oid = await lab_result(ward)
                ref = f"Observation/{oid}"
                await wait_for(lambda: (ref, "1") in w.per_version(), 5, "the result's poke")
                rounds = relay.reconciler.rounds
                started = time.monotonic()
                deleted = ward.store.delete("Observation", oid)
                assert deleted is not None and deleted.version_id == "2"
                await wait_for(lambda: (ref, "2") in w.per_version(), 5, "the delete's poke")
                assert time.monotonic() - started < 1.0
                if source != "poll":
                    assert relay.reconciler.rounds == rounds  # the poll had no part in it
                poke = next(p for p in w.pokes if p["id"] == oid and p["versionId"] == "2")
                assert poke["type"] == RESOURCE_DELETED and poke["priority"] == "routine"
                assert poke["patientId"] == "pat-02" and poke["resourceType"] == "Observation"
                # Reported again (the poll re-reads its overlap, a notification repeats): the
                # delete version is announced once.
                assert await relay.on_change(ref, None, "classic") is None
                await asyncio.sleep(0.6)
                assert w.per_version()[(ref, "2")] == 1, w.per_version()
                assert w.seqs() == sorted(w.seqs())
                assert await scrape(http, relay.ready_info()["metrics_url"],
                                    "wardsync_relay_pokes_published_total",
                                    type=RESOURCE_DELETED) == 1
        finally:
            await session.aclose()


async def test_notification_and_poll_together_announce_a_delete_once(
    ward: Sandbox, tmp_path: Path
):
    config = subscribed_config(ward, tmp_path, mode="topic", interval_s=0.1)
    config.reconcile.overlap_s = 2.0
    async with httpx.AsyncClient(timeout=10) as http, running_relay(config) as relay:
        await ready_relay(relay)
        session = await clinician_session(ward, http)
        try:
            async with poke_watcher(ward, session, http, relay.ready_info()["token_url"]) as w:
                await wait_for(lambda: w.client.connection.state == "connected", 10)
                oids = [await lab_result(ward, p) for p in ("pat-02", "pat-03")]
                for oid in oids:
                    ward.store.delete("Observation", oid)
                wanted = {(f"Observation/{oid}", "2") for oid in oids}
                await wait_for(lambda: wanted <= set(w.per_version()), 5, "the deletes' pokes")
                rounds = relay.reconciler.rounds
                # Several poll rounds re-read the deletes within their overlap.
                await wait_for(lambda: relay.reconciler.rounds >= rounds + 5, 10, "rounds")
                await asyncio.sleep(0.3)
                assert all(w.per_version()[v] == 1 for v in wanted), w.per_version()
        finally:
            await session.aclose()


async def test_a_resource_created_again_is_announced_as_its_new_version(
    ward: Sandbox, tmp_path: Path
):
    async with running_relay(config_for(ward, tmp_path, "topic")) as relay:
        await ready_relay(relay)
        oid = await lab_result(ward)
        ref = f"Observation/{oid}"
        await wait_for(lambda: relay.state.has_version(ref, "1"), 5, "created")
        last = ward.store.read("Observation", oid)
        ward.store.delete("Observation", oid)
        await wait_for(lambda: relay.state.has_version(ref, "2"), 5, "deleted")
        ward.store.update("Observation", oid, last)
        await wait_for(lambda: relay.state.has_version(ref, "3"), 5, "created again")
        # A late delete notification now reads version 3: nothing more to announce.
        assert await relay.on_change(ref, None, "classic") is None


async def test_a_restarted_relay_does_not_announce_deletes_again(
    ward: Sandbox, tmp_path: Path
):
    config = config_for(ward, tmp_path, "poll")
    async with running_relay(config) as relay:
        await wait_for(lambda: relay.reconciler.rounds >= 1, 10, "start-up round")
        oid = await lab_result(ward)
        ward.store.delete("Observation", oid)
        await wait_for(lambda: relay.state.has_version(f"Observation/{oid}", "2"), 5,
                       "the delete found by the poll")
        await wait_for(lambda: relay.publisher.pending == 0, 5, "published")
        last_seq = relay.state.last_seq(ward.ready_info()["ward"])
    async with running_relay(config) as relay:
        await wait_for(lambda: relay.reconciler.rounds >= 3, 10, "rounds after the restart")
        assert relay.state.last_seq(ward.ready_info()["ward"]) == last_seq
