"""Leader failover: two real `wardsync relay` processes against one sandbox, sharing their
state (one PostgreSQL started from Debian's package, or one data dir on one node). Only the
lease holder publishes; SIGKILL it mid-stream and the standby takes over within 10 s; a real
realtime subscriber holding a relay-minted token sees every version exactly once and the
ward's seq contiguous across the takeover."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.harness import relay_pokes_published
from tests.postgres_fixtures import PgServer, private_postgres
from tests.relay.relay_fixtures import (
    RelayProcess,
    clinician_session,
    poke_watcher,
    relay_flags,
    scrape,
)
from tests.sandbox_fixtures import running_sandbox
from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # real servers and processes, tens of seconds

TAKEOVER_LIMIT_S = 10.0
RECONCILE = """
[reconcile]
interval_s = 0.2
overlap_s = 1.0
initial_lookback_s = 0
types = ["DiagnosticReport", "Observation"]
"""


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with private_postgres() as server:
        yield server


@pytest.fixture
async def ward(seeded_data_dir: Path, tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The sandbox without its own relay: the two relays under test are the only ones poking."""
    async with running_sandbox(seeded_data_dir, tmp_path, relay=False) as sb:
        yield sb


async def _readyz(http: httpx.AsyncClient, relay: RelayProcess) -> tuple[int, str | None]:
    base = relay.ready["health_url"].rsplit("/", 1)[0]
    try:
        reply = await http.get(f"{base}/readyz", timeout=2)
    except httpx.HTTPError:
        return 0, None
    return reply.status_code, reply.json().get("role")


async def _ok_rounds(http: httpx.AsyncClient, relay: RelayProcess) -> float:
    return await scrape(http, relay.ready["metrics_url"],
                        "wardsync_relay_reconcile_rounds_total", outcome="ok")


@contextlib.asynccontextmanager
async def two_relays(ward: Sandbox, tmp_path: Path, config: str,
                     data_dirs: tuple[Path, Path]) -> AsyncIterator[list[RelayProcess]]:
    config_file = tmp_path / "relay.toml"
    config_file.write_text(config + RECONCILE)
    relays = [RelayProcess(relay_flags(ward, tmp_path, data_dir), config_file,
                           tmp_path / f"relay-{i}.log")
              for i, data_dir in enumerate(data_dirs)]
    try:
        yield relays
    finally:
        for relay in relays:
            await relay.close()


async def _failover(ward: Sandbox, relays: list[RelayProcess], secrets: list[str]) -> None:
    first, second = relays
    written: set[tuple[str, str]] = set()
    stop_writing = asyncio.Event()

    async def write_stream() -> None:
        i = 0
        while not stop_writing.is_set():
            report, observations = await ward.lab.post_panel(
                "pat-04", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0 + i / 100})
            written.add((f"DiagnosticReport/{report['id']}", "1"))
            written.update((f"Observation/{o['id']}", "1") for o in observations)
            i += 1
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(timeout=10) as http:
        session = await clinician_session(ward, http)
        try:
            await first.start()
            assert (await _readyz(http, first))[1] == "leader"
            await second.start()
            assert await _readyz(http, second) == (200, "standby")
            leader, standby = first, second
            # The subscriber's token comes from the standby: the survivor of the failover.
            async with poke_watcher(ward, session, http, standby.ready["token_url"]) as w:
                await wait_for(lambda: w.client.connection.state == "connected", 10)
                writer = asyncio.ensure_future(write_stream())
                try:
                    await wait_for(lambda: len(w.pokes) >= 6, 20, "the leader's first pokes")
                    # Only the leader publishes; the standby neither polls nor publishes.
                    assert await relay_pokes_published(http, leader) >= 6
                    assert await relay_pokes_published(http, standby) == 0
                    assert await _ok_rounds(http, standby) == 0
                    assert await scrape(http, standby.ready["metrics_url"],
                                        "wardsync_relay_leader") == 0
                    await leader.kill()  # mid-stream: writes keep coming
                    killed_at = time.monotonic()
                    while (await _readyz(http, standby))[1] != "leader":
                        assert time.monotonic() - killed_at < TAKEOVER_LIMIT_S, \
                            f"no takeover within {TAKEOVER_LIMIT_S} s: {standby.log_tail()}"
                        await asyncio.sleep(0.1)
                    took_over_s = time.monotonic() - killed_at
                    assert took_over_s < TAKEOVER_LIMIT_S
                    await asyncio.sleep(1.5)  # more writes after the takeover
                finally:
                    stop_writing.set()
                    await writer
                await wait_for(lambda: written <= set(w.per_version()), 30,
                               f"every version poked ({standby.log_tail()})")
                # A few more poll rounds: a late duplicate would show.
                rounds = await _ok_rounds(http, standby)
                for _ in range(100):
                    if await _ok_rounds(http, standby) >= rounds + 3:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"the new leader stopped polling: {standby.log_tail()}")
                counts = w.per_version()
                assert {v: n for v, n in counts.items() if n != 1} == {}
                seqs = w.seqs()
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
                assert len(set(w.message_ids)) == len(w.message_ids)
                assert await relay_pokes_published(http, standby) >= 1
                assert await scrape(http, standby.ready["metrics_url"],
                                    "wardsync_relay_leader") == 1
            assert await standby.terminate() == 0
            logs = "".join(r.log_file.read_text() for r in relays)
            for record in (json.loads(line) for line in logs.splitlines()):
                assert {"t", "level", "logger", "msg"} <= set(record)
            for secret in secrets:
                assert secret not in logs
        finally:
            await session.aclose()


async def test_postgres_lease_failover(ward: Sandbox, pg: PgServer, tmp_path: Path):
    pg.reset()
    config = (f'[relay]\ndatabase_url = "{pg.url}"\n'
              f'database_password_file = "{pg.password_file}"\n')
    async with two_relays(ward, tmp_path, config,
                          (tmp_path / "node-a", tmp_path / "node-b")) as relays:
        await _failover(ward, relays, [pg.password, ward.ready_info()["relay_client"][
            "client_secret"]])
        # The state lived in PostgreSQL, not in either node's data dir.
        assert not (tmp_path / "node-a" / "relay.sqlite3").exists()


async def test_sqlite_lease_failover_on_one_node(ward: Sandbox, tmp_path: Path):
    shared = tmp_path / "shared-data"
    async with two_relays(ward, tmp_path, "", (shared, shared)) as relays:
        await _failover(ward, relays, [ward.ready_info()["relay_client"]["client_secret"]])
