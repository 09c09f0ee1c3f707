"""The FHIR client against the real sandbox FHIR server over loopback HTTP."""

from __future__ import annotations

import socket

import httpx
import pytest

from wardsync.auth.session import Session
from wardsync.core.errors import SignInError
from wardsync.fhir.client import (
    FhirClient,
    InsecureServer,
    _validate_entries,
    require_secure_url,
)
from wardsync.fhir.errors import (
    AuthError,
    Conflict,
    InvalidResource,
    NotFound,
    ServerError,
    Unreachable,
)
from wardsync.sandbox.server import Sandbox


class CountingTokens:
    """A TokenSource that hands out `first` until the server rejects it, then the real one."""

    def __init__(self, first: str, real: Session | None) -> None:
        self.current = first
        self.real = real
        self.refreshes = 0

    async def access_token(self) -> str:
        return self.current

    async def refresh_after_rejection(self, rejected: str) -> str:
        self.refreshes += 1
        if self.real is None:
            raise SignInError("no session", oauth_error="invalid_grant")
        self.current = await self.real.access_token()
        return self.current


@pytest.fixture
async def fhir(sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient) -> FhirClient:
    return FhirClient(sandbox.fhir_base, clinician, http=http)


async def test_read_and_search_follow_next_links(fhir: FhirClient) -> None:
    patient = await fhir.read("Patient", "pat-01")
    assert patient["resourceType"] == "Patient" and patient["meta"]["versionId"] == "1"

    one_page = await fhir.search("Observation", {"patient": "Patient/pat-01", "_count": "500"})
    paged = await fhir.search("Observation", {"patient": "Patient/pat-01", "_count": "7"})
    assert one_page.pages == 1 and paged.pages > 3
    assert one_page.total == paged.total == len(paged.matches) > 20
    ids = [o["id"] for o in paged.matches]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == sorted(o["id"] for o in one_page.matches)


async def test_include_results_are_separate_from_matches(fhir: FhirClient) -> None:
    result = await fhir.search(
        "DiagnosticReport",
        {"patient": "Patient/pat-01", "_include": "DiagnosticReport:result"},
    )
    assert result.matches and all(r["resourceType"] == "DiagnosticReport" for r in result.matches)
    included = {f"Observation/{o['id']}" for o in result.included}
    referenced = {ref["reference"] for r in result.matches for ref in r.get("result", [])}
    assert referenced and referenced <= included


async def test_expired_token_is_refreshed_exactly_once(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    tokens = CountingTokens("not-a-valid-token", clinician)
    client = FhirClient(sandbox.fhir_base, tokens, http=http)
    assert (await client.read("Patient", "pat-02"))["id"] == "pat-02"
    assert tokens.refreshes == 1
    await client.read("Patient", "pat-03")
    assert tokens.refreshes == 1


async def test_second_401_is_an_auth_error(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    client = FhirClient(sandbox.fhir_base, CountingTokens("bad", None), http=http)
    with pytest.raises(AuthError) as err:
        await client.read("Patient", "pat-01")
    assert "sign in" in err.value.user_message


async def test_not_found_and_conflict_keep_the_server_version(fhir: FhirClient) -> None:
    with pytest.raises(NotFound):
        await fhir.read("Patient", "no-such-patient")
    task = (await fhir.search("Task", {"patient": "Patient/pat-01"})).matches[0]
    stale_version = task["meta"]["versionId"]
    mine = dict(task, status="in-progress")
    saved = await fhir.update(mine, if_match_version=stale_version)
    assert int(saved["meta"]["versionId"]) == int(stale_version) + 1
    theirs = dict(task, status="cancelled")
    with pytest.raises(Conflict) as err:
        await fhir.update(theirs, if_match_version=stale_version)
    assert err.value.status == 412
    assert (await fhir.read("Task", task["id"]))["status"] == "in-progress"


async def test_invalid_resource_names_the_field(fhir: FhirClient) -> None:
    bad = {"resourceType": "Observation", "code": {"text": "x"}}  # status is required
    with pytest.raises(InvalidResource) as err:
        await fhir.create(bad)
    assert any("Observation.status" in i.expression for i in err.value.issues)


async def test_server_errors_are_typed(sandbox: Sandbox, fhir: FhirClient) -> None:
    sandbox.faults.fail(status=503, for_s=30)
    with pytest.raises(ServerError) as err:
        await fhir.read("Patient", "pat-01")
    assert err.value.status == 503
    sandbox.faults.clear()
    assert (await fhir.read("Patient", "pat-01"))["id"] == "pat-01"


async def test_unreachable_server(clinician: Session, http: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens here
    client = FhirClient(f"http://127.0.0.1:{port}/fhir", clinician, http=http)
    with pytest.raises(Unreachable) as err:
        await client.read("Patient", "pat-01")
    assert err.value.user_message == "server not reachable"


def test_plain_http_is_refused_off_loopback() -> None:
    assert require_secure_url("http://127.0.0.1:8080/fhir")
    assert require_secure_url("https://fhir.example.org/r4")
    with pytest.raises(InsecureServer):
        require_secure_url("http://fhir.example.org/r4")
    with pytest.raises(InsecureServer):
        require_secure_url("ftp://fhir.example.org/r4")


def test_invalid_entries_become_error_rows_not_losses() -> None:
    entries = [
        {"resource": {"resourceType": "Patient", "id": "a"}, "search": {"mode": "match"}},
        {"resource": {"resourceType": "Observation", "id": "b", "code": {"text": "x"}},
         "search": {"mode": "match"}},
        {"resource": {"resourceType": "OperationOutcome", "issue": []},
         "search": {"mode": "outcome"}},
    ]
    out = _validate_entries(entries)
    assert [m for m, _ in out] == ["match", "match"]
    assert out[0][1]["id"] == "a"
    assert out[1][1].ref == "Observation/b"
    assert "Observation.status" in str(out[1][1].error)


async def test_versions_the_caller_holds_are_not_validated_again(fhir: FhirClient) -> None:
    first = await fhir.search("Observation", {"patient": "Patient/pat-01", "_count": "500"})
    held = {f"Observation/{o['id']}": o["meta"]["versionId"] for o in first.matches}
    newest = sorted(held)[0]
    held[newest] = "0"  # pretend we hold an older version of one of them
    again = await fhir.search("Observation", {"patient": "Patient/pat-01", "_count": "500"},
                              known=lambda ref, v: held.get(ref) == v)
    assert [f"Observation/{o['id']}" for o in again.matches] == [newest]
    assert len(again.unchanged) == len(first.matches) - 1


def test_unchanged_entries_skip_validation_entirely() -> None:
    bogus = {"resourceType": "Observation", "id": "b", "meta": {"versionId": "3"}}  # no status
    out = _validate_entries([{"resource": bogus}], known=lambda ref, v: (ref, v) == (
        "Observation/b", "3"))
    assert out == [("known", bogus)]
