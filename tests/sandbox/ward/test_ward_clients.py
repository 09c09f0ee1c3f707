"""LabSystem and WardDevices on the wire: token handling, writes, corrections, failures."""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from ward_fhir_double import CLIENT_ID, CLIENT_SECRET, FhirDouble

from wardsync.core import codes
from wardsync.fhir.client_credentials import TOKEN_RENEW_MARGIN_S
from wardsync.fhir.errors import (
    AuthError,
    Conflict,
    FhirError,
    Forbidden,
    InvalidResource,
    NotFound,
    ServerError,
    Unreachable,
)
from wardsync.sandbox.ward.devices import VitalSigns, WardDevices
from wardsync.sandbox.ward.lab import LabSystem

NOW = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)
ELECTROLYTES = {
    codes.SODIUM.code: 138,
    codes.POTASSIUM.code: 6.9,
    codes.UREA.code: 9.1,
    codes.CREATININE.code: 102,
    codes.GLUCOSE.code: 5.5,
}


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
async def lab(fhir_double: FhirDouble, clock: FakeMonotonic) -> AsyncIterator[LabSystem]:
    client = LabSystem(
        fhir_base=fhir_double.fhir_base,
        token_url=fhir_double.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        now=lambda: NOW,
        monotonic=clock,
    )
    yield client
    await client.aclose()


def flag(obs: dict) -> str:
    return obs["interpretation"][0]["coding"][0]["code"]


async def test_post_panel_writes_results_then_the_report(lab: LabSystem, fhir_double: FhirDouble):
    report, observations = await lab.post_panel(
        "pat-01", codes.ELECTROLYTES_PANEL.code, ELECTROLYTES, encounter_id="enc-01"
    )
    posts = fhir_double.writes("POST")
    assert [p.path for p in posts] == ["/fhir/Observation"] * 5 + ["/fhir/DiagnosticReport"]
    assert posts[0].headers["Content-Type"] == "application/fhir+json"
    assert posts[0].headers["Authorization"] == "Bearer tok-1"
    # What came back is what the server stored, ids and versions included.
    assert report == fhir_double.of_type("DiagnosticReport")[0]
    assert report["meta"]["versionId"] == "1"
    assert report["result"] == [{"reference": f"Observation/{o['id']}"} for o in observations]
    assert report["status"] == "final"
    assert report["encounter"] == {"reference": "Encounter/enc-01"}
    assert report["identifier"][0]["value"].startswith("LAB-")
    by_code = {o["code"]["coding"][0]["code"]: o for o in observations}
    assert flag(by_code[codes.POTASSIUM.code]) == "HH"
    assert flag(by_code[codes.UREA.code]) == "H"
    assert flag(by_code[codes.SODIUM.code]) == "N"
    assert by_code[codes.POTASSIUM.code]["referenceRange"][0]["high"]["value"] == 5.3
    assert (
        by_code[codes.POTASSIUM.code]["effectiveDateTime"]
        == (NOW - timedelta(minutes=45)).isoformat()
    )
    for resource in [report, *observations]:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


async def test_token_is_client_credentials_with_basic_auth_and_cached(
    lab: LabSystem, fhir_double: FhirDouble, clock: FakeMonotonic
):
    await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.1})
    await lab.post_panel("pat-02", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.3})
    assert len(fhir_double.token_requests) == 1
    request = fhir_double.token_requests[0]
    assert request.body == {"form": {"grant_type": ["client_credentials"]}}
    raw = base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")).decode()
    assert raw == "lab+system:s3cret%2Fwith%2Bodd%3Achars"  # each part form-urlencoded

    # Shortly before expiry the token is renewed, not used until it is refused.
    clock.t += fhir_double.token_lifetime_s - TOKEN_RENEW_MARGIN_S - 1
    await lab.post_panel("pat-03", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0})
    assert len(fhir_double.token_requests) == 1
    clock.t += 2
    await lab.post_panel("pat-04", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0})
    assert len(fhir_double.token_requests) == 2
    assert fhir_double.requests[-1].headers["Authorization"] == "Bearer tok-2"


async def test_a_refused_token_is_replaced_and_the_request_retried_once(
    lab: LabSystem, fhir_double: FhirDouble
):
    await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.1})
    fhir_double.revoke_all()
    report, _ = await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.2})
    assert report["status"] == "final"
    assert len(fhir_double.token_requests) == 2
    assert len(fhir_double.of_type("Observation")) == 2

    fhir_double.refuse_all_tokens = True
    before = len(fhir_double.requests)
    with pytest.raises(AuthError) as err:
        await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.3})
    assert err.value.transient and err.value.status == 401
    assert len(fhir_double.requests) - before == 2  # exactly one retry


async def test_wrong_secret_is_an_auth_failure_naming_only_the_oauth_error(
    fhir_double: FhirDouble,
):
    lab = LabSystem(
        fhir_base=fhir_double.fhir_base,
        token_url=fhir_double.token_url,
        client_id=CLIENT_ID,
        client_secret="wrong",
    )
    try:
        with pytest.raises(AuthError, match="invalid_client"):
            await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.1})
    finally:
        await lab.aclose()
    assert fhir_double.requests == []


async def test_a_half_written_panel_resumes_without_duplicates(
    lab: LabSystem, fhir_double: FhirDouble
):
    fhir_double.fail_after(2, 503)  # two results get through, the third POST meets a 503
    with pytest.raises(ServerError) as err:
        await lab.post_panel(
            "pat-01", codes.ELECTROLYTES_PANEL.code, ELECTROLYTES, accession="ACC-42"
        )
    assert err.value.status == 503
    # The message names the interaction and issue code, never the server's diagnostics.
    assert str(err.value) == "POST Observation -> 503 (transient)"
    assert len(fhir_double.of_type("Observation")) == 2
    assert fhir_double.of_type("DiagnosticReport") == []

    report, observations = await lab.post_panel(
        "pat-01", codes.ELECTROLYTES_PANEL.code, ELECTROLYTES, accession="ACC-42"
    )
    assert len(fhir_double.of_type("Observation")) == 5  # 2 reused, 3 new
    assert report["identifier"][0]["value"] == "ACC-42"
    assert [r["reference"] for r in report["result"]] == [
        f"Observation/{o['id']}" for o in fhir_double.of_type("Observation")
    ]
    assert len({o["id"] for o in observations}) == 5


async def test_correct_report_puts_with_if_match_and_marks_corrected(
    lab: LabSystem, fhir_double: FhirDouble
):
    report, _ = await lab.post_panel("pat-01", codes.ELECTROLYTES_PANEL.code, ELECTROLYTES)
    corrected, observations = await lab.correct_report(report["id"], {codes.POTASSIUM.code: 4.4})

    puts = fhir_double.writes("PUT")
    assert [p.path.split("/")[2] for p in puts] == ["Observation", "DiagnosticReport"]
    assert all(p.headers["If-Match"] == 'W/"1"' for p in puts)
    assert corrected["status"] == "corrected"
    assert corrected["meta"]["versionId"] == "2"
    assert corrected["result"] == report["result"]
    potassium = next(
        o for o in observations if o["code"]["coding"][0]["code"] == codes.POTASSIUM.code
    )
    assert potassium["status"] == "corrected"
    assert potassium["valueQuantity"]["value"] == 4.4
    assert flag(potassium) == "N"
    assert potassium["meta"]["versionId"] == "2"
    untouched = [o for o in observations if o is not potassium]
    assert all(o["meta"]["versionId"] == "1" and o["status"] == "final" for o in untouched)


async def test_a_concurrent_change_is_a_conflict_not_an_overwrite(
    lab: LabSystem, fhir_double: FhirDouble
):
    report, observations = await lab.post_panel(
        "pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 5.0}
    )
    fhir_double.concurrent_update_after_read = "Observation"
    with pytest.raises(Conflict) as err:
        await lab.correct_report(report["id"], {codes.LACTATE.code: 1.2})
    assert not err.value.transient and err.value.status == 412
    [put] = fhir_double.writes("PUT")
    assert put.headers["If-Match"] == 'W/"1"'
    stored = fhir_double.resources["Observation"][observations[0]["id"]]
    assert stored["valueQuantity"]["value"] == 5.0  # the other client's version stands
    assert fhir_double.of_type("DiagnosticReport")[0]["status"] == "final"


async def test_bad_input_is_refused_before_anything_is_sent(lab: LabSystem, fhir_double):
    with pytest.raises(ValueError, match="unknown lab panel"):
        await lab.post_panel("pat-01", "0000-0", {codes.LACTATE.code: 1.0})
    with pytest.raises(ValueError, match="not part of panel"):
        await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.SODIUM.code: 140})
    with pytest.raises(ValueError, match="finite"):
        await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: math.nan})
    with pytest.raises(ValueError, match="at least one"):
        await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {})
    with pytest.raises(ValueError, match="status"):
        await lab.post_panel(
            "pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0}, status="corrected"
        )
    assert fhir_double.requests == [] and fhir_double.token_requests == []


async def test_correcting_a_test_the_report_lacks_is_refused(lab: LabSystem, fhir_double):
    report, _ = await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0})
    with pytest.raises(ValueError, match=codes.SODIUM.code):
        await lab.correct_report(report["id"], {codes.SODIUM.code: 140})
    assert fhir_double.writes("PUT") == []


async def test_server_errors_map_to_typed_errors(lab: LabSystem, fhir_double):
    fhir_double.fail_next = [422]
    with pytest.raises(InvalidResource) as rejected:
        await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0})
    assert not rejected.value.transient
    assert str(rejected.value) == "POST Observation -> 422 (invalid)"
    fhir_double.fail_next = [500]
    with pytest.raises(ServerError):
        await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0})
    with pytest.raises(NotFound, match="404"):
        await lab.correct_report("no-such-report", {codes.LACTATE.code: 1.0})


async def test_a_server_that_is_down_is_transient():
    async with httpx.AsyncClient() as http:
        lab = LabSystem(
            fhir_base="http://127.0.0.1:9/fhir",
            token_url="http://127.0.0.1:9/token",
            client_id="x",
            client_secret="y",
            http=http,
        )
        with pytest.raises(Unreachable, match="ConnectError"):
            await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0})
        await lab.aclose()
        assert not http.is_closed  # a client passed in belongs to the caller


async def test_return_minimal_servers_are_read_back(lab: LabSystem, fhir_double):
    fhir_double.minimal_responses = True
    report, observations = await lab.post_panel(
        "pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0}
    )
    assert report["resourceType"] == "DiagnosticReport" and report["meta"]["versionId"] == "1"
    assert observations[0]["valueQuantity"]["value"] == 1.0
    assert len(fhir_double.writes("GET")) == 2


async def test_ward_devices_post_a_round_of_vitals(fhir_double: FhirDouble):
    devices = WardDevices(
        fhir_base=fhir_double.fhir_base,
        token_url=fhir_double.token_url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        now=lambda: NOW,
    )
    try:
        stored = await devices.post_vitals(
            "pat-02", VitalSigns(118, 23, 93, 38.4, 98, 60, "C", True), encounter_id="enc-02"
        )
        fhir_double.fail_next = [503]
        with pytest.raises(ServerError):
            await devices.post_vitals(
                "pat-02", VitalSigns(80, 16, 97, 37.0, 120, 70), round_id="r1"
            )
        await devices.post_vitals("pat-02", VitalSigns(80, 16, 97, 37.0, 120, 70), round_id="r1")
    finally:
        await devices.aclose()
    assert len(stored) == len(codes.VITAL_SIGNS)
    assert {o["code"]["coding"][0]["code"] for o in stored} == {c.code for c in codes.VITAL_SIGNS}
    assert all(o["subject"] == {"reference": "Patient/pat-02"} for o in stored)
    assert all(o["effectiveDateTime"] == NOW.isoformat() for o in stored)
    assert len(fhir_double.of_type("Observation")) == 2 * len(codes.VITAL_SIGNS)


@pytest.mark.parametrize(("status", "error", "transient"), [
    (400, InvalidResource, False),
    (403, Forbidden, True),
    (404, NotFound, False),
    (408, ServerError, True),
    (409, FhirError, False),
    (412, Conflict, False),
    (429, ServerError, True),
    (502, ServerError, True),
])
async def test_statuses_map_to_the_fhir_client_errors(
    lab: LabSystem, fhir_double: FhirDouble, status: int, error: type[FhirError],
    transient: bool,
):
    fhir_double.fail_next = [status]
    with pytest.raises(FhirError) as raised:
        await lab.post_panel("pat-01", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0})
    assert type(raised.value) is error
    assert raised.value.transient is transient and raised.value.status == status
    assert str(raised.value).startswith(f"POST Observation -> {status}")
