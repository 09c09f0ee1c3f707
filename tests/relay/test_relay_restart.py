"""`wardsync relay` as a real process: killed with SIGKILL mid-stream and restarted on the
same data dir, it pokes no version twice, loses none, and keeps seq contiguous; SIGTERM
drains and exits 0."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.relay.relay_fixtures import (
    RelayProcess,
    clinician_session,
    poke_watcher,
    relay_flags,
    scrape,
)
from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # real servers and processes, seconds each


async def ok_rounds(http: httpx.AsyncClient, url: str) -> float:
    return await scrape(http, url, "wardsync_relay_reconcile_rounds_total", outcome="ok")


async def wait_until_async(probe: Callable[[], Awaitable[float]], at_least: float,
                           timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await probe() >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"metric stayed below {at_least} for {timeout_s} s")


CONFIG = """
[reconcile]
interval_s = 0.2
overlap_s = 1.0
initial_lookback_s = 0
types = ["DiagnosticReport", "Observation"]

[subscriptions]
mode = "none"
"""


async def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    ward: Sandbox, tmp_path: Path
):
    config_file = tmp_path / "relay.toml"
    config_file.write_text(CONFIG)
    flags = relay_flags(ward, tmp_path, tmp_path / "relay-data")
    relay = RelayProcess(flags, config_file, tmp_path / "relay.log")
    written: set[tuple[str, str]] = set()

    async def write_results(count: int) -> None:
        for i in range(count):
            report, observations = await ward.lab.post_panel(
                "pat-05", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.0 + i / 10})
            written.add((f"DiagnosticReport/{report['id']}", "1"))
            written.update((f"Observation/{o['id']}", "1") for o in observations)
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(timeout=10) as http:
        session = await clinician_session(ward, http)
        try:
            ready = await relay.start()
            assert set(ready) == {"token_url", "notify_url", "health_url", "metrics_url"}
            async with poke_watcher(ward, session, http, ready["token_url"]) as watcher:
                await wait_for(lambda: watcher.client.connection.state == "connected", 10)
                await write_results(4)
                await wait_for(lambda: len(watcher.pokes) >= 2, 15, "the first pokes")
                await write_results(2)
                await relay.kill()  # mid-stream: some versions not yet read or published
                await write_results(4)  # committed while no relay runs
                await relay.start()
                await write_results(4)
                await wait_for(lambda: written <= set(watcher.per_version()), 30,
                               f"every version poked ({relay.log_tail()})")
                health = await http.get(relay.ready["health_url"])
                assert health.status_code == 200
                # Three more poll rounds: a late duplicate would show.
                rounds = await ok_rounds(http, relay.ready["metrics_url"])
                await wait_until_async(
                    lambda: ok_rounds(http, relay.ready["metrics_url"]), rounds + 3)
                finds = await scrape(http, relay.ready["metrics_url"],
                                     "wardsync_relay_reconcile_finds_total")
                assert finds >= 8  # what was written while no relay ran, found after restart
                counts = watcher.per_version()
                assert {v: n for v, n in counts.items() if n != 1} == {}
                first = watcher.seqs()[0]  # start-up may announce recent seed writes first
                assert watcher.seqs() == list(range(first, first + len(watcher.pokes)))
                assert len(set(watcher.message_ids)) == len(watcher.message_ids)
            assert await relay.terminate() == 0
            assert '"stopping: draining pokes"' in relay.log_tail()
            # JSON lines only, and no secret in them.
            log_text = relay.log_file.read_text()
            records = [json.loads(line) for line in log_text.splitlines()]
            assert records and all({"t", "level", "logger", "msg"} <= set(r) for r in records)
            info = ward.ready_info()
            assert info["relay_client"]["client_secret"] not in log_text
            assert info["ably_key"].split(":", 1)[1] not in log_text
        finally:
            await relay.close()
            await session.aclose()


async def test_exit_codes_for_a_bad_configuration_and_an_unreachable_server(
    ward: Sandbox, tmp_path: Path
):
    config_file = tmp_path / "relay.toml"
    config_file.write_text(CONFIG)
    flags = relay_flags(ward, tmp_path, tmp_path / "relay-data")
    missing = RelayProcess({**flags, "ably_key_file": tmp_path / "absent"}, config_file,
                           tmp_path / "missing.log")
    with pytest.raises(AssertionError, match=r"ably\.key_file: cannot read"):
        await missing.start()
    assert await missing.proc.wait() == 2
    unreachable = RelayProcess({**flags, "fhir_base": "http://127.0.0.1:9/fhir"}, config_file,
                               tmp_path / "unreachable.log")
    with pytest.raises(AssertionError, match="relay could not start"):
        await unreachable.start()
    assert await unreachable.proc.wait() == 1
