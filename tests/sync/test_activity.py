"""The activity recorder: state history, per-minute rates over a sliding minute, rejected
pokes by reason, poke -> pull and poke -> screen latency percentiles, the bounded update log,
and the Tee that fans events out. All times are explicit (FakeClock)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from wardsync.core.clock import FakeClock
from wardsync.core.metrics import MemoryMetrics
from wardsync.infra.metrics import FileMetrics
from wardsync.sync.activity import (
    ActivityRecorder,
    SlidingCounter,
    Tee,
    percentile,
    summarize_latency,
)


def poke(rec: ActivityRecorder, ref: str, version: str, **extra: Any) -> None:
    rec.emit("poke_received", ref=ref, versionId=version, seq=1, priority="routine",
             type="RESOURCE_CHANGED", **extra)


def pull(rec: ActivityRecorder, ref: str, version: str, key: str = "vitals Patient/p1") -> None:
    rec.emit("pull_done", ref=ref, versionId=version, key=key, urgent=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(monotonic=1000.0)


@pytest.fixture
def rec(clock: FakeClock) -> ActivityRecorder:
    return ActivityRecorder(clock)


# ---------------------------------------------------------------- pure helpers
def test_percentile_is_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 95) == 95.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 51) == 2.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(samples, 0)
    with pytest.raises(ValueError):
        percentile(samples, 101)


def test_latency_summary_of_unsorted_samples() -> None:
    s = summarize_latency([0.3, 0.1, 0.2, 0.9])
    assert (s.count, s.p50, s.p95, s.p99, s.max) == (4, 0.2, 0.9, 0.9, 0.9)
    empty = summarize_latency([])
    assert (empty.count, empty.p50, empty.max) == (0, None, None)


def test_sliding_counter_forgets_events_older_than_the_window() -> None:
    c = SlidingCounter(window_s=60.0, bucket_s=1.0)
    c.add(10.2)
    c.add(10.7)
    c.add(40.0, n=3)
    assert c.count(40.0) == 5
    assert c.count(69.9) == 5  # the events at 10.x are 59.x s old: still in the minute
    assert c.count(71.0) == 3  # ...and gone once more than a minute has passed
    assert c.count(101.0) == 0
    c.add(101.0)
    assert c.count(101.0) == 1
    with pytest.raises(ValueError):
        SlidingCounter(window_s=1.0, bucket_s=2.0)


def test_sliding_counter_memory_stays_bounded_under_a_flood() -> None:
    c = SlidingCounter(window_s=60.0, bucket_s=1.0)
    for i in range(100_000):
        c.add(i * 0.01)  # 100 events a second for 1000 s
    assert c.count(999.99) == pytest.approx(6000, abs=100)
    assert len(c._buckets) <= 61


# ---------------------------------------------------------------- connection history
def test_connection_state_changes_are_kept_with_reason_and_time(
    rec: ActivityRecorder, clock: FakeClock
) -> None:
    t0 = clock.wall()
    rec.emit("connection_state", state="reconnecting", reason="Connecting to live updates")
    clock.advance(2.5)
    rec.emit("connection_state", state="live", reason="Live updates")
    clock.advance(30)
    rec.emit("connection_state", state="degraded", reason="checking every 15 s")
    snap = rec.snapshot()
    assert [(s.state, s.reason, s.wall - t0) for s in snap.states] == [
        ("reconnecting", "Connecting to live updates", 0.0),
        ("live", "Live updates", 2.5),
        ("degraded", "checking every 15 s", 32.5),
    ]


def test_state_history_is_bounded_keeping_the_newest(clock: FakeClock) -> None:
    rec = ActivityRecorder(clock, state_history_max=5)
    for i in range(12):
        rec.emit("connection_state", state="live", reason=f"r{i}")
    assert [s.reason for s in rec.snapshot().states] == ["r7", "r8", "r9", "r10", "r11"]


# ---------------------------------------------------------------- rates and rejections
def test_pokes_and_pulls_per_minute_over_a_sliding_minute(
    rec: ActivityRecorder, clock: FakeClock
) -> None:
    for i in range(10):
        poke(rec, f"Observation/o{i}", "1")
        pull(rec, f"Observation/o{i}", "1")
        clock.advance(3.0)  # 10 pokes over 30 s
    snap = rec.snapshot()
    assert (snap.pokes_per_min, snap.pulls_per_min) == (10, 10)
    clock.advance(44.0)  # the first five (at 0..12 s) are now more than a minute old
    snap = rec.snapshot()
    assert snap.pokes_per_min == 5 and snap.pulls_per_min == 5
    assert (snap.pokes_total, snap.pulls_total) == (10, 10)
    clock.advance(60.0)
    assert rec.snapshot().pokes_per_min == 0


def test_rejected_pokes_are_counted_by_reason(rec: ActivityRecorder, clock: FakeClock) -> None:
    for reason in ("unknown_field", "bad_json", "unknown_field", "too_large"):
        rec.emit("poke_rejected", reason=reason)
    rec.emit("poke_rejected")  # a reason missing is still counted, never raises
    snap = rec.snapshot()
    assert snap.rejected == {"unknown_field": 2, "bad_json": 1, "too_large": 1, "unknown": 1}
    assert snap.rejected_total == 5 and snap.rejected_per_min == 5
    assert [e.detail for e in snap.recent[:2]] == ["unknown", "too_large"]
    clock.advance(61)
    snap = rec.snapshot()
    assert snap.rejected_per_min == 0 and snap.rejected_total == 5  # totals stay


# ---------------------------------------------------------------- latency
def test_poke_to_pull_latency_matches_reference_and_version(
    rec: ActivityRecorder, clock: FakeClock
) -> None:
    poke(rec, "Observation/a", "2")
    clock.advance(0.10)
    poke(rec, "Observation/b", "5")
    clock.advance(0.20)
    pull(rec, "Observation/b", "4")  # an older version does not answer the poke for 5
    pull(rec, "Observation/c", "1")  # no poke for it: an initial load, not a latency sample
    clock.advance(0.05)
    pull(rec, "Observation/a", "2")  # 0.35 s after its poke
    pull(rec, "Observation/b", "5")  # 0.25 s after its poke
    snap = rec.snapshot()
    assert snap.poke_to_pull.count == 2
    assert snap.poke_to_pull.p50 == pytest.approx(0.25)
    assert snap.poke_to_pull.max == pytest.approx(0.35)
    assert snap.pending_pokes == 0


def test_a_newer_version_answers_older_pokes_and_repeats_keep_the_first_arrival(
    rec: ActivityRecorder, clock: FakeClock
) -> None:
    poke(rec, "DiagnosticReport/r", "2")
    clock.advance(1.0)
    poke(rec, "DiagnosticReport/r", "2")  # re-sent: the wait still began at the first one
    poke(rec, "DiagnosticReport/r", "3")
    clock.advance(0.5)
    pull(rec, "DiagnosticReport/r", "10")  # "10" > "3" > "2" as numbers, not as text
    snap = rec.snapshot()
    assert snap.poke_to_pull.count == 2
    assert snap.poke_to_pull.max == pytest.approx(1.5)
    assert snap.poke_to_pull.p50 == pytest.approx(0.5)
    pull(rec, "DiagnosticReport/r", "11")  # nothing left waiting: no extra sample
    assert rec.snapshot().poke_to_pull.count == 2


def test_percentiles_over_many_samples(rec: ActivityRecorder, clock: FakeClock) -> None:
    # Latencies 10 ms, 20 ms, ..., 1000 ms.
    for i in range(1, 101):
        poke(rec, f"Observation/o{i}", "1")
        clock.advance(i * 0.01)
        pull(rec, f"Observation/o{i}", "1")
    lat = rec.snapshot().poke_to_pull
    assert lat.count == 100
    assert lat.p50 == pytest.approx(0.50)
    assert lat.p95 == pytest.approx(0.95)
    assert lat.p99 == pytest.approx(0.99)
    assert lat.max == pytest.approx(1.00)


def test_poke_to_screen_latency_from_rendered_versions(
    rec: ActivityRecorder, clock: FakeClock
) -> None:
    poke(rec, "Observation/a", "1")
    poke(rec, "Observation/b", "7")
    clock.advance(0.2)
    pull(rec, "Observation/a", "1")
    pull(rec, "Observation/b", "7")
    clock.advance(0.1)
    rec.emit("rendered", window="ward-1", refs=["Observation/a", "Patient/p"],
             versions={"Observation/a": "1", "Patient/p": "2"})
    rec.emit("rendered", window="ward-1", refs=["Observation/b"], versions="junk")
    snap = rec.snapshot()
    assert snap.poke_to_pull.count == 2
    assert snap.poke_to_screen.count == 1
    assert snap.poke_to_screen.p50 == pytest.approx(0.3)


def test_a_version_already_held_when_its_poke_arrives_took_no_time(
    rec: ActivityRecorder, clock: FakeClock
) -> None:
    # An earlier poke's pull brought version 3, which was shown before its own poke came.
    pull(rec, "Observation/a", "3")
    rec.emit("rendered", window="ward-1", refs=["Observation/a"],
             versions={"Observation/a": "3"})
    clock.advance(0.05)
    poke(rec, "Observation/a", "3")
    poke(rec, "Observation/a", "2")  # older: covered too
    snap = rec.snapshot()
    assert (snap.poke_to_pull.count, snap.poke_to_screen.count) == (2, 2)
    assert snap.poke_to_pull.p99 == 0.0 and snap.poke_to_screen.p99 == 0.0
    assert snap.pending_pokes == 0
    # A newer version is not held yet: it waits as before.
    poke(rec, "Observation/a", "4")
    clock.advance(0.2)
    pull(rec, "Observation/a", "4")
    snap = rec.snapshot()
    assert snap.poke_to_pull.count == 3 and snap.poke_to_pull.max == pytest.approx(0.2)


def test_unanswered_pokes_expire_and_are_counted(clock: FakeClock) -> None:
    rec = ActivityRecorder(clock, pending_ttl_s=60.0)
    poke(rec, "Observation/a", "1")
    clock.advance(30)
    poke(rec, "Observation/b", "1")
    assert rec.snapshot().pending_pokes == 2
    clock.advance(31)  # a is 61 s old
    snap = rec.snapshot()
    assert (snap.pending_pokes, snap.unmatched_pokes) == (1, 1)
    pull(rec, "Observation/a", "1")  # too late: not a sample
    pull(rec, "Observation/b", "1")
    snap = rec.snapshot()
    assert snap.poke_to_pull.count == 1 and snap.poke_to_pull.p50 == pytest.approx(31.0)


def test_pending_pokes_and_samples_are_bounded(clock: FakeClock) -> None:
    rec = ActivityRecorder(clock, pending_max=100, latency_samples_max=50)
    for i in range(1000):
        poke(rec, f"Observation/o{i}", "1")
    snap = rec.snapshot()
    assert snap.pending_pokes == 100 and snap.unmatched_pokes == 900
    pull(rec, "Observation/o0", "1")  # evicted long ago
    pull(rec, "Observation/o999", "1")  # still waiting
    assert rec.snapshot().poke_to_pull.count == 1
    for i in range(900, 999):
        pull(rec, f"Observation/o{i}", "1")
    assert rec.snapshot().poke_to_pull.count == 50


# ---------------------------------------------------------------- update log
def test_recent_update_log_is_newest_first_bounded_and_references_only(
    clock: FakeClock,
) -> None:
    rec = ActivityRecorder(clock, recent_max=3)
    poke(rec, "Observation/a", "1")
    clock.advance(1)
    pull(rec, "Observation/a", "1", key="vitals Patient/p1")
    clock.advance(1)
    rec.emit("poke_rejected", reason="unknown_field")
    clock.advance(1)
    rec.emit("poke_received", ref="DiagnosticReport/r", versionId="2", seq=9,
             priority="urgent", type="CRITICAL_LAB_RESULT")
    recent = rec.snapshot().recent
    assert [(e.kind, e.ref, e.version_id, e.detail) for e in recent] == [
        ("poke", "DiagnosticReport/r", "2", "CRITICAL_LAB_RESULT urgent"),
        ("rejected", "", "", "unknown_field"),
        ("pull", "Observation/a", "1", "vitals Patient/p1"),
    ]
    assert recent[0].wall - recent[2].wall == 2.0
    # Unknown events and unknown fields are not recorded: the log cannot carry content.
    rec.emit("poke_received", ref="Observation/x", versionId="1", note="Zzsample Amber K 6.9")
    assert "Zzsample" not in repr(rec.snapshot())


def test_other_events_and_malformed_fields_never_raise(rec: ActivityRecorder) -> None:
    rec.emit("sandbox_ready", sandbox={"fhir_base": "http://x"})
    rec.emit("alert_raised", ref="Observation/1", versionId="1")
    rec.emit("poke_received", ref=None, versionId=3)
    rec.emit("pull_done", ref=["x"], versionId=None)
    rec.emit("connection_state")
    snap = rec.snapshot()
    assert snap.pokes_total == 1 and snap.pulls_total == 1 and snap.pending_pokes == 0
    assert snap.states[-1].state == ""


def test_recorder_is_safe_from_several_threads(clock: FakeClock) -> None:
    rec = ActivityRecorder(clock)

    def work(n: int) -> None:
        for i in range(500):
            poke(rec, f"Observation/t{n}-{i}", "1")
            pull(rec, f"Observation/t{n}-{i}", "1")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = rec.snapshot()
    assert (snap.pokes_total, snap.pulls_total, snap.pending_pokes) == (2000, 2000, 0)
    assert snap.poke_to_pull.count == 1000  # the newest 1000 samples are kept


# ---------------------------------------------------------------- Tee
def test_tee_fans_out_to_the_file_log_and_the_recorder(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "metrics.jsonl"
    file_log, rec, memory = FileMetrics(path), ActivityRecorder(clock), MemoryMetrics()
    tee = Tee(file_log, rec, memory)
    tee.emit("poke_received", ref="Observation/a", versionId="1", seq=1, priority="routine",
             type="RESOURCE_CHANGED")
    tee.emit("connection_state", state="live", reason="Live updates")
    tee.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["poke_received", "connection_state"]
    assert lines[0]["ref"] == "Observation/a" and "t_wall" in lines[0]
    assert rec.snapshot().pokes_total == 1
    assert [e["event"] for e in memory.events] == ["poke_received", "connection_state"]


class BrokenSink:
    def emit(self, event: str, **fields: Any) -> None:
        raise OSError("No space left on device")


def test_a_failing_sink_does_not_stop_the_others(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    rec = ActivityRecorder(clock)
    tee = Tee(BrokenSink(), rec)
    for _ in range(3):
        tee.emit("poke_rejected", reason="bad_json")
    assert rec.snapshot().rejected == {"bad_json": 3}
    assert tee.failures[0] == 3
    failures = [r for r in caplog.records if "metrics sink BrokenSink failed" in r.getMessage()]
    assert len(failures) == 1  # logged once, then counted


def test_unpoked_versions_of_one_pull_share_a_log_line(
    rec: ActivityRecorder, clock: FakeClock
) -> None:
    poke(rec, "Observation/poked", "2")
    for i in range(300):  # a first load: hundreds of versions nobody poked
        pull(rec, f"Observation/o{i}", "1", key="vitals Patient/p1")
    pull(rec, "Observation/poked", "2", key="vitals Patient/p1")  # answers the poke
    pull(rec, "Observation/x", "1", key="vitals Patient/p1")  # new line after a poked one
    pull(rec, "Observation/y", "1", key="labs Patient/p1")  # another query: another line
    clock.advance(2.0)
    pull(rec, "Observation/z", "1", key="labs Patient/p1")  # a later pull: another line
    recent = rec.snapshot().recent
    assert [(e.ref, e.version_id, e.detail, e.count, e.poked) for e in recent] == [
        ("Observation/z", "1", "labs Patient/p1", 1, False),
        ("Observation/y", "1", "labs Patient/p1", 1, False),
        ("Observation/x", "1", "vitals Patient/p1", 1, False),
        ("Observation/poked", "2", "vitals Patient/p1", 1, True),
        ("Observation/o0", "", "vitals Patient/p1", 300, False),
        ("Observation/poked", "2", "RESOURCE_CHANGED routine", 1, False),
    ]
    assert rec.snapshot().pulls_total == 304  # every version still counts in the rates
