"""Ids that are URL dot-segments ("." and "..", RFC 3986 §3.3) are refused: no client can
address such a resource, since every URL resolver removes them (RFC 3986 §5.2.4)."""

from __future__ import annotations

import httpx
import pytest

from conftest import FhirServer


@pytest.mark.parametrize("segment", ["%2E%2E", "%2e%2e", ".%2E", "%2E"])
async def test_put_to_a_dot_segment_id_creates_nothing(
    client: httpx.AsyncClient, fhir_server: FhirServer, segment: str
) -> None:
    """Attack: `PUT /Patient/%2E%2E` (percent-encoded so the client does not remove the
    segment) used to create a Patient with id `..`."""
    rid = segment.replace("%2E", ".").replace("%2e", ".")
    url = httpx.URL(f"{fhir_server.base}/Patient/{segment}")
    assert url.raw_path.endswith(f"/Patient/{segment}".encode()), "sent as written"
    body = {"resourceType": "Patient", "id": rid, "active": True}
    response = await client.put(url, json=body, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "not a valid FHIR id" in outcome["issue"][0]["diagnostics"]
    read = await client.get(url)
    assert read.status_code in (400, 404)
    search = (await client.get("/Patient", params={"_id": rid})).json()
    assert search.get("total", 0) == 0 and not search.get("entry")


async def test_ids_with_dots_that_are_not_dot_segments_still_work(
    client: httpx.AsyncClient,
) -> None:
    for rid in ("...", "a.b", ".pat", "pat."):
        body = {"resourceType": "Patient", "id": rid, "active": True}
        created = await client.put(f"/Patient/{rid}", json=body)
        assert created.status_code == 201, created.text
        assert (await client.get(f"/Patient/{rid}")).json()["id"] == rid
