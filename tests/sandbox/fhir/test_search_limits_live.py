"""The whole sandbox stays responsive while the worst search it allows runs.

The real sandbox, `wardsync sandbox` in its own process (FHIR, OAuth, the realtime hub and
the relay on one event loop, a file store), on loopback, with a ward plus thousands of extra
Observations: while the most expensive searches the caps allow run three at a time,
`/metadata` keeps answering within 100 ms, and the searches that used to hold every endpoint
for a minute are refused with a 400 at once (docs/security.md §3). A separate process, so the
test's own client work does not share the server's event loop and blur the measurement.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from fhir_testdata import observation

from tests.sandbox_fixtures import DESKTOP_CLIENT, SCOPES
from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.login import sign_in
from wardsync.infra.sandbox_process import SandboxProcess
from wardsync.sandbox.fhir import FhirStore
from wardsync.sandbox.fhir.search_query import MAX_CRITERIA

N_EXTRA_OBSERVATIONS = 6000
# The bound: /metadata answers in under 100 ms while the searches run. On a shared 2-core
# machine (other processes keep the load above the core count) a probe now and then waits
# for the CPU whatever the server does, so the bound is asserted on the 90th percentile, and
# every probe must stay far below the length of one search: a search on the event loop
# would hold a probe for all of it (the 15-62 s freezes these tests replace).
MAX_METADATA_P90_MS = 100.0
MAX_METADATA_MS = 500.0
# Refusing an over-cap search is parsing only.
MAX_REFUSAL_S = 1.0
WORST_ALLOWED = [
    *[("date", ",".join(f"ne20{i:02d}" for i in range(10)))] * MAX_CRITERIA,
    ("_sort", "date,-date,date,-date"), ("_count", "500"),
]
OLD_ATTACKS = [
    [("_sort", ",".join(["date"] * 700))],
    [("date", "ge2000")] * 600,
    [("patient", ",".join(f"Patient/p{i}" for i in range(1000)))],
]


@pytest.fixture(scope="module")
def large_data_dir(seeded_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded ward plus N_EXTRA_OBSERVATIONS dated laboratory results."""
    path = tmp_path_factory.mktemp("sandbox-large")
    shutil.copytree(seeded_data_dir, path, dirs_exist_ok=True)
    store = FhirStore(path / "fhir.sqlite3")
    store.load([
        {**observation(f"bulk-p{i % 200}", when=f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T"
                       f"{i % 24:02d}:00:00Z"), "id": f"bulk-o{i}"}
        for i in range(N_EXTRA_OBSERVATIONS)
    ])
    store.close()
    return path


@dataclass
class LiveSandbox:
    fhir_base: str
    token: str


@pytest.fixture
async def large_sandbox(large_data_dir: Path, tmp_path: Path) -> AsyncIterator[LiveSandbox]:
    data = tmp_path / "data"
    shutil.copytree(large_data_dir, data)
    child = await SandboxProcess.start("--no-simulator", "--data-dir", str(data),
                                       timeout_s=60.0)
    try:
        fhir_base = child.info["fhir_base"]
        async with httpx.AsyncClient(timeout=10.0) as http:
            _config, tokens = await sign_in(
                http, fhir_base=fhir_base, client_id=DESKTOP_CLIENT, scopes=SCOPES,
                open_url=DemoBrowser(http, username="demo.clinician", password="demo"),
            )
        yield LiveSandbox(fhir_base, tokens.access_token)
    finally:
        assert await child.stop() == 0


async def _search(http: httpx.AsyncClient, base: str, token: str,
                  params: list[tuple[str, str]]) -> httpx.Response:
    return await http.post(
        f"{base}/Observation/_search", content=urlencode(params),
        headers={"Authorization": f"Bearer {token}",
                 "Content-Type": "application/x-www-form-urlencoded"},
        timeout=30.0,
    )


@pytest.mark.slow
async def test_metadata_stays_fast_while_the_worst_allowed_searches_run(
    large_sandbox: LiveSandbox,
) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        token = large_sandbox.token
        base = large_sandbox.fhir_base

        # Calibrate: the worst allowed search alone, so the probe below overlaps real work.
        started = time.perf_counter()
        alone = await _search(http, base, token, WORST_ALLOWED)
        one_search_s = time.perf_counter() - started
        assert alone.status_code == 200, alone.text

        busy = asyncio.Event()

        async def worst_searches() -> None:
            # Three at once, as several clients would, for at least a second.
            deadline = time.perf_counter() + max(1.0, 3 * one_search_s)
            while time.perf_counter() < deadline:
                busy.set()
                replies = await asyncio.gather(
                    *(_search(http, base, token, WORST_ALLOWED) for _ in range(3)))
                assert all(r.status_code == 200 for r in replies)

        async def probe_metadata() -> list[float]:
            await busy.wait()
            latencies = []
            while not searching.done():
                t0 = time.perf_counter()
                response = await http.get(f"{base}/metadata")
                latencies.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
                await asyncio.sleep(0.02)
            return latencies

        searching = asyncio.ensure_future(worst_searches())
        latencies = await probe_metadata()
        await searching

    assert len(latencies) >= 20, "the probe must overlap the searches"
    # Real work: run back to back on the event loop, searches this long would hold most
    # probes past the bound.
    assert one_search_s * 1000 > MAX_METADATA_P90_MS
    assert statistics.quantiles(latencies, n=10)[-1] < MAX_METADATA_P90_MS, latencies
    assert max(latencies) < MAX_METADATA_MS, latencies


@pytest.mark.slow
async def test_the_old_attacks_are_refused_at_once(large_sandbox: LiveSandbox) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        for params in OLD_ATTACKS:
            started = time.perf_counter()
            response = await _search(http, large_sandbox.fhir_base, large_sandbox.token,
                                     params)
            elapsed = time.perf_counter() - started
            assert response.status_code == 400, response.text
            assert response.json()["issue"][0]["code"] == "too-costly"
            assert elapsed < MAX_REFUSAL_S
