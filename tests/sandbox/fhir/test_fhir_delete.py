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


async def test_type_history_since_lists_every_version_deletes_included_newest_first(
        client: httpx.AsyncClient, fhir_server: FhirServer) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    before = (await client.post("/Observation", json=observation(pid))).json()
    since = before["meta"]["lastUpdated"]
    oid = (await client.post("/Observation", json=observation(pid))).json()["id"]
    assert (await client.delete(f"/Observation/{oid}")).status_code == 204
    r = await client.get("/Observation/_history", params={"_since": since})
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "history" and bundle["total"] == 3
    first, second, third = bundle["entry"]
    # The delete: a request and a response, no resource (R4 http.html#history).
    assert first["request"] == {"method": "DELETE", "url": f"Observation/{oid}"}
    assert first["response"]["etag"] == 'W/"2"' and "resource" not in first
    assert first["response"]["lastModified"] > second["response"]["lastModified"]
    assert second["resource"]["id"] == oid and second["request"]["method"] == "POST"
    assert third["resource"]["id"] == before["id"]  # `_since` is inclusive
    # An instant after every write finds nothing; other types stay out.
    r = await client.get("/Observation/_history", params={"_since": "2999-01-01T00:00:00Z"})
    assert r.status_code == 200 and r.json()["total"] == 0 and "entry" not in r.json()
    r = await client.get("/Patient/_history")
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [pid]


async def test_type_history_pages_over_a_snapshot(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    ids = [(await client.post("/Observation", json=observation(pid))).json()["id"]
           for _ in range(5)]
    page = (await client.get("/Observation/_history", params={"_count": "2"})).json()
    seen = [e["resource"]["id"] for e in page["entry"]]
    await client.post("/Observation", json=observation(pid))  # after the snapshot
    while next_url := next((link["url"] for link in page["link"]
                            if link["relation"] == "next"), None):
        page = (await client.get(next_url)).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
    assert seen == ids[::-1]


async def test_type_history_refuses_what_it_does_not_support(
        client: httpx.AsyncClient, fhir_server: FhirServer) -> None:
    for params in ({"_since": "yesterday"}, {"_since": "2026-01-01"}, {"_at": "2026"},
                   {"_count": "-1"}):
        r = await client.get("/Observation/_history", params=params)
        assert r.status_code == 400, params
    async with httpx.AsyncClient(base_url=fhir_server.base, headers=auth("reader")) as reader:
        assert (await reader.get("/Observation/_history")).status_code == 200
