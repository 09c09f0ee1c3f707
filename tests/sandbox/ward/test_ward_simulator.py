"""The ward simulator against a loopback server: writes, survives failures, stops cleanly."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
from ward_fhir_double import CLIENT_ID, CLIENT_SECRET, FhirDouble

from wardsync.core import codes
from wardsync.sandbox.ward.devices import WardDevices
from wardsync.sandbox.ward.lab import LabSystem
from wardsync.sandbox.ward.simulator import SimulatorConfig, WardSimulator

PATIENTS = [f"pat-{n:02d}" for n in range(1, 7)]
ENCOUNTERS = {p: p.replace("pat", "enc") for p in PATIENTS}
FAST = {
    "results_per_min": 1200.0,
    "vitals_per_min": 600.0,
    "retry_initial_s": 0.01,
    "retry_max_s": 0.05,
}


@pytest.fixture
async def clients(fhir_double: FhirDouble) -> AsyncIterator[tuple[LabSystem, WardDevices]]:
    kwargs = {
        "fhir_base": fhir_double.fhir_base,
        "token_url": fhir_double.token_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    lab, devices = LabSystem(**kwargs), WardDevices(**kwargs)
    yield lab, devices
    await lab.aclose()
    await devices.aclose()


def simulator(clients, **config) -> WardSimulator:
    lab, devices = clients
    return WardSimulator(
        lab=lab,
        devices=devices,
        patients=PATIENTS,
        encounters=ENCOUNTERS,
        config=SimulatorConfig(**config),
    )


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def referenced(double: FhirDouble) -> list[str]:
    return [
        r["reference"].split("/")[1]
        for report in double.of_type("DiagnosticReport")
        for r in report["result"]
    ]


async def test_writes_results_vitals_and_corrections_then_stops(clients, fhir_double):
    sim = simulator(clients, correction_probability=0.3, critical_probability=0.3, **FAST)
    sim.start()
    with pytest.raises(RuntimeError, match="already"):
        sim.start()
    await wait_for(lambda: sim.stats.lab_results >= 10 and sim.stats.corrections >= 2)
    await wait_for(lambda: sim.stats.vitals_rounds >= 5)
    await sim.stop()
    assert not sim.running
    await sim.stop()  # idempotent

    reports = fhir_double.of_type("DiagnosticReport")
    assert len(reports) == sim.stats.lab_results
    corrected = [r for r in reports if r["status"] == "corrected"]
    assert corrected and all(int(r["meta"]["versionId"]) >= 2 for r in corrected)
    for report in reports:
        assert report["subject"]["reference"].removeprefix("Patient/") in PATIENTS
        patient = report["subject"]["reference"].removeprefix("Patient/")
        assert report["encounter"] == {"reference": f"Encounter/{ENCOUNTERS[patient]}"}
        assert report["identifier"][0]["value"].startswith("SIM-")
    flags = {
        o["interpretation"][0]["coding"][0]["code"]
        for o in fhir_double.of_type("Observation")
        if "interpretation" in o
    }
    assert flags & {"HH", "LL"}
    vitals = [
        o
        for o in fhir_double.of_type("Observation")
        if o["category"][0]["coding"][0]["code"] == codes.CATEGORY_VITAL_SIGNS
    ]
    assert len(vitals) >= 5 * len(codes.VITAL_SIGNS)
    # Every lab result belongs to exactly one report (no orphans, no duplicates).
    labs = [
        o["id"]
        for o in fhir_double.of_type("Observation")
        if o["category"][0]["coding"][0]["code"] == codes.CATEGORY_LABORATORY
    ]
    # Writes in flight when stop() cancelled may leave results of an unfinished panel behind.
    assert sorted(referenced(fhir_double)) == sorted(set(referenced(fhir_double)))
    assert len(labs) - len(referenced(fhir_double)) <= 5


async def test_survives_a_failing_server_and_retries_the_same_write(clients, fhir_double, caplog):
    caplog.set_level(logging.INFO, logger="wardsync.sandbox.ward")
    fhir_double.fail_next = [503, 500, 502, 503, 503, 401, 503, 503]
    sim = simulator(clients, **FAST)
    sim.start()
    await wait_for(lambda: sim.stats.lab_results >= 5 and sim.stats.vitals_rounds >= 5)
    fhir_double.revoke_all()  # tokens revoked mid-run: re-fetched, writing goes on
    done = sim.stats.lab_results
    await wait_for(lambda: sim.stats.lab_results >= done + 5)
    await sim.stop()

    assert sim.stats.failed_attempts >= 1
    assert sim.stats.rejected == 0
    assert len(fhir_double.token_requests) >= 2
    # Retried panels resumed instead of starting over: no result is reported twice and
    # none is left without its report.
    refs = referenced(fhir_double)
    assert len(refs) == len(set(refs))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all("retrying" in r.getMessage() for r in warnings)
    for record in caplog.records:  # no patient data in the logs
        message = record.getMessage()
        assert "pat-" not in message and "SECRET" not in message and "enc-" not in message


async def test_rejected_writes_are_dropped_and_the_simulator_goes_on(clients, fhir_double):
    fhir_double.fail_next = [422, 400, 422]
    sim = simulator(clients, **FAST)
    sim.start()
    await wait_for(lambda: sim.stats.lab_results + sim.stats.vitals_rounds >= 10)
    await sim.stop()
    assert sim.stats.rejected == 3
    assert sim.stats.failed_attempts == 0


async def test_an_unusable_reply_drops_that_write_and_the_simulation_goes_on(
    clients, fhir_double, caplog
):
    fhir_double.reply_without_id = {"DiagnosticReport"}
    sim = simulator(clients, **FAST)
    sim.start()
    await wait_for(lambda: sim.stats.rejected >= 3 and sim.stats.vitals_rounds >= 3)
    assert sim.running
    await sim.stop()
    assert sim.stats.lab_results == 0
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped and all(r.exc_info for r in dropped)


async def test_keeps_trying_while_the_server_is_down_and_stops_promptly(clients, fhir_double):
    lab, devices = clients
    down = {
        "fhir_base": "http://127.0.0.1:9/fhir",
        "token_url": "http://127.0.0.1:9/token",
        "client_id": "x",
        "client_secret": "y",
    }
    lab, devices = LabSystem(**down), WardDevices(**down)
    sim = WardSimulator(
        lab=lab,
        devices=devices,
        patients=PATIENTS,
        encounters={},
        config=SimulatorConfig(**FAST),
    )
    try:
        sim.start()
        await wait_for(lambda: sim.stats.failed_attempts >= 5)
        assert sim.running  # it never dies from write errors
        started = time.monotonic()
        await sim.stop()
        assert time.monotonic() - started < 1.0
    finally:
        await lab.aclose()
        await devices.aclose()
    assert sim.stats.lab_results == sim.stats.vitals_rounds == 0


async def test_retry_delay_backs_off_and_is_capped(clients, fhir_double):
    slept: list[float] = []

    async def recording_sleep(delay: float) -> None:
        slept.append(delay)
        await asyncio.sleep(0)

    fhir_double.fail_next = [503] * 6
    lab, devices = clients
    config = SimulatorConfig(
        results_per_min=0, vitals_per_min=60, retry_initial_s=1.0, retry_max_s=4.0
    )
    sim = WardSimulator(
        lab=lab,
        devices=devices,
        patients=PATIENTS,
        encounters=ENCOUNTERS,
        config=config,
        sleep=recording_sleep,
    )
    sim.start()
    await wait_for(lambda: sim.stats.vitals_rounds >= 2)
    await sim.stop()
    # planned gap, six retries of the same write (doubling, capped), then the next gap
    assert slept[1:7] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert slept[0] > 0 and slept[7] > 0 and slept[0] != slept[7]
    assert sim.stats.failed_attempts == 6
    # the same measurement was sent until it got through, then the round went on
    posted = [r.body["code"]["coding"][0]["code"] for r in fhir_double.writes("POST")]
    assert posted[:8] == [codes.HEART_RATE.code] * 7 + [codes.RESPIRATORY_RATE.code]


async def test_nothing_to_do_with_zero_rates(clients, fhir_double):
    sim = simulator(clients, results_per_min=0, vitals_per_min=0)
    sim.start()
    await wait_for(lambda: not sim.running)
    await sim.stop()
    assert fhir_double.requests == []
