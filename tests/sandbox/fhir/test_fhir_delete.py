"""DELETE (R4 http.html#delete) on the store and over the REST API."""

from __future__ import annotations

import httpx
import pytest
from fhir_testdata import auth, observation, patient

from conftest import FhirServer
from wardsync.sandbox.fhir import FhirStore
from wardsync.sandbox.fhir.store import ResourceGone


async def test_delete_then_read_is_410_and_search_no_longer_finds_it(
        client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    oid = (await client.post("/Observation", json=observation(pid))).json()["id"]
    r = await client.delete(f"/Observation/{oid}")
    assert r.status_code == 204 and r.content == b""
    r = await client.get(f"/Observation/{oid}")
    assert r.status_code == 410
    assert r.json()["issue"][0]["code"] == "deleted"
    r = await client.get("/Observation", params={"patient": f"Patient/{pid}"})
    assert r.json()["total"] == 0
    r = await client.get("/Observation")
    assert all(e["resource"]["id"] != oid for e in r.json().get("entry", []))
    # Repeating the DELETE, or deleting what never existed, succeeds (R4 http.html#delete).
    assert (await client.delete(f"/Observation/{oid}")).status_code == 204
    assert (await client.delete("/Observation/never-was")).status_code == 204


async def test_history_shows_the_delete_and_vread_of_it_is_gone(
        client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    assert (await client.delete(f"/Patient/{pid}")).status_code == 204
    history = (await client.get(f"/Patient/{pid}/_history")).json()
    first = history["entry"][0]
    assert first["request"] == {"method": "DELETE", "url": f"Patient/{pid}"}
    assert "resource" not in first
    assert history["entry"][1]["resource"]["meta"]["versionId"] == "1"
    assert (await client.get(f"/Patient/{pid}/_history/2")).status_code == 410
    assert (await client.get(f"/Patient/{pid}/_history/1")).status_code == 200


async def test_put_after_delete_recreates_with_the_next_version(
        client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    await client.delete(f"/Patient/{pid}")
    r = await client.put(f"/Patient/{pid}", json={**patient(), "id": pid})
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["versionId"] == "3"
    assert (await client.get(f"/Patient/{pid}")).status_code == 200


async def test_delete_needs_the_d_scope(fhir_server: FhirServer) -> None:
    async with httpx.AsyncClient(base_url=fhir_server.base, headers=auth("reader")) as reader:
        pid = fhir_server.store.create(patient())["id"]
        r = await reader.delete(f"/Patient/{pid}")
        assert r.status_code == 403
    assert fhir_server.store.read("Patient", pid)["id"] == pid


def test_store_delete_reports_one_change_in_commit_order(store: FhirStore) -> None:
    seen = []
    store.add_listener(seen.append)
    pid = store.create(patient())["id"]
    change = store.delete("Patient", pid)
    assert change is not None and change.deleted and change.version_id == "2"
    assert store.delete("Patient", pid) is None
    assert [c.interaction for c in seen] == ["create", "delete"]
    assert [c.seq for c in store.changes_after(0)] == [seen[0].seq, seen[1].seq]
    assert store.last_seq() == seen[1].seq
    with pytest.raises(ResourceGone):
        store.read("Patient", pid)
    assert store.history("Patient", pid)[0]["meta"]["versionId"] == "1"
