"""Fault: the relay process is SIGKILLed mid-stream while results are written, and restarted
on the same data dir.

A real `wardsync relay` process beside a `--no-relay` sandbox (harness `RelayBeside`): topic
Subscriptions (id-only rest-hook) with the reconciliation poll every second underneath,
the workstations' realtime tokens from it. While it is dead the sandbox's deliveries to its
notify URL fail and are retried, and writes go on; the restarted relay (same port, same data
dir) reuses its Subscriptions, republishes what it had numbered but not seen acknowledged
(same seq, same message id) and finds the rest through `$events`, the retried deliveries or
the poll.

Status words: the workstations' hub connection never breaks and the outage (kill to the
restarted relay's first heartbeat) is shorter than three of its heartbeat periods (15 s by
default), so they stay "Live" throughout; their screens lag by the outage and catch up from
the restarted relay's pokes, which continue the ward's seq (docs/relay.md "While the relay is
down"). A longer outage takes them out of "Live": test_fault_relay_silent.py.

Bounds, measured here (2 cores shared with other work, load 7-11) and stated with margin:
restart to ready (process start, leading, polled once, Subscriptions found) 1.6-3.3 s, 9.1 s
once under the heaviest load → `RESTART_BOUND_S` 20 s; every write made while it was dead on
every screen 0.5-1.0 s after that → `RECOVERY_BOUND_S` 5 s; every screen equal to the server
0.1-1.0 s after the last write → `CONVERGE_BOUND_S` 5 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    TOPIC_RELAY_CONFIG,
    RelayBeside,
    assert_contiguous,
    assert_poked_once,
    bare_subscriber,
    eventually,
    fault_bed,
    newest_versions,
    start_relay,
)
from wardsync.core.connection_status import ConnectionState

pytestmark = pytest.mark.slow  # a relay process killed and restarted: about 20 s

OUTAGE_S = 2.0
# Bounds: what the module docstring states (measured here, with margin).
RESTART_BOUND_S = 20.0
RECOVERY_BOUND_S = 5.0  # from the restarted relay's readiness
CONVERGE_BOUND_S = 5.0  # from the last write


async def test_relay_killed_mid_stream_and_restarted(seeded_data_dir: Path,
                                                     tmp_path: Path) -> None:
    async with (fault_bed(seeded_data_dir, tmp_path,
                          relay=RelayBeside(TOPIC_RELAY_CONFIG)) as bed,
                bare_subscriber(bed) as bare):
        assert bed.relay is not None
        traffic = bed.traffic()
        traffic.start()
        await eventually(lambda: len(bare.pokes) >= 6, 15.0, "pokes before the crash")
        t_kill, writes_at_kill = time.monotonic(), traffic.writes
        await bed.relay.kill()  # mid-stream: notifications in flight, pokes numbered
        await asyncio.sleep(OUTAGE_S)  # writes go on with no relay
        written_dead = traffic.writes - writes_at_kill
        restart_began = time.monotonic()
        await start_relay(bed.relay, RESTART_BOUND_S)
        restart_s = time.monotonic() - restart_began
        # What was written while it was dead reaches every screen from its pokes.
        missed = dict(traffic.log.acknowledged)
        recovered_s = await eventually(
            lambda: all(int(s.ws.store.version(ref) or 0) >= v for s in bed.stations
                        for ref, v in missed.items()),
            RECOVERY_BOUND_S, "the outage's writes on every screen")
        await asyncio.sleep(1.0)  # writes after the restart
        await traffic.stop()
        settled_from = time.monotonic()
        converge_s = await bed.wait_converged(CONVERGE_BOUND_S, "every screen after the crash")
        bed.assert_consistent(traffic.log)
        newest = newest_versions(bed, set(traffic.log.acknowledged))
        await eventually(lambda: all(bare.per_version()[v] for v in newest.items()), 5.0,
                         "every newest version poked")
        await asyncio.sleep(2.5)  # two more poll rounds: a late duplicate would show
        assert_poked_once(bare.per_version(), newest)
        assert_contiguous(bare.seqs())
        assert len(set(bare.message_ids)) == len(bare.message_ids)
        for s in bed.stations:
            # Every seq reached every screen: nothing left to catch up on.
            assert s.ws.intake.seq.open_gaps == (), f"{s.name} has an open seq gap"
            # The hub stayed up: "Live" throughout, never degraded or offline.
            assert s.states_since(t_kill) == [], f"{s.name} said {s.states_since(t_kill)}"
            assert s.state is ConnectionState.LIVE
        assert written_dead >= 4, "writes made while the relay was dead"
        print(f"\nrelay crash: restart {restart_s:.2f} s, recovered {recovered_s:.2f} s, "
              f"converged {converge_s:.2f} s after the last write "
              f"({time.monotonic() - settled_from:.1f} s incl. checks), "
              f"{len(bare.pokes)} pokes, {traffic.writes} refs written")
