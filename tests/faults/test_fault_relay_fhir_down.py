"""Fault: the FHIR server down for the relay, while results are written.

A real `wardsync relay` process beside a `--no-relay` sandbox (harness `RelayBeside`; with
`--no-relay` the sandbox's fault switch spares no client), topic Subscriptions and the poll
every second, the workstations' tokens from it. Two faults:

- **unreachable**: the relay's own network path to the FHIR server refuses connections
  (`FaultBed.relay_fhir_proxy.refuse()`, open connections reset), for longer than /readyz's
  limit. The laboratory and the workstations still reach the server, so results keep being
  written. The relay keeps running (/healthz 200), its rounds fail, notifications it cannot
  follow up are answered 503 (the server retries them, then marks the Subscription `error`
  after about 30 s of attempts), and /readyz turns 503 once no round has succeeded for
  max(30 s, 3 × interval), with the reason in words. The log says so at every failed round
  and again when the server answers.
- **erroring**: the server answers 503 to everyone (the sandbox's fault switch); results
  still arrive through another interface of the server (an HL7 feed), committed but not
  readable. The relay's rounds fail with "answered HTTP 503".

When the server is back, everything written meanwhile is poked (reconciliation, re-delivered
notifications, `$events`), each version at most once, and every screen converges.

Workstations stay "Live" throughout: their hub connection never breaks; their screens lag by
the outage (docs/relay.md "While the relay is down").

Bounds, measured here (2 cores shared with other work, load 7-11) and stated with margin.
Unreachable: /readyz 503 29.4-30.2 s after the cut (the limit counts from the last good round,
up to one interval before the cut) → between `READY_LIMIT_S` - 2 s and `NOT_READY_BOUND_S`
(35 s); after the heal /readyz 200 again in 2.3-3.3 s (its first round announces the outage's
~100 versions) and every write of the outage on every screen 2.6-4.1 s after the heal →
`RECOVERY_BOUND_S` 10 s; every screen equal to the server 0.15-1.2 s after the last write →
`CONVERGE_BOUND_S` 5 s. Erroring: the fed results on every screen 0.9-1.3 s after the server
recovered → `RECOVERY_BOUND_S`.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import (
    TOPIC_RELAY_CONFIG,
    RelayBeside,
    assert_contiguous,
    assert_poked_once,
    bare_subscriber,
    eventually,
    fault_bed,
    newest_versions,
    write_behind_the_api,
)
from tests.relay.relay_fixtures import RelayProcess, scrape
from wardsync.core.connection_status import ConnectionState

pytestmark = pytest.mark.slow  # live fault injection: 15-60 s a test

READY_LIMIT_S = 30.0  # max(30 s, 3 x interval): docs/relay.md "Endpoints and metrics"
# Bounds: what the module docstring states (measured here, with margin).
NOT_READY_BOUND_S = READY_LIMIT_S + 5.0
RECOVERY_BOUND_S = 10.0  # from the heal: ready again; every outage write on every screen
CONVERGE_BOUND_S = 5.0  # from the last write


async def readyz(http: httpx.AsyncClient, relay: RelayProcess) -> httpx.Response:
    return await http.get(relay.ready["health_url"].replace("/healthz", "/readyz"))


def log_messages(relay: RelayProcess) -> list[str]:
    return [json.loads(line)["msg"] for line in relay.log_file.read_text().splitlines()]


async def test_fhir_server_unreachable_for_the_relay(seeded_data_dir: Path,
                                                     tmp_path: Path) -> None:
    async with (fault_bed(seeded_data_dir, tmp_path, relay=RelayBeside(TOPIC_RELAY_CONFIG)) as bed,
                bare_subscriber(bed) as bare, httpx.AsyncClient(timeout=5) as http):
        relay, cut = bed.relay, bed.relay_fhir_proxy
        assert relay is not None and cut is not None
        assert (await readyz(http, relay)).json()["reason"] is None
        traffic = bed.traffic(interval_s=0.5)
        traffic.start()
        await eventually(lambda: len(bare.pokes) >= 4, 15.0, "pokes before the fault")
        t_cut, writes_at_cut = time.monotonic(), traffic.writes
        await cut.refuse()
        cut.drop_all()
        await asyncio.sleep(2.0)  # pokes numbered before the cut go out
        poked_before = len(bare.pokes)
        # Not ready once no round has succeeded for the limit; alive all along.
        while (reply := await readyz(http, relay)).status_code == 200:
            assert time.monotonic() - t_cut < NOT_READY_BOUND_S, "still ready"
            assert (await http.get(relay.ready["health_url"])).status_code == 200
            await asyncio.sleep(0.5)
        not_ready_s = time.monotonic() - t_cut
        # The limit counts from the last good round, up to one interval (and its own
        # duration) before the cut.
        assert not_ready_s >= READY_LIMIT_S - 2.0, f"not ready after only {not_ready_s:.1f} s"
        body = reply.json()
        assert reply.status_code == 503 and body["ready"] is False and body["role"] == "leader"
        assert body["reason"].startswith(
            "no reconciliation poll of the FHIR server has succeeded for "), body
        assert "last error: the FHIR server is unreachable (ConnectError)" in body["reason"]
        assert (await http.get(relay.ready["health_url"])).status_code == 200
        assert relay.proc is not None and relay.proc.returncode is None
        # Nothing written during the outage was poked: the relay could not read it.
        assert len(bare.pokes) == poked_before
        metrics = relay.ready["metrics_url"]
        assert await scrape(http, metrics, "wardsync_relay_reconcile_rounds_total",
                            outcome="failed") >= READY_LIMIT_S - 5
        assert await scrape(http, metrics, "wardsync_relay_notifications_total",
                            source="topic", outcome="failed") >= 1

        written_during = traffic.writes - writes_at_cut
        t_heal = time.monotonic()
        await cut.heal()
        while (await readyz(http, relay)).status_code != 200:
            assert time.monotonic() - t_heal < RECOVERY_BOUND_S, "never ready again"
            await asyncio.sleep(0.2)
        ready_again_s = time.monotonic() - t_heal
        missed = dict(traffic.log.acknowledged)
        await eventually(
            lambda: all(int(s.ws.store.version(ref) or 0) >= v for s in bed.stations
                        for ref, v in missed.items()),
            RECOVERY_BOUND_S - ready_again_s, "the outage's writes on every screen")
        recovered_s = time.monotonic() - t_heal
        await asyncio.sleep(1.0)
        await traffic.stop()
        converge_s = await bed.wait_converged(CONVERGE_BOUND_S, "every screen after the fault")
        bed.assert_consistent(traffic.log)
        newest = newest_versions(bed, set(traffic.log.acknowledged))
        await eventually(lambda: all(bare.per_version()[v] for v in newest.items()), 5.0,
                         "every newest version poked")
        await asyncio.sleep(2.5)  # two more poll rounds: a late duplicate would show
        assert_poked_once(bare.per_version(), newest)
        assert_contiguous(bare.seqs())
        assert written_during >= 20, f"only {written_during} refs written during the fault"
        for s in bed.stations:
            assert s.states_since(t_cut) == [], f"{s.name} said {s.states_since(t_cut)}"
            assert s.state is ConnectionState.LIVE
        messages = log_messages(relay)
        assert any(m.startswith("reconcile: the FHIR server is unreachable (ConnectError)")
                   for m in messages), messages[-5:]
        assert any(m.startswith("reconcile: the FHIR server answers again after ")
                   for m in messages), messages[-5:]
        print(f"\nFHIR unreachable for the relay: not ready after {not_ready_s:.1f} s, ready "
              f"again {ready_again_s:.2f} s after the heal, outage writes on every screen "
              f"{recovered_s:.2f} s after it, converged {converge_s:.2f} s after the last "
              f"write; {len(bare.pokes)} pokes")


ERROR_S = 5.0


async def test_fhir_server_erroring_for_everyone(seeded_data_dir: Path,
                                                 tmp_path: Path) -> None:
    async with (fault_bed(seeded_data_dir, tmp_path, relay=RelayBeside(TOPIC_RELAY_CONFIG)) as bed,
                bare_subscriber(bed) as bare, httpx.AsyncClient(timeout=5) as http):
        relay = bed.relay
        assert relay is not None
        t_fault = time.monotonic()
        bed.sandbox.faults.fail(503, for_s=60)
        # Results arrive through the server's HL7 feed while its REST API answers 503.
        fed = []
        for _ in range(4):
            fed.append(write_behind_the_api(bed))
            await asyncio.sleep(ERROR_S / 4)
        assert not bare.pokes, "nothing can be read, so nothing is poked"
        body = (await readyz(http, relay)).json()
        assert body["ready"] is True  # within the limit
        messages = log_messages(relay)
        assert any(m.startswith("reconcile: the FHIR server answered HTTP 503 to the ")
                   for m in messages), messages[-5:]
        assert await scrape(http, relay.ready["metrics_url"],
                            "wardsync_relay_notifications_total", source="topic",
                            outcome="failed") >= 1
        t_clear = time.monotonic()
        bed.sandbox.faults.clear()
        recovered_s = await eventually(
            lambda: bed.all_live() and all(ref in s.ws.store for s in bed.stations
                                           for ref in fed),
            RECOVERY_BOUND_S, "the fed results on every screen")
        await bed.wait_converged(CONVERGE_BOUND_S, "every screen after the fault")
        bed.assert_consistent()
        newest = newest_versions(bed, set(fed))
        await asyncio.sleep(2.5)  # two more poll rounds: a late duplicate would show
        assert_poked_once(bare.per_version(), newest)
        assert_contiguous(bare.seqs())
        # Idle workstations asked the server nothing during the fault; one that had would
        # have said "offline" (test_fault_fhir_errors.py). Never degraded: the hub was up.
        for s in bed.stations:
            assert set(s.states_since(t_fault)) <= {"offline", "live"}
            assert s.state is ConnectionState.LIVE
        print(f"\nFHIR erroring: fed results on every screen {recovered_s:.2f} s after the "
              f"server recovered ({time.monotonic() - t_clear:.1f} s incl. checks)")

