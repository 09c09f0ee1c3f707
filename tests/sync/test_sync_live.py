"""The headless sync stack against the real sandbox: real hub, real SDK, real FHIR over HTTP.

End-to-end behaviour on real time (pokes, coalescing, hub restart, resume, tokens). The status
timeline (reconnecting, polling, catch-up) is asserted on fake time with exact timestamps in
tests/sync/test_status_timeline.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ably import AblyRest

from tests.sandbox_fixtures import demo_sign_in, running_sandbox
from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core import codes
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.queries import PatientLabs, PatientVitals
from wardsync.sandbox.server import Sandbox
from wardsync.sandbox.ward.observations import VitalSigns
from wardsync.sync.workstation import Workstation, WorkstationConfig

NORMAL_LYTES = {
    codes.SODIUM.code: 139.0, codes.POTASSIUM.code: 4.1, codes.UREA.code: 5.2,
    codes.CREATININE.code: 80.0, codes.GLUCOSE.code: 5.5,
}
CRITICAL_LYTES = {**NORMAL_LYTES, codes.POTASSIUM.code: 6.9}
LAB_ONLY = (("category", "http://terminology.hl7.org/CodeSystem/v2-0074|LAB,laboratory"),)




@contextlib.asynccontextmanager
async def workstation(
    sandbox: Sandbox, session: Session, http: httpx.AsyncClient, **overrides: Any
) -> AsyncIterator[tuple[Workstation, MemoryMetrics]]:
    info = sandbox.ready_info()
    cfg = WorkstationConfig(
        fhir_base=info["fhir_base"], ward=info["ward"], realtime_endpoint=info["ably_endpoint"],
        realtime_token_url=info["ably_token_url"], **overrides,
    )
    metrics = MemoryMetrics()
    ws = Workstation(cfg, session, metrics=metrics, http=http,
                     schedule=asyncio.get_running_loop().call_soon)
    await ws.start()
    try:
        yield ws, metrics
    finally:
        await ws.aclose()


def loaded(ws: Workstation, key: Any) -> bool:
    return ws.queries.state(key).status == "ok"


def server_versions(sandbox: Sandbox, rtype: str, patient: str, *extra: tuple[str, str]
                    ) -> dict[str, str]:
    page = sandbox.store.search(
        rtype, [("patient", f"Patient/{patient}"), ("_count", "1000"), *extra])
    return {f"{rtype}/{r['id']}": r["meta"]["versionId"] for r in page.matches}


def held_versions(ws: Workstation, rtype: str, patient: str) -> dict[str, str]:
    ref = f"Patient/{patient}"
    held = ws.store.select(
        rtype, lambda r: (r.get("subject") or {}).get("reference") == ref
    )
    return {f"{rtype}/{r['id']}": r["meta"]["versionId"] for r in held}


async def test_lab_result_reaches_a_headless_workstation(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with workstation(sandbox, clinician, http) as (ws, metrics):
        key = PatientLabs("pat-03")
        ws.open(key)
        await eventually(lambda: loaded(ws, key), what="initial labs")
        await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live")
        before = len(ws.store.of_type("DiagnosticReport"))
        report, observations = await sandbox.lab.post_panel(
            "pat-03", codes.ELECTROLYTES_PANEL.code, NORMAL_LYTES)
        ref = f"DiagnosticReport/{report['id']}"
        await eventually(lambda: ref in ws.store, what="new report in store")
        assert all(f"Observation/{o['id']}" in ws.store for o in observations)
        assert len(ws.store.of_type("DiagnosticReport")) == before + 1
        # The report's own poke arrives too (its results' pokes may have brought it first:
        # the relay announces each resource as its notification arrives).
        await eventually(lambda: ref in {e["ref"] for e in metrics.of("poke_received")},
                         what="the report's poke")
        assert any(e["ref"] == ref and e["versionId"] == "1" for e in metrics.of("pull_done"))
        assert metrics.of("connection_state")[-1]["state"] == "live"


async def test_critical_result_is_pulled_on_the_urgent_path(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with workstation(sandbox, clinician, http) as (ws, metrics):
        key = PatientLabs("pat-04")
        ws.open(key)
        await eventually(lambda: loaded(ws, key) and ws.status.state is ConnectionState.LIVE)
        report, _ = await sandbox.lab.post_panel(
            "pat-04", codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        ref = f"DiagnosticReport/{report['id']}"
        await eventually(lambda: ref in ws.store)
        # The results' pokes may bring the report before its own (urgent) poke arrives.
        await eventually(lambda: any(e["ref"] == ref for e in metrics.of("poke_received")),
                         what="the report's poke")
        poke = next(e for e in metrics.of("poke_received") if e["ref"] == ref)
        assert poke["type"] == "CRITICAL_LAB_RESULT" and poke["priority"] == "urgent"
        pull = next(e for e in metrics.of("pull_done") if e["ref"] == ref)
        # Either the urgent poke's pull brought the report, or a routine pull started by its
        # result Observations' pokes (a few ms earlier) was still in flight: then its result
        # is delivered as urgent, since an urgent poke arrived meanwhile. Only a pull applied
        # before the urgent poke arrived may be routine.
        order = metrics.events.index
        assert pull["urgent"] is True or order(pull) < order(poke)


async def test_a_burst_of_pokes_is_coalesced_into_few_pulls(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with workstation(sandbox, clinician, http, pull_debounce_s=0.2) as (ws, metrics):
        key = PatientVitals("pat-05")
        ws.open(key)
        await eventually(lambda: loaded(ws, key) and ws.status.state is ConnectionState.LIVE)
        pulls_before = ws.queries.state(key).pulls
        vitals = VitalSigns(heart_rate=88, respiratory_rate=18, spo2=96, temperature=37.1,
                            systolic=124, diastolic=78)
        for _ in range(3):  # 21 Observations written back to back
            await sandbox.devices.post_vitals("pat-05", vitals)
        await eventually(
            lambda: held_versions(ws, "Observation", "pat-05").keys()
            >= server_versions(sandbox, "Observation", "pat-05",
                               ("category", codes.CATEGORY_VITAL_SIGNS)).keys(),
            what="all vitals pulled",
        )
        await asyncio.sleep(0.5)
        pokes = [e for e in metrics.of("poke_received")
                 if e["ref"].startswith("Observation/")]
        pulls = ws.queries.state(key).pulls - pulls_before
        assert len(pokes) == 21
        assert 1 <= pulls <= 4, f"{pulls} pulls for 21 pokes"


@pytest.mark.slow
async def test_hub_restart_mid_stream_loses_and_duplicates_nothing(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    patients = ["pat-06", "pat-07"]
    async with workstation(sandbox, clinician, http) as (ws, metrics):
        keys = [PatientLabs(p) for p in patients]
        for k in keys:
            ws.open(k)
        await eventually(lambda: all(loaded(ws, k) for k in keys)
                         and ws.status.state is ConnectionState.LIVE)

        async def writer() -> None:
            for i in range(12):
                await sandbox.lab.post_panel(
                    patients[i % 2], codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.5})
                await asyncio.sleep(0.15)

        writing = asyncio.create_task(writer())
        await asyncio.sleep(0.5)
        await sandbox.hub.stop()
        await asyncio.sleep(1.5)
        await sandbox.hub.start(sandbox.config.host, sandbox.hub.port)
        await writing
        for p in patients:
            for rtype in ("DiagnosticReport", "Observation"):
                await eventually(
                    lambda p=p, rtype=rtype: held_versions(ws, rtype, p)
                    == server_versions(sandbox, rtype, p, *LAB_ONLY),
                    what=f"{rtype} of {p} equal to the server",
                )
        applied = Counter((e["ref"], e["versionId"]) for e in metrics.of("pull_done"))
        assert applied and max(applied.values()) == 1, "a version was applied twice"
        await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live again")
        states = [e["state"] for e in metrics.of("connection_state")]
        assert "reconnecting" in states
        assert ws.catch_ups >= 1


async def test_resume_after_dropped_socket_keeps_every_poke_once(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with workstation(sandbox, clinician, http) as (ws, _):
        key = PatientLabs("pat-09")
        ws.open(key)
        await eventually(lambda: loaded(ws, key) and ws.status.state is ConnectionState.LIVE)
        conn_id = ws.realtime.connection_id
        for i in range(6):
            await sandbox.lab.post_panel("pat-09", codes.LACTATE_PANEL.code,
                                         {codes.LACTATE.code: 1.0 + i / 10})
            if i == 2:
                await sandbox.hub.drop_connections()
        await asyncio.sleep(0.3)
        await sandbox.drain_pokes()
        await eventually(lambda: ws.intake.seq.highest == sandbox.last_seq,
                         what="every poke received")
        assert ws.intake.duplicates == 0
        assert ws.realtime.connection_id == conn_id, "resumed the same connection"
        await eventually(lambda: held_versions(ws, "DiagnosticReport", "pat-09")
                         == server_versions(sandbox, "DiagnosticReport", "pat-09"))


async def test_malformed_and_phi_bearing_pokes_are_counted_and_harmless(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with workstation(sandbox, clinician, http) as (ws, metrics):
        key = PatientLabs("pat-10")
        ws.open(key)
        await eventually(lambda: loaded(ws, key) and ws.status.state is ConnectionState.LIVE)
        rest = AblyRest(key=sandbox.hub_key, use_token_auth=True, endpoint="127.0.0.1",
                        port=sandbox.hub.port, tls=False)
        channel = rest.channels.get(f"ward:{sandbox.ward}")
        bad = [
            "not json at all",
            {"type": "RESOURCE_CHANGED", "resourceType": "Patient", "id": "pat-10",
             "versionId": "2", "seq": 10**6, "priority": "routine", "name": "Zzsample Amber"},
            {"type": "LAB_RESULT_READY", "resourceType": "Observation", "id": "K 6.9 mmol/L",
             "versionId": "1", "seq": 10**6 + 1, "priority": "routine"},
            {"type": "RESOURCE_CHANGED", "resourceType": "Patient", "id": "pat-10",
             "versionId": "1", "seq": 10**6 + 2, "priority": "routine",
             "birthDate": "1950-01-01"},
        ]
        for data in bad:
            await channel.publish("poke", data)
        await rest.close()
        await eventually(lambda: ws.intake.rejected_total == len(bad), what="rejections")
        assert ws.realtime.state == "connected"
        # Rejected content never reaches the metrics log, only reason codes.
        logged = repr(metrics.events)
        assert "Zzsample" not in logged and "1950-01-01" not in logged and "6.9" not in logged
        report, _ = await sandbox.lab.post_panel(
            "pat-10", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.2})
        await eventually(lambda: f"DiagnosticReport/{report['id']}" in ws.store)


async def test_realtime_tokens_renew_repeatedly_without_dropping_the_connection(
    seeded_data_dir: Path, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    from wardsync.sandbox.hub import HubConfig

    hub = HubConfig(max_idle_interval_ms=3000, heartbeat_interval_s=1.0,
                    token_renew_ahead_s=1.5, presence_grace_s=2.0)
    async with running_sandbox(seeded_data_dir, tmp_path, hub_config=hub,
                               realtime_token_ttl_s=2.5) as sb:
        session = await demo_sign_in(sb, http)
        async with workstation(sb, session, http) as (ws, metrics):
            await eventually(lambda: ws.status.state is ConnectionState.LIVE)
            conn_id = ws.realtime.connection_id
            await eventually(lambda: ws.realtime.token_requests >= 4, timeout_s=15,
                             what="three renewals")
            assert ws.realtime.connection_id == conn_id
            states = [e["state"] for e in metrics.of("connection_state")]
            assert "reconnecting" not in states[1:]
            key = PatientLabs("pat-11")
            ws.open(key)
            await eventually(lambda: loaded(ws, key))
            report, _ = await sb.lab.post_panel(
                "pat-11", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.1})
            await eventually(lambda: f"DiagnosticReport/{report['id']}" in ws.store)
        await session.aclose()


async def test_workstation_tokens_cannot_publish_or_join_another_ward(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    from ably.util.exceptions import AblyException

    async with workstation(sandbox, clinician, http) as (ws, _):
        await eventually(lambda: ws.status.state is ConnectionState.LIVE)
        ward = ws.realtime.channel(f"ward:{sandbox.ward}")
        with pytest.raises(AblyException) as err:
            await ward.publish("poke", {"type": "RESOURCE_CHANGED"})
        assert err.value.code == 40160
        other = ws.realtime.client.channels.get("ward:ward-9z")
        with pytest.raises(AblyException) as err:
            await other.attach()
        assert err.value.code == 40160
        assert ws.realtime.state == "connected"


async def test_closing_mid_reconnect_leaves_no_realtime_task_behind(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    from tests.faults.proxy import FaultProxy

    def sdk_tasks() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks() if not t.done() and "/ably/" in getattr(
            getattr(t.get_coro(), "cr_code", None), "co_filename", "")]

    async with FaultProxy("127.0.0.1", sandbox.hub.port) as proxy:
        info = sandbox.ready_info()
        cfg = WorkstationConfig(
            fhir_base=info["fhir_base"], ward=info["ward"], realtime_endpoint=proxy.endpoint,
            realtime_token_url=info["ably_token_url"], degraded_after_s=30.0)
        ws = Workstation(cfg, clinician, http=http)
        await ws.start()
        await eventually(lambda: ws.status.state is ConnectionState.LIVE)
        # The link goes silent and is cut: the SDK's next connect attempt hangs in it.
        proxy.blackhole()
        proxy.drop_all()
        await eventually(lambda: ws.realtime.state == "connecting", what="a hanging connect")
        await asyncio.sleep(0.3)
        assert sdk_tasks(), "the SDK is busy connecting"
        await ws.aclose()
        assert not sdk_tasks(), f"realtime tasks outlived the workstation: {sdk_tasks()}"
