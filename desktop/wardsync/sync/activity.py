"""The activity recorder: a metrics sink that keeps a bounded recent history for diagnostics.

The Diagnostics window (and IT, through its copied summary) needs to see what the shared
connection has been doing: connection state changes with their reasons, how many pokes and
pulls arrive per minute, which pokes were rejected and why, how long a poke takes to become a
pulled version (and a version on screen), and a short log of the latest updates. All of this
is already in the metrics events (docs/architecture.md §3.4), so the recorder is a `MetricsSink`:
the app sends its events through a `Tee` to both the file log and the recorder.

Everything is bounded, whatever the event rate: rates are counted in one-second buckets over
a sliding minute, the history, the update log and the latency samples are fixed-size rings,
and pokes waiting for their pull are capped and expire. Only references, versions, states,
reason codes and numbers are kept, never clinical content.

Latency matching: a `poke_received` for ("Observation/1", "3") waits until a `pull_done` for
that reference brings version 3 or newer (a newer version answers the poke too: the data on
hand is at least as fresh as the poke announced). `rendered` events resolve the same way for
the poke-to-screen latency. A poke whose version was already held when it arrived produces
no `pull_done` and expires unmatched after `PENDING_POKE_TTL_S`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from wardsync.core.clock import Clock
from wardsync.core.metrics import MetricsSink
from wardsync.core.timer import SYSTEM_TIMER

log = logging.getLogger(__name__)

RATE_WINDOW_S = 60.0  # "per minute" rates count the events of the last minute
RATE_BUCKET_S = 1.0  # rates are counted in buckets this wide (memory: window / bucket)
STATE_HISTORY_MAX = 100  # connection state changes kept
RECENT_UPDATES_MAX = 200  # entries of the recent update log
LATENCY_SAMPLES_MAX = 1000  # latest latency samples the percentiles are computed from
PENDING_POKES_MAX = 5000  # pokes waiting for their pull / repaint, oldest dropped first
PENDING_POKE_TTL_S = 300.0  # a poke not answered within this long stops waiting
PULL_GROUP_S = 1.0  # unpoked versions of one query pulled within this long share a log line


@dataclass(frozen=True, slots=True)
class StateChange:
    """The shared connection entered `state` (live, reconnecting, degraded, offline)."""

    wall: float  # epoch seconds
    state: str
    reason: str


@dataclass(frozen=True, slots=True)
class UpdateEntry:
    """One line of the recent update log: references and versions only.

    `kind` is "poke", "pull" or "rejected"; `detail` is the poke's type and priority, the
    pulling query's label, or the rejection reason code. A pull that answers a poke gets a
    line of its own; versions pulled without a poke (first loads, catch-ups, polling) are
    summed into one line per pull, `count` versions with `ref` the first of them, so a
    first load of hundreds of resources does not push the pokes out of the log.
    """

    wall: float
    kind: str
    ref: str
    version_id: str
    detail: str
    count: int = 1
    poked: bool = False  # a pull line that answered a poke


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Nearest-rank percentiles of the latest samples, in seconds (None without samples)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class ActivitySnapshot:
    """What the recorder knows at one moment; immutable, safe to hand to another thread."""

    wall: float
    states: tuple[StateChange, ...]  # oldest first
    pokes_per_min: int
    pulls_per_min: int  # resource versions pulled (one `pull_done` each) in the last minute
    pokes_total: int
    pulls_total: int
    rejected: Mapping[str, int]  # reason code -> count since start
    rejected_per_min: int
    poke_to_pull: LatencySummary
    poke_to_screen: LatencySummary
    pending_pokes: int  # pokes still waiting for their pull
    unmatched_pokes: int  # pokes that expired (or were dropped) without a matching pull
    recent: tuple[UpdateEntry, ...]  # newest first

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def percentile(sorted_samples: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile `pct` (0 < pct <= 100) of already sorted samples."""
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    if not sorted_samples:
        return None
    rank = math.ceil(pct / 100.0 * len(sorted_samples))
    return sorted_samples[max(rank, 1) - 1]


def summarize_latency(samples: Iterable[float]) -> LatencySummary:
    """p50 / p95 / p99 / max of `samples` (seconds)."""
    ordered = sorted(samples)
    return LatencySummary(
        count=len(ordered),
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        max=ordered[-1] if ordered else None,
    )


class SlidingCounter:
    """Counts events in the last `window_s` seconds with fixed memory (one-second buckets).

    Precision is one bucket: an event leaves the count between `window_s - bucket_s` and
    `window_s` after it happened, which is plenty for a "per minute" figure.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S, bucket_s: float = RATE_BUCKET_S) -> None:
        if window_s <= 0 or bucket_s <= 0 or bucket_s > window_s:
            raise ValueError("need 0 < bucket_s <= window_s")
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets: deque[list[int]] = deque()  # [bucket index, count], oldest first

    def add(self, now: float, n: int = 1) -> None:
        index = math.floor(now / self.bucket_s)
        if self._buckets and self._buckets[-1][0] >= index:
            # Same bucket (or a clock that stood still): count it in the newest bucket.
            self._buckets[-1][1] += n
        else:
            self._buckets.append([index, n])
        self._trim(now)

    def count(self, now: float) -> int:
        self._trim(now)
        return sum(n for _, n in self._buckets)

    def _trim(self, now: float) -> None:
        # Bucket i covers [i*b, (i+1)*b); keep buckets that end after now - window.
        oldest = math.floor((now - self.window_s) / self.bucket_s)
        while self._buckets and self._buckets[0][0] <= oldest:
            self._buckets.popleft()


def _version_number(version: str) -> int | None:
    return int(version) if version.isascii() and version.isdigit() else None


def _covers(received: str, wanted: str) -> bool:
    """True if holding version `received` answers a poke that announced `wanted`."""
    got, want = _version_number(received), _version_number(wanted)
    if got is not None and want is not None:
        return got >= want  # R4 servers number versions 1, 2, 3... (see core.store.is_newer)
    return received == wanted


class _PendingPokes:
    """Pokes waiting for a version: (ref, version) -> monotonic arrival time, bounded."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._max = max_entries
        self._ttl_s = ttl_s
        self._by_key: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._by_ref: dict[str, set[str]] = {}
        self.dropped = 0  # expired or evicted without an answer

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, ref: str, version: str, now: float) -> None:
        key = (ref, version)
        if key in self._by_key:
            return  # a re-sent poke: the first arrival is when the wait began
        self._by_key[key] = now
        self._by_ref.setdefault(ref, set()).add(version)
        while len(self._by_key) > self._max:
            self._pop_oldest()

    def resolve(self, ref: str, version: str) -> list[float]:
        """Remove and return the arrival times of pokes for `ref` that `version` answers."""
        versions = self._by_ref.get(ref)
        if not versions:
            return []
        answered = [v for v in versions if _covers(version, v)]
        times = [self._by_key.pop((ref, v)) for v in answered]
        versions.difference_update(answered)
        if not versions:
            del self._by_ref[ref]
        return times

    def expire(self, now: float) -> None:
        while self._by_key:
            (_, _), arrived = next(iter(self._by_key.items()))
            if now - arrived < self._ttl_s:
                return
            self._pop_oldest()

    def _pop_oldest(self) -> None:
        (ref, version), _ = self._by_key.popitem(last=False)
        versions = self._by_ref.get(ref)
        if versions is not None:
            versions.discard(version)
            if not versions:
                del self._by_ref[ref]
        self.dropped += 1


class _Held:
    """The newest version of each resource already pulled (or shown), bounded: a poke that
    arrives for a version held before it is answered at once. Through a relay, one poke's
    pull often brings the versions written just after it before their own pokes arrive."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._by_ref: OrderedDict[str, str] = OrderedDict()

    def record(self, ref: str, version: str) -> None:
        held = self._by_ref.pop(ref, None)
        self._by_ref[ref] = held if held is not None and _covers(held, version) else version
        while len(self._by_ref) > self._max:
            self._by_ref.popitem(last=False)

    def covers(self, ref: str, version: str) -> bool:
        held = self._by_ref.get(ref)
        return held is not None and _covers(held, version)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class ActivityRecorder:
    """A `MetricsSink` that keeps the recent activity of the shared connection in memory.

    Feed it every metrics event (put it behind a `Tee` next to the file log) and read it with
    `snapshot()`. Times come from `clock` (monotonic for rates and latency, wall for the
    timestamps shown), so tests drive it with a `FakeClock`. Safe to call from several
    threads; events it does not know are ignored, malformed fields are read as empty.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        state_history_max: int = STATE_HISTORY_MAX,
        recent_max: int = RECENT_UPDATES_MAX,
        latency_samples_max: int = LATENCY_SAMPLES_MAX,
        pending_max: int = PENDING_POKES_MAX,
        pending_ttl_s: float = PENDING_POKE_TTL_S,
        rate_window_s: float = RATE_WINDOW_S,
    ) -> None:
        self.clock = clock or SYSTEM_TIMER
        self._lock = threading.Lock()
        self._states: deque[StateChange] = deque(maxlen=state_history_max)
        self._recent: deque[UpdateEntry] = deque(maxlen=recent_max)
        self._poke_rate = SlidingCounter(rate_window_s)
        self._pull_rate = SlidingCounter(rate_window_s)
        self._reject_rate = SlidingCounter(rate_window_s)
        self._rejected: Counter[str] = Counter()
        self._pokes_total = 0
        self._pulls_total = 0
        self._to_pull: deque[float] = deque(maxlen=latency_samples_max)
        self._to_screen: deque[float] = deque(maxlen=latency_samples_max)
        self._awaiting_pull = _PendingPokes(pending_max, pending_ttl_s)
        self._awaiting_screen = _PendingPokes(pending_max, pending_ttl_s)
        self._pulled = _Held(pending_max)
        self._shown = _Held(pending_max)

    # ------------------------------------------------------------------ MetricsSink
    def emit(self, event: str, **fields: Any) -> None:
        """Record one metrics event (see docs/architecture.md §3.4 for the fields)."""
        now = self.clock.monotonic()
        wall = self.clock.wall()
        with self._lock:
            self._awaiting_pull.expire(now)
            self._awaiting_screen.expire(now)
            match event:
                case "connection_state":
                    self._states.append(StateChange(
                        wall, _text(fields.get("state")), _text(fields.get("reason"))))
                case "poke_received":
                    self._on_poke(now, wall, fields)
                case "poke_rejected":
                    reason = _text(fields.get("reason")) or "unknown"
                    self._rejected[reason] += 1
                    self._reject_rate.add(now)
                    self._recent.append(UpdateEntry(wall, "rejected", "", "", reason))
                case "pull_done":
                    self._on_pull(now, wall, fields)
                case "rendered":
                    self._on_rendered(now, fields)
                case _:
                    pass  # other events (sandbox_ready, alerts) are not part of this view

    def _on_poke(self, now: float, wall: float, fields: Mapping[str, Any]) -> None:
        ref, version = _text(fields.get("ref")), _text(fields.get("versionId"))
        self._pokes_total += 1
        self._poke_rate.add(now)
        detail = " ".join(p for p in (_text(fields.get("type")),
                                      _text(fields.get("priority"))) if p)
        self._recent.append(UpdateEntry(wall, "poke", ref, version, detail))
        if ref and version:
            # Already held when its poke came (an earlier poke's pull brought it): no wait.
            if self._pulled.covers(ref, version):
                self._to_pull.append(0.0)
            else:
                self._awaiting_pull.add(ref, version, now)
            if self._shown.covers(ref, version):
                self._to_screen.append(0.0)
            else:
                self._awaiting_screen.add(ref, version, now)

    def _on_pull(self, now: float, wall: float, fields: Mapping[str, Any]) -> None:
        ref, version = _text(fields.get("ref")), _text(fields.get("versionId"))
        self._pulls_total += 1
        self._pull_rate.add(now)
        key = _text(fields.get("key"))
        if ref and version:
            self._pulled.record(ref, version)
        answered = self._awaiting_pull.resolve(ref, version) if ref and version else []
        self._to_pull.extend(now - t for t in answered)
        last = self._recent[-1] if self._recent else None
        if (not answered and last is not None and last.kind == "pull" and not last.poked
                and last.detail == key and wall - last.wall < PULL_GROUP_S):
            # The next version of the same pull: its `pull_done` events come back to back.
            self._recent[-1] = replace(last, version_id="", count=last.count + 1)
        else:
            self._recent.append(
                UpdateEntry(wall, "pull", ref, version, key, poked=bool(answered)))

    def _on_rendered(self, now: float, fields: Mapping[str, Any]) -> None:
        versions = fields.get("versions")
        if not isinstance(versions, Mapping):
            return
        for ref, version in versions.items():
            if isinstance(ref, str) and isinstance(version, str):
                self._shown.record(ref, version)
                self._to_screen.extend(
                    now - t for t in self._awaiting_screen.resolve(ref, version))

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> ActivitySnapshot:
        """The recent activity as of now."""
        now = self.clock.monotonic()
        with self._lock:
            self._awaiting_pull.expire(now)
            self._awaiting_screen.expire(now)
            return ActivitySnapshot(
                wall=self.clock.wall(),
                states=tuple(self._states),
                pokes_per_min=self._poke_rate.count(now),
                pulls_per_min=self._pull_rate.count(now),
                pokes_total=self._pokes_total,
                pulls_total=self._pulls_total,
                rejected=dict(self._rejected),
                rejected_per_min=self._reject_rate.count(now),
                poke_to_pull=summarize_latency(self._to_pull),
                poke_to_screen=summarize_latency(self._to_screen),
                pending_pokes=len(self._awaiting_pull),
                unmatched_pokes=self._awaiting_pull.dropped,
                recent=tuple(reversed(self._recent)),
            )


class Tee:
    """A `MetricsSink` that hands every event to several sinks (file log + recorder).

    A failing sink (a full disk under the file log) must not stop the others, nor the sync
    code that emitted the event: its error is logged once per sink and counted in `failures`.
    """

    def __init__(self, *sinks: MetricsSink) -> None:
        self.sinks: tuple[MetricsSink, ...] = sinks
        self.failures: Counter[int] = Counter()  # sink position -> failed emits

    def emit(self, event: str, **fields: Any) -> None:
        for i, sink in enumerate(self.sinks):
            try:
                sink.emit(event, **fields)
            except Exception:
                self.failures[i] += 1
                if self.failures[i] == 1:  # once per sink: a full disk would flood the log
                    log.exception("metrics sink %s failed (event %s); further failures are "
                                  "counted, not logged", type(sink).__name__, event)

    def close(self) -> None:
        """Close every sink that can be closed (the file log)."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                close()
