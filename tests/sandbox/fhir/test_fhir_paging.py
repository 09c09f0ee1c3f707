"""Paging and catch-up: next links over a fixed snapshot, `_lastUpdated=gt` after rapid writes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhir_testdata import observation

from conftest import FhirServer


async def follow_pages(client: httpx.AsyncClient, first: dict[str, Any], between: Any
                       ) -> tuple[list[tuple[str, str]], list[int]]:
    """Walk next links from `first`, calling `between(page_number)` before each next page.

    Returns (id, versionId) of every match seen and the total reported on each page.
    """
    r = await client.get("/Observation", params=first)
    assert r.status_code == 200
    seen: list[tuple[str, str]] = []
    totals: list[int] = []
    page = 0
    while True:
        bundle = r.json()
        totals.append(bundle["total"])
        seen += [(e["resource"]["id"], e["resource"]["meta"]["versionId"])
                 for e in bundle.get("entry", ()) if e["search"]["mode"] == "match"]
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        if not nxt:
            return seen, totals
        page += 1
        await between(page)
        r = await client.get(nxt[0])  # absolute URL from the server
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("sort", [None, "_lastUpdated", "-_lastUpdated", "-date", "_id"])
async def test_paging_neither_skips_nor_repeats_while_writes_happen(
    client: httpx.AsyncClient, fhir_server: FhirServer, sort: str | None
) -> None:
    store = fhir_server.store
    original = []
    for i in range(23):
        obs = observation("pat-a", when=f"2026-11-02T{i:02d}:00:00Z")
        original.append(store.create(obs)["id"])

    async def write_between(page: int) -> None:
        # New matches, updates of resources already seen and not yet seen, other patients.
        store.create(observation("pat-a", when="2026-11-02T23:30:00Z"))
        store.create(observation("pat-b"))
        for oid in (original[page], original[-page]):
            current = store.read("Observation", oid)
            store.update("Observation", oid, {**current, "status": "amended"})

    params = {"patient": "pat-a", "_count": "5"}
    if sort:
        params["_sort"] = sort
    seen, totals = await follow_pages(client, params, write_between)
    ids = [oid for oid, _ in seen]
    assert len(ids) == len(set(ids)), "an entry was repeated"
    assert set(ids) == set(original), "an entry was skipped or a later write leaked in"
    assert totals == [23] * 5
    # Every page shows the versions as of the first page.
    assert {version for _, version in seen} == {"1"}


async def test_a_fresh_search_after_paging_sees_the_new_writes(
    client: httpx.AsyncClient, fhir_server: FhirServer
) -> None:
    store = fhir_server.store
    for _ in range(7):
        store.create(observation("pat-a"))

    async def write(_: int) -> None:
        store.create(observation("pat-a"))

    seen, _ = await follow_pages(client, {"patient": "pat-a", "_count": "3"}, write)
    assert len(seen) == 7
    bundle = (await client.get("/Observation", params={"patient": "pat-a",
                                                       "_summary": "count"})).json()
    assert bundle["total"] == 9


async def test_previous_link_and_page_sizes(client: httpx.AsyncClient,
                                            fhir_server: FhirServer) -> None:
    for _ in range(12):
        fhir_server.store.create(observation("pat-a"))
    first = (await client.get("/Observation", params={"_count": "5"})).json()
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = (await client.get(nxt)).json()
    assert len(second["entry"]) == 5
    prev = next(link["url"] for link in second["link"] if link["relation"] == "previous")
    again = (await client.get(prev)).json()
    assert [e["resource"]["id"] for e in again["entry"]] == [
        e["resource"]["id"] for e in first["entry"]]
    big = (await client.get("/Observation", params={"_count": "100000"})).json()
    assert len(big["entry"]) == 12  # capped at 500, so all 12 fit
    default = await client.get("/Observation")
    assert "_count=50" in default.json()["link"][0]["url"]


async def test_last_updated_gt_catches_every_rapid_write(
    client: httpx.AsyncClient, fhir_server: FhirServer
) -> None:
    """Writes in the same millisecond (or microsecond) are never missed by a catch-up."""
    store = fhir_server.store
    last_seen = store.create(observation("pat-a"))["meta"]["lastUpdated"]
    caught: list[str] = []
    written: list[str] = []
    for burst in range(5):
        for _ in range(40):  # far faster than one per millisecond
            written.append(store.create(observation("pat-a"))["id"])
        r = await client.get("/Observation", params={
            "_lastUpdated": f"gt{last_seen}", "_sort": "_lastUpdated", "_count": "500"})
        entries = r.json()["entry"]
        stamps = [e["resource"]["meta"]["lastUpdated"] for e in entries]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        caught += [e["resource"]["id"] for e in entries]
        last_seen = stamps[-1]
        assert len(caught) == 40 * (burst + 1)
    assert caught == written


async def test_last_updated_prefixes_and_partial_precision(
    client: httpx.AsyncClient, fhir_server: FhirServer
) -> None:
    store = fhir_server.store
    a = store.create(observation("pat-a"))
    b = store.create(observation("pat-a"))
    lu_a, lu_b = a["meta"]["lastUpdated"], b["meta"]["lastUpdated"]

    async def found(value: str) -> set[str]:
        r = await client.get("/Observation", params={"_lastUpdated": value})
        assert r.status_code == 200, r.text
        return {e["resource"]["id"] for e in r.json().get("entry", ())}

    assert await found(f"eq{lu_a}") == {a["id"]}
    assert await found(f"ge{lu_a}") == {a["id"], b["id"]}
    assert await found(f"gt{lu_a}") == {b["id"]}
    assert await found(f"lt{lu_b}") == {a["id"]}
    assert await found(f"le{lu_b}") == {a["id"], b["id"]}
    day = lu_a[:10]
    assert await found(day) >= {a["id"]}  # a date alone covers the whole day
    assert await found(f"gt{day}") == set()
