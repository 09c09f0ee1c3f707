"""Fault: the relay process is SIGKILLed while the hub stays up; the workstations' links stay
connected, so only the relay's heartbeats (core/heartbeats.py) can tell them.

A real `wardsync relay` process beside a `--no-relay` sandbox (harness `RelayBeside`) with
`ably.heartbeat_s = 1`: every workstation sees its heartbeats, then the relay is killed. With
no heartbeat (and no poke) for 3 × 1 s on a live link each workstation leaves "Live" for
"degraded" with the words "Ward updates delayed — checking the server ..." and polls; the
restarted relay's first heartbeat (sent once it leads and has polled the FHIR server once)
makes it "Live" again with a catch-up, and every screen converges on the server.

Bounds, measured here (2 cores shared with other work) and stated with margin: kill → not
Live 3.0-3.3 s (the silence limit itself plus the event loop's delay) → `SILENT_BOUND_S`
3 × every_s + 2 s; relay ready → every workstation Live 0.0-0.6 s → `BACK_BOUND_S` 5 s;
restart to ready as in test_fault_relay_crash.py → `RESTART_BOUND_S` 20 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.harness import PATIENTS, RelayBeside, eventually, fault_bed, start_relay
from wardsync.core import codes
from wardsync.core.connection_status import ConnectionState, RealtimeState, relay_silent_reason

pytestmark = pytest.mark.slow  # a relay process killed and restarted: about 15 s

EVERY_S = 1.0
RELAY_CONFIG = f"""
[ably]
heartbeat_s = {EVERY_S}

[reconcile]
interval_s = 1.0
overlap_s = 1.0
initial_lookback_s = 0
types = ["DiagnosticReport", "Observation"]

[subscriptions]
mode = "topic"
heartbeat_s = 60
"""
SILENT_BOUND_S = 3 * EVERY_S + 2.0
BACK_BOUND_S = 5.0
RESTART_BOUND_S = 20.0


async def test_a_killed_relay_takes_workstations_out_of_live_until_it_is_back(
        seeded_data_dir: Path, tmp_path: Path) -> None:
    async with fault_bed(seeded_data_dir, tmp_path, relay=RelayBeside(RELAY_CONFIG)) as bed:
        assert bed.relay is not None
        # No poke yet: the relay knows the ward from the workstations' token requests.
        await eventually(lambda: all(s.ws.intake.heartbeat is not None for s in bed.stations),
                         10.0, "the relay's heartbeats on every workstation")
        assert bed.all_live()
        catch_ups = {s.name: s.ws.catch_ups for s in bed.stations}

        t_kill = time.monotonic()
        await bed.relay.kill()
        await eventually(lambda: all(s.state is ConnectionState.DEGRADED for s in bed.stations),
                         SILENT_BOUND_S + 5.0, "every workstation out of Live")
        left = {s.name: (s.first_state_after("degraded", t_kill) or 0.0) - t_kill
                for s in bed.stations}
        assert all(3 * EVERY_S - 0.1 <= d <= SILENT_BOUND_S for d in left.values()), left
        for s in bed.stations:
            # The link is up: only the relay is missing, and the words say what that means.
            assert s.ws.status.realtime is RealtimeState.CONNECTED
            assert s.ws.status.reason == relay_silent_reason(s.ws.config.polling_interval_s)
            assert s.ws.status.polling and s.ws.polls >= 1

        # Written while the relay is dead: no poke can announce it; the polling brings it.
        report, _ = await bed.sandbox.lab.post_panel(
            PATIENTS[0], codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.7})
        ref = f"DiagnosticReport/{report['id']}"
        await asyncio.sleep(0.5)
        restart_began = time.monotonic()
        await start_relay(bed.relay, RESTART_BOUND_S)
        t_ready = time.monotonic()
        back_s = await eventually(bed.all_live, BACK_BOUND_S, "every workstation Live again")
        for s in bed.stations:
            assert s.states_since(t_kill) == ["degraded", "live"], s.states_since(t_kill)
            assert s.ws.catch_ups > catch_ups[s.name], f"{s.name} did not catch up"
            assert not s.ws.status.polling
        await bed.wait_converged(10.0, "every screen after the relay came back")
        assert all(s.ws.store.version(ref) == "1" for s in bed.stations)
        print(f"\nrelay silent: out of Live after {min(left.values()):.2f}-"
              f"{max(left.values()):.2f} s, restart {t_ready - restart_began:.2f} s, "
              f"Live again {back_s:.2f} s after ready")
