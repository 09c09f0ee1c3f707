"""Classic R4 criteria subscriptions on rest-hook, in HAPI FHIR's request shapes."""

from __future__ import annotations

from typing import Any

from subs_bed import Endpoint, SubsBed, observation, until


def classic(endpoint: str, criteria: str, *, payload: bool,
            headers: tuple[str, ...] = ()) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": endpoint}
    if payload:
        channel["payload"] = "application/fhir+json"
    if headers:
        channel["header"] = list(headers)
    return {"resourceType": "Subscription", "status": "requested",
            "reason": "classic test", "criteria": criteria, "channel": channel}


async def test_with_payload_puts_the_resource_and_deletes_on_delete(
        bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await bed.subscribe(classic(endpoint.url, "Observation?patient=Patient/p1",
                                         payload=True, headers=("X-Hook: one",)))
    await until(lambda: bed.service.spec(sub_id).status == "active",  # type: ignore[union-attr]
                bed.timer)
    await bed.write_observation("p2")  # not matched
    obs_id = await bed.write_observation("p1")
    assert (await bed.writer.delete(f"/Observation/{obs_id}")).status_code == 204
    await until(lambda: len(endpoint.received) >= 2, bed.timer)
    put, delete = endpoint.received
    assert (put.method, put.path) == ("PUT", f"/hook/Observation/{obs_id}")
    assert put.headers["Content-Type"].startswith("application/fhir+json")
    assert put.headers["X-Hook"] == "one"
    assert put.json()["id"] == obs_id and put.json()["meta"]["versionId"] == "1"
    assert (delete.method, delete.path, delete.body) == ("DELETE", f"/hook/Observation/{obs_id}",
                                                         b"")
    # Classic subscriptions have no handshake and no heartbeats.
    assert all(r.method != "POST" for r in endpoint.received)


async def test_without_payload_posts_an_empty_body(bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await bed.subscribe(classic(endpoint.url, "Observation?status=final",
                                         payload=False))
    await until(lambda: bed.service.spec(sub_id).status == "active",  # type: ignore[union-attr]
                bed.timer)
    await bed.write_observation()
    await bed.writer.post("/Observation", json={**observation(), "status": "preliminary"})
    await until(lambda: len(endpoint.received) >= 1, bed.timer)
    await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer)
    await bed.timer.advance(1)
    assert [(r.method, r.path, r.body) for r in endpoint.received] == [("POST", "/hook", b"")]


async def test_each_version_is_sent_in_commit_order(bed: SubsBed, endpoint: Endpoint) -> None:
    sub_id = await bed.subscribe(classic(endpoint.url, "Observation", payload=True))
    await until(lambda: bed.service.spec(sub_id).status == "active",  # type: ignore[union-attr]
                bed.timer)
    obs_id = await bed.write_observation()
    for version, value in ((1, 5.0), (2, 6.0)):
        body = {**observation(value=value), "id": obs_id}
        assert (await bed.writer.put(f"/Observation/{obs_id}", json=body,
                                     headers={"If-Match": f'W/"{version}"'})).status_code == 200
    await until(lambda: len(endpoint.received) >= 3, bed.timer)
    assert [r.json()["meta"]["versionId"] for r in endpoint.received] == ["1", "2", "3"]


async def test_bad_criteria_is_refused(bed: SubsBed, endpoint: Endpoint) -> None:
    for criteria, message in (("Medication?code=x", "not a resource type"),
                              ("Observation?foo=bar", "no search parameter"),
                              ("Observation?code:text=x", "modifiers")):
        r = await bed.relay.post("/Subscription",
                                 json=classic(endpoint.url, criteria, payload=True))
        assert r.status_code == 422 and message in r.text, r.text
