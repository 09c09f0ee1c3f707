"""The FHIR REST interactions over real HTTP: auth, read/vread/create/update/history, errors."""

from __future__ import annotations

import email.utils

import httpx
from fhir.resources.R4B import get_fhir_model_class
from fhir_testdata import auth, observation, patient

from conftest import FhirServer
from wardsync.sandbox.fhir.search_params import SEARCH_PARAMETERS

FHIR_JSON = "application/fhir+json"


def assert_outcome(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    get_fhir_model_class("OperationOutcome").model_validate(body)
    return body


async def test_metadata_needs_no_token_and_lists_what_is_served(anon: httpx.AsyncClient
                                                                ) -> None:
    r = await anon.get("/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(FHIR_JSON)
    cs = r.json()
    get_fhir_model_class("CapabilityStatement").model_validate(cs)
    assert cs["fhirVersion"] == "4.0.1" and cs["format"] == ["json"]
    served = {res["type"]: res for res in cs["rest"][0]["resource"]}
    assert set(served) == set(SEARCH_PARAMETERS)
    assert {p["name"] for p in served["Observation"]["searchParam"]} >= {
        "_id", "_lastUpdated", "patient", "subject", "code", "category", "status", "date",
        "encounter"}
    assert "DiagnosticReport:result" in served["DiagnosticReport"]["searchInclude"]
    assert {"Encounter:subject", "Encounter:location"} <= set(
        served["Encounter"]["searchInclude"])
    assert {i["code"] for i in served["Task"]["interaction"]} == {
        "read", "vread", "update", "delete", "create", "history-instance", "history-type",
        "search-type"}


async def test_missing_and_bad_tokens_get_401_with_a_challenge(anon: httpx.AsyncClient) -> None:
    for headers in ({}, auth("no-such-token"), {"Authorization": "Basic YTpi"}, auth("expired"),
                    {"Authorization": "Bearer"}):
        r = await anon.get("/Patient", headers=headers)
        body = assert_outcome(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert body["issue"][0]["code"] == "login"
    r = await anon.get("/Patient", headers=auth("no-such-token"))
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    # An unknown path does not reveal anything without a token either.
    assert_outcome(await anon.get("/Nonsense/1"), 401)


async def test_scopes_are_enforced_per_type_and_interaction(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    oid = (await client.post("/Observation", json=observation(pid))).json()["id"]
    obs_only = auth("obs-only")
    assert (await anon.get(f"/Observation/{oid}", headers=obs_only)).status_code == 200
    assert (await anon.get("/Observation", headers=obs_only)).status_code == 200
    r = await anon.get(f"/Patient/{pid}", headers=obs_only)
    assert_outcome(r, 403)
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert_outcome(await anon.post("/Observation", json=observation(pid), headers=obs_only), 403)
    search_only = auth("obs-search-only")
    assert_outcome(await anon.get(f"/Observation/{oid}", headers=search_only), 403)
    assert (await anon.get("/Observation", headers=search_only)).status_code == 200
    # Update-as-create needs the create permission too.
    # (Vital signs: laboratory results are the laboratory's whatever the scopes,
    # docs/security.md §4.)
    no_create = auth("writer-no-create")
    new = {**observation(pid, category="vital-signs"), "id": "obs-new"}
    assert_outcome(await anon.put("/Observation/obs-new", json=new, headers=no_create), 403)
    existing = (await client.post("/Observation",
                                  json=observation(pid, category="vital-signs"))).json()
    r = await anon.put(f"/Observation/{existing['id']}", json={**existing, "status": "amended"},
                       headers={**no_create, "If-Match": 'W/"1"'})
    assert r.status_code == 200


async def test_unknown_type_and_unknown_id_are_404(client: httpx.AsyncClient) -> None:
    body = assert_outcome(await client.get("/Medication/1"), 404)
    assert "Medication" in body["issue"][0]["diagnostics"]
    assert_outcome(await client.get("/Nonsense"), 404)
    assert_outcome(await client.get("/Patient/does-not-exist"), 404)
    assert_outcome(await client.get("/Patient/bad%20id!"), 404)
    assert_outcome(await client.get("/Patient/does-not-exist/_history"), 404)
    assert_outcome(await client.get("/Patient/does-not-exist/_history/1"), 404)
    assert_outcome(await client.get("/Patient/a/b/c/d"), 404)


async def test_create_read_vread_update_history_with_etags(client: httpx.AsyncClient,
                                                           fhir_server: FhirServer) -> None:
    r = await client.post("/Patient", json={**patient(), "id": "ignored"})
    assert r.status_code == 201
    created = r.json()
    pid = created["id"]
    assert pid != "ignored"
    assert r.headers["location"] == f"{fhir_server.base}/Patient/{pid}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert r.headers["cache-control"] == "no-store"
    assert email.utils.parsedate_to_datetime(r.headers["last-modified"])

    r = await client.get(f"/Patient/{pid}")
    assert r.status_code == 200 and r.json() == created
    assert r.headers["etag"] == 'W/"1"' and "last-modified" in r.headers
    assert r.headers["cache-control"] == "no-store"

    changed = {**created, "name": [{"family": "Testpatient", "given": ["Beta"]}]}
    r = await client.put(f"/Patient/{pid}", json=changed, headers={"If-Match": 'W/"1"'})
    assert r.status_code == 200
    assert r.headers["etag"] == 'W/"2"'
    assert r.json()["meta"]["versionId"] == "2"
    assert r.json()["meta"]["lastUpdated"] > created["meta"]["lastUpdated"]

    r = await client.get(f"/Patient/{pid}/_history/1")
    assert r.status_code == 200 and r.json() == created and r.headers["etag"] == 'W/"1"'

    r = await client.get(f"/Patient/{pid}/_history")
    bundle = r.json()
    get_fhir_model_class("Bundle").model_validate(bundle)
    assert bundle["type"] == "history" and bundle["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "POST"]
    assert bundle["entry"][0]["fullUrl"] == f"{fhir_server.base}/Patient/{pid}"


async def test_update_as_create_returns_201_with_location(client: httpx.AsyncClient) -> None:
    r = await client.put("/Location/ward-7a", json={
        "resourceType": "Location", "id": "ward-7a", "name": "Ward 7A (synthetic)"})
    assert r.status_code == 201
    assert r.headers["location"].endswith("/Location/ward-7a/_history/1")


async def test_if_match_mismatch_is_412_and_leaves_the_resource_alone(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post("/Observation", json=observation("p1"))).json()
    oid = created["id"]
    await client.put(f"/Observation/{oid}", json={**created, "status": "amended"},
                     headers={"If-Match": 'W/"1"'})
    r = await client.put(f"/Observation/{oid}", json={**created, "status": "cancelled"},
                         headers={"If-Match": 'W/"1"'})
    body = assert_outcome(r, 412)
    assert body["issue"][0]["code"] == "conflict"
    current = (await client.get(f"/Observation/{oid}")).json()
    assert (current["status"], current["meta"]["versionId"]) == ("amended", "2")
    # If-Match on an id that does not exist yet is a failed precondition too.
    r = await client.put("/Observation/none-yet", json={**observation("p1"), "id": "none-yet"},
                         headers={"If-Match": 'W/"1"'})
    assert_outcome(r, 412)
    assert_outcome(await client.get("/Observation/none-yet"), 404)
    r = await client.put(f"/Observation/{oid}", json=current, headers={"If-Match": "yes"})
    assert_outcome(r, 400)


async def test_invalid_resource_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    missing = observation("p1")
    del missing["status"]
    body = assert_outcome(await client.post("/Observation", json=missing), 422)
    assert body["issue"][0]["expression"] == ["Observation.status"]
    assert "required" in body["issue"][0]["diagnostics"]

    wrong = {**observation("p1"), "status": "done-ish"}
    body = assert_outcome(await client.post("/Observation", json=wrong), 422)
    assert body["issue"][0]["expression"] == ["Observation.status"]
    assert "done-ish" in body["issue"][0]["diagnostics"]

    nested = observation("p1")
    nested["code"]["coding"][0]["system"] = 42
    body = assert_outcome(await client.post("/Observation", json=nested), 422)
    assert body["issue"][0]["expression"] == ["Observation.code.coding[0].system"]

    unknown = {**patient(), "favouriteColour": "teal"}
    body = assert_outcome(await client.post("/Patient", json=unknown), 422)
    assert body["issue"][0]["expression"] == ["Patient.favouriteColour"]
    bundle = (await client.get("/Observation")).json()
    assert bundle["total"] == 0  # nothing invalid was stored


async def test_malformed_requests_are_400(client: httpx.AsyncClient) -> None:
    headers = {"Content-Type": FHIR_JSON}
    for content in (b"{not json", b"", b"[1, 2]", b'"Patient"', b"\xff\xfe\x00",
                    b'{"resourceType": "Patient", "x": NaN}', b"1e999", b"[" * 100_000):
        assert_outcome(await client.post("/Patient", content=content, headers=headers), 400)
    body = assert_outcome(await client.post("/Patient", json=observation("p1")), 400)
    assert "does not match" in body["issue"][0]["diagnostics"]
    created = (await client.post("/Patient", json=patient())).json()
    body = assert_outcome(await client.put(f"/Patient/{created['id']}",
                                           json={**created, "id": "other"},
                                           headers={"If-Match": 'W/"1"'}), 400)
    assert "does not match" in body["issue"][0]["diagnostics"]
    no_id = {k: v for k, v in created.items() if k != "id"}
    assert_outcome(await client.put(f"/Patient/{created['id']}", json=no_id), 400)
    assert_outcome(await client.post("/Patient", content=b"<Patient/>",
                                     headers={"Content-Type": "application/fhir+xml"}), 415)


async def test_xml_is_406_and_json_formats_are_fine(client: httpx.AsyncClient) -> None:
    for fmt in ("xml", "application/fhir+xml", "text/xml"):
        assert_outcome(await client.get("/Patient", params={"_format": fmt}), 406)
    assert_outcome(await client.get("/metadata", params={"_format": "xml"}), 406)
    assert_outcome(await client.get("/Patient", headers={"Accept": "application/fhir+xml"}),
                   406)
    for fmt in ("json", FHIR_JSON, "application/json"):
        assert (await client.get("/Patient", params={"_format": fmt})).status_code == 200
    ok = await client.get("/Patient", headers={"Accept": "application/fhir+json;q=0.9, */*"})
    assert ok.status_code == 200


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    r = await client.patch("/Patient/x", json={})
    assert_outcome(r, 405)
    assert {"PUT", "DELETE"} <= set(r.headers["allow"].replace(" ", "").split(","))


async def test_prefer_return_minimal_sends_no_body(client: httpx.AsyncClient) -> None:
    r = await client.post("/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b""
    assert r.headers["etag"] == 'W/"1"' and "/Patient/" in r.headers["location"]


async def test_absolute_urls_follow_the_request_host(fhir_server: FhirServer) -> None:
    port = fhir_server.base.split(":")[2].split("/")[0]
    async with httpx.AsyncClient(base_url=f"http://localhost:{port}/fhir",
                                 headers=auth()) as c:
        r = await c.post("/Patient", json=patient())
        assert r.headers["location"].startswith(f"http://localhost:{port}/fhir/Patient/")
        bundle = (await c.get("/Patient")).json()
        assert bundle["entry"][0]["fullUrl"].startswith(f"http://localhost:{port}/fhir/")


async def test_listeners_see_each_committed_http_write_once(client: httpx.AsyncClient,
                                                           fhir_server: FhirServer) -> None:
    seen = []
    fhir_server.store.add_listener(seen.append)
    created = (await client.post("/Patient", json=patient())).json()
    pid = created["id"]
    await client.put(f"/Patient/{pid}", json={**created, "gender": "other"},
                     headers={"If-Match": 'W/"1"'})
    await client.put(f"/Patient/{pid}", json=created, headers={"If-Match": 'W/"1"'})  # 412
    await client.post("/Patient", json={**patient(), "gender": "sometimes"})  # 422
    await client.post("/Patient", content=b"{")  # 400
    await client.put("/Patient/pat-put", json={**patient(), "id": "pat-put"})
    await client.get(f"/Patient/{pid}")
    assert [(c.id, c.version_id, c.interaction) for c in seen] == [
        (pid, "1", "create"), (pid, "2", "update"), ("pat-put", "1", "create")]
    assert seen[1].resource["gender"] == "other"
