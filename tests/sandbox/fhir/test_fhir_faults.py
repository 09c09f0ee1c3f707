"""Fault injection: the FHIR endpoints fail, slow down or hang for a period, then recover."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiohttp import web
from fhir_testdata import FakeMonotonic, auth, patient, verify_bearer

from conftest import FhirServer
from wardsync.sandbox.fhir import FhirApi, FhirFaults, FhirStore


async def test_fail_for_a_period_then_recover(client: httpx.AsyncClient, anon: httpx.AsyncClient,
                                              fhir_server: FhirServer) -> None:
    pid = (await client.post("/Patient", json=patient())).json()["id"]
    fhir_server.faults.fail(status=503, for_s=30.0)
    assert fhir_server.faults.active == "fail"
    for _ in range(3):
        r = await client.get(f"/Patient/{pid}")
        assert r.status_code == 503
        assert r.json()["resourceType"] == "OperationOutcome"
        assert r.headers["retry-after"] == "30"
        assert r.headers["cache-control"] == "no-store"
    assert (await client.post("/Patient", json=patient())).status_code == 503
    assert (await anon.get("/metadata")).status_code == 200  # metadata is never faulted
    fhir_server.clock.advance(29.0)
    r = await client.get(f"/Patient/{pid}")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    fhir_server.clock.advance(1.0)
    assert (await client.get(f"/Patient/{pid}")).status_code == 200
    assert fhir_server.faults.active is None
    # Nothing was written while failing.
    assert (await client.get("/Patient")).json()["total"] == 1


async def test_fail_with_another_status_and_clear(client: httpx.AsyncClient,
                                                  fhir_server: FhirServer) -> None:
    fhir_server.faults.fail(status=500, for_s=60.0)
    r = await client.get("/Patient")
    assert r.status_code == 500 and "retry-after" not in r.headers
    fhir_server.faults.clear()
    assert (await client.get("/Patient")).status_code == 200
    with pytest.raises(ValueError):
        fhir_server.faults.fail(status=200)


async def test_slow_delays_each_request_by_the_clock(client: httpx.AsyncClient,
                                                     fhir_server: FhirServer) -> None:
    fhir_server.faults.slow(delay_s=2.0, for_s=10.0)
    pending = asyncio.create_task(client.get("/Patient"))
    try:
        await asyncio.sleep(0.2)
        assert not pending.done(), "answered before the delay passed"
        fhir_server.clock.advance(2.0)
        r = await asyncio.wait_for(pending, timeout=2.0)
        assert r.status_code == 200
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
    fhir_server.clock.advance(8.0)  # the period is over: no delay any more
    r = await asyncio.wait_for(client.get("/Patient"), timeout=2.0)
    assert r.status_code == 200


async def test_hang_until_the_client_gives_up_then_serve_again(
    client: httpx.AsyncClient, fhir_server: FhirServer
) -> None:
    fhir_server.faults.hang(for_s=20.0)
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/Patient", timeout=0.3)
    fhir_server.clock.advance(20.0)
    assert (await client.get("/Patient", timeout=2.0)).status_code == 200


async def test_clear_releases_a_held_request(client: httpx.AsyncClient,
                                             fhir_server: FhirServer) -> None:
    fhir_server.faults.hang(for_s=600.0)
    pending = asyncio.create_task(client.get("/Patient"))
    try:
        await asyncio.sleep(0.2)
        assert not pending.done()
        fhir_server.faults.clear()
        assert (await asyncio.wait_for(pending, timeout=2.0)).status_code == 200
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


async def test_shutdown_is_not_held_up_by_a_hanging_request() -> None:
    store = FhirStore(":memory:")
    faults = FhirFaults(clock=FakeMonotonic())
    app = web.Application()
    FhirApi(store, verify_bearer, faults=faults).install(app)
    runner = web.AppRunner(app, shutdown_timeout=30.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    faults.hang(for_s=3600.0)
    try:
        async with httpx.AsyncClient(headers=auth()) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get(f"http://127.0.0.1:{port}/fhir/Patient", timeout=0.2)
    finally:
        started = time.monotonic()
        await runner.cleanup()
        store.close()
    assert time.monotonic() - started < 5.0
