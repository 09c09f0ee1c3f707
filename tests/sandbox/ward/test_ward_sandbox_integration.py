"""The ward clients and simulator against the real sandbox FHIR and OAuth servers.

Both servers are installed on one aiohttp application on 127.0.0.1 (port 0), the store is
seeded with `build_ward`, and the laboratory and bedside-device clients authenticate with
client_credentials exactly as the assembled sandbox will let them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from aiohttp import web

from wardsync.core import codes
from wardsync.core.critical import assess_report
from wardsync.fhir.errors import AuthError
from wardsync.sandbox.fhir import FhirApi, FhirStore, ResourceChange
from wardsync.sandbox.oauth import OAuthServer, default_clients, default_demo_users
from wardsync.sandbox.ward.devices import VitalSigns, WardDevices
from wardsync.sandbox.ward.lab import LabSystem
from wardsync.sandbox.ward.seed import WARD_ID, build_ward
from wardsync.sandbox.ward.simulator import SimulatorConfig, WardSimulator

LAB_CLIENT = "lab-system"
DEVICES_CLIENT = "ward-devices"


@dataclass
class Sandbox:
    store: FhirStore
    base: str
    secrets: dict[str, str]
    changes: list[ResourceChange]
    seeded: list[dict]

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.base}/oauth/token"

    def client_kwargs(self, client_id: str) -> dict[str, str]:
        return {
            "fhir_base": self.fhir_base,
            "token_url": self.token_url,
            "client_id": client_id,
            "client_secret": self.secrets[client_id],
        }

    def all_of(self, rtype: str) -> list[dict]:
        return self.store.search(rtype, {"_count": "5000"}).matches


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    client_secrets = {
        LAB_CLIENT: secrets.token_urlsafe(24),
        DEVICES_CLIENT: secrets.token_urlsafe(24),
    }
    store = FhirStore(":memory:")
    seeded = build_ward(3, now=datetime.now(UTC), patients=8)
    store.load(seeded)  # the server's own validation accepts every seeded resource
    changes: list[ResourceChange] = []
    store.add_listener(changes.append)
    holder: dict[str, str] = {}
    oauth = OAuthServer(
        issuer=lambda: holder["base"],
        fhir_base=lambda: f"{holder['base']}/fhir",
        signing_key=secrets.token_bytes(32),
        users=default_demo_users(),
        clients=default_clients(client_secrets),
        ward=WARD_ID,
    )
    app = web.Application()
    oauth.install(app)
    FhirApi(store, oauth.verify_bearer).install(app, "/fhir")
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    holder["base"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield Sandbox(store, holder["base"], client_secrets, changes, seeded)
    finally:
        await runner.cleanup()
        store.close()


async def test_lab_results_and_a_correction_land_in_the_server(sandbox: Sandbox):
    lab = LabSystem(**sandbox.client_kwargs(LAB_CLIENT))
    try:
        values = {
            codes.SODIUM.code: 139,
            codes.POTASSIUM.code: 6.8,
            codes.UREA.code: 6.0,
            codes.CREATININE.code: 90,
            codes.GLUCOSE.code: 5.2,
        }
        report, observations = await lab.post_panel(
            "pat-02", codes.ELECTROLYTES_PANEL.code, values, encounter_id="enc-02"
        )
        stored = sandbox.store.read("DiagnosticReport", report["id"])
        assert stored["status"] == "final"
        assert stored["subject"] == {"reference": "Patient/pat-02"}
        held = [sandbox.store.read("Observation", o["id"]) for o in observations]
        assert assess_report(stored, held).is_critical  # the app would alert on this one

        corrected, _ = await lab.correct_report(report["id"], {codes.POTASSIUM.code: 4.6})
        assert corrected["status"] == "corrected" and corrected["meta"]["versionId"] == "2"
        stored = sandbox.store.read("DiagnosticReport", report["id"])
        held = [sandbox.store.read("Observation", o["id"]) for o in observations]
        assert stored["status"] == "corrected"
        assert not assess_report(stored, held).is_critical
        potassium = next(o for o in held if o["code"]["coding"][0]["code"] == codes.POTASSIUM.code)
        assert potassium["valueQuantity"]["value"] == 4.6 and potassium["status"] == "corrected"
        # Writes went through the REST API: creates then If-Match updates.
        kinds = [(c.resource_type, c.version_id) for c in sandbox.changes]
        assert kinds[:6] == [("Observation", "1")] * 5 + [("DiagnosticReport", "1")]
        assert kinds[6:] == [("Observation", "2"), ("DiagnosticReport", "2")]
    finally:
        await lab.aclose()


async def test_devices_write_vitals_and_a_wrong_secret_is_refused(sandbox: Sandbox):
    devices = WardDevices(**sandbox.client_kwargs(DEVICES_CLIENT))
    try:
        stored = await devices.post_vitals(
            "pat-01", VitalSigns(104, 22, 94, 38.3, 108, 64), encounter_id="enc-01"
        )
    finally:
        await devices.aclose()
    assert len(stored) == len(codes.VITAL_SIGNS)
    for obs in stored:
        assert sandbox.store.read("Observation", obs["id"])["subject"] == {
            "reference": "Patient/pat-01"
        }
    wrong = LabSystem(**{**sandbox.client_kwargs(LAB_CLIENT), "client_secret": "wrong"})
    try:
        with pytest.raises(AuthError, match="invalid_client"):
            await wrong.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0})
    finally:
        await wrong.aclose()


async def test_the_simulator_writes_into_the_sandbox_for_a_couple_of_seconds(sandbox: Sandbox):
    patients = [r["id"] for r in sandbox.seeded if r["resourceType"] == "Patient"]
    encounters = {
        r["subject"]["reference"].removeprefix("Patient/"): r["id"]
        for r in sandbox.seeded
        if r["resourceType"] == "Encounter"
    }
    reports_before = len(sandbox.all_of("DiagnosticReport"))
    lab = LabSystem(**sandbox.client_kwargs(LAB_CLIENT))
    devices = WardDevices(**sandbox.client_kwargs(DEVICES_CLIENT))
    sim = WardSimulator(
        lab=lab,
        devices=devices,
        patients=patients,
        encounters=encounters,
        config=SimulatorConfig(
            results_per_min=600,
            vitals_per_min=300,
            correction_probability=0.2,
            critical_probability=0.2,
            seed=5,
        ),
    )
    try:
        sim.start()
        await asyncio.sleep(2.0)
        await sim.stop()
    finally:
        await lab.aclose()
        await devices.aclose()

    assert sim.stats.rejected == 0 and sim.stats.failed_attempts == 0
    assert sim.stats.lab_results >= 5 and sim.stats.vitals_rounds >= 2
    reports = sandbox.all_of("DiagnosticReport")
    assert len(reports) - reports_before == sim.stats.lab_results
    written = [
        r for r in reports if r.get("identifier", [{}])[0].get("value", "").startswith("SIM-")
    ]
    assert len(written) == sim.stats.lab_results
    # a report may be corrected more than once: each correction is one more version
    assert sum(int(r["meta"]["versionId"]) - 1 for r in written) == sim.stats.corrections
    assert all(r["status"] == "corrected" for r in written if r["meta"]["versionId"] != "1")
    for report in written:
        patient = report["subject"]["reference"].removeprefix("Patient/")
        assert patient in patients
        assert report["encounter"] == {"reference": f"Encounter/{encounters[patient]}"}
        for ref in report["result"]:
            obs = sandbox.store.read("Observation", ref["reference"].removeprefix("Observation/"))
            assert obs["subject"] == report["subject"]
    created_vitals = [
        c
        for c in sandbox.changes
        if c.resource_type == "Observation"
        and c.resource["category"][0]["coding"][0]["code"] == codes.CATEGORY_VITAL_SIGNS
    ]
    assert len(created_vitals) >= sim.stats.vitals_rounds * len(codes.VITAL_SIGNS)
