"""Benchmark: FHIR commit -> poke through the WardSync relay, and -> rendered, against the
former in-process publisher in the same run; the relay's throughput and reconciliation cost.

**Latency** (beside `poke_to_render`, same joins): three backends run side by side for the
whole run, each with its own app process (`benchmarks.app_process --windows N`, offscreen Qt)
and its own bare realtime subscriber (a process that does nothing else):

  * `sandbox_relay`: `wardsync sandbox` as shipped: the relay component in the sandbox's
    process, fed by the sandbox's topic Subscriptions over loopback HTTP (docs/relay.md);
  * `relay_process`: `wardsync sandbox --no-relay` and a `wardsync relay` process beside it,
    as a hospital runs it;
  * `inprocess_baseline`: the baseline, the sandbox's former in-process publisher (a hook on
    the FHIR store, no Subscription, no read; `benchmarks.baseline_sandbox`).

The driver writes rounds of vital signs (one round of 7 per interval) to one backend at a
time in blocks, variants interleaved and their order rotated block by block, so a slow spell
of this shared machine hits all of them. Per variant: commit -> poke at the bare subscriber
(the backend's share), commit -> `rendered` in each window and in the last one, the app's
share, every poke counted per version (each write must be poked exactly once); the relay's
share is its commit -> poke minus the baseline's, percentile by percentile; ratios to the
baseline and to an authenticated FHIR read round trip measured in the same run (the floor).

**Throughput** (the `relay_process` backend, apps stopped): steps of increasing write rate,
the last as fast as the writer can (`--throughput-writers` creates in flight); per step the
commit -> poke lag at the bare subscriber, its growth over the step (least-squares slope,
seconds of lag per second of writing) and the relay's backlog (`wardsync_relay_pokes_pending`)
at the step's end. Bounded = slope <= `--bounded-slope`; the sustained rate is the highest
write rate of a bounded step. One ward is one Ably channel, which the relay paces under
Ably's 50 messages/s (`ably.max_pokes_per_s`, 40 by default): the relay process's CPU per
step says how far its own work is from that cap.

**Reconciliation** (a fresh `--no-relay` sandbox): (1) a `wardsync relay` process with
`subscriptions.mode = "none"`, so its poll alone finds changes: commit -> poke for writes at
random moments, against the stated bound (`reconcile.interval_s` + a round's duration,
docs/relay.md "Reconciliation bound"); (2) `wardsync.relay.Relay` in this process, its poll
held back, one round run by hand after K resources changed: the round's duration and the FHIR
requests it made (searches, pages, ward look-ups).

Run: `.venv/bin/python -m benchmarks.relay_path` (about 5.5 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import poke_to_render
from benchmarks.baseline_sandbox import running_baseline
from benchmarks.common import (
    REPO,
    AppProcess,
    PokeWatcher,
    ResourceSampler,
    WardWriters,
    Written,
    distribution,
    linear_fit,
    random_vitals,
    ratio,
    running_relay,
    running_sandbox,
    work_directory,
    write_result,
)
from wardsync.core.tasks import TaskOwner
from wardsync.relay.config import RelayConfig
from wardsync.relay.service import Relay
from wardsync.sandbox.ward.observations import VITAL_SLUGS, vital_sign_observations

log = logging.getLogger("benchmarks.relay_path")

SANDBOX_RELAY = "sandbox_relay"
RELAY_PROCESS = "relay_process"
BASELINE = "inprocess_baseline"
VARIANTS: dict[str, str] = {
    SANDBOX_RELAY: "`wardsync sandbox` as shipped: its relay component (same process, own "
                   "port) fed by the sandbox's topic Subscriptions",
    RELAY_PROCESS: "`wardsync sandbox --no-relay` + a `wardsync relay` process (topic "
                   "Subscriptions), as a hospital runs it",
    BASELINE: "baseline: the former in-process publisher, a hook on the sandbox's FHIR store "
              "(benchmarks.baseline_sandbox)",
}
RELAY_VARIANTS = (SANDBOX_RELAY, RELAY_PROCESS)
# Targets for the relay path: commit -> last window rendered, and the app's share.
TARGET_ALL_WINDOWS_P50_MS = 50.0
TARGET_ALL_WINDOWS_P99_MS = 150.0
TARGET_APP_SHARE_P50_MS = 10.0
TARGET_APP_SHARE_P99_MS = 40.0
# What the relay under test polls (as common.running_relay configures it).
RECONCILE_TYPES = ("DiagnosticReport", "Encounter", "Observation", "Task")
HELD_BACK_POLL_S = 3600.0  # the in-process relay's own poll: never during the measurement
WAIT_STEP_S = 0.05
SUBSCRIBER_READY_TIMEOUT_S = 30.0
SUBSCRIBER_STOP_TIMEOUT_S = 10.0
FSYNC_PROBE_S = 0.2
VITALS_PER_ROUND = len(VITAL_SLUGS)  # one round: 7 Observations written one by one
PUBLISHED_SAMPLE = "wardsync_relay_pokes_published_total"  # by type (relay/metrics.py)


@dataclass(frozen=True)
class Config:
    windows: int = 4
    patients: int = 24
    seed: int = 11
    variants: tuple[str, ...] = tuple(VARIANTS)
    # latency: `rounds` x one block per variant, `block_s` of vital-sign rounds each
    rounds: int = 3
    block_s: float = 10.0
    round_interval_s: float = 1.0
    warmup_rounds: int = 2
    settle_s: float = 2.0
    floor_samples: int = 30
    # throughput: write-rate steps (0 = as fast as the writer can), `step_s` each
    throughput_rates: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 30.0, 0.0)
    throughput_step_s: float = 4.0
    throughput_writers: int = 4
    bounded_slope: float = 0.05  # s of extra lag per s of writing still counted as bounded
    drain_timeout_s: float = 60.0
    # reconciliation
    poll_interval_s: float = 2.0
    poll_writes: int = 24
    poll_spacing_s: tuple[float, float] = (0.15, 0.55)
    reconcile_batches: tuple[int, ...] = (0, 1, 10, 100, 300)
    phases: tuple[str, ...] = ("latency", "throughput", "reconciliation")


# ---------------------------------------------------------------------------- subscribers
class _EchoWatcher(PokeWatcher):
    """In the subscriber process: each poke as one JSON line [ref, versionId, t_wall]."""

    def _on_message(self, message: Any) -> None:
        now = time.time()
        data = message.data
        if isinstance(data, str | bytes):
            data = json.loads(data)
        if isinstance(data, dict):
            line = [f"{data.get('resourceType')}/{data.get('id')}", str(data.get("versionId")),
                    now]
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()


async def _serve_subscriber() -> None:
    """`--subscriber`: the bare subscriber's own process (the backend's ready line on stdin,
    then until stdin closes)."""
    loop = asyncio.get_running_loop()
    info = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    async with _EchoWatcher(info):
        sys.stdout.write(json.dumps({"ready": True}) + "\n")
        sys.stdout.flush()
        await loop.run_in_executor(None, sys.stdin.read)


class PokeSubscriber:
    """A bare realtime subscriber on the ward channel in a process of its own (root key, the
    real ably SDK, nothing else to do), so neither this driver's writes nor its bookkeeping
    delay the arrival times it stamps. Counts every poke per version."""

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = {k: info[k] for k in ("ably_key", "ably_endpoint", "ward")}
        self.received: dict[tuple[str, str], float] = {}  # first arrival, t_wall
        self.counts: Counter[tuple[str, str]] = Counter()
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks = TaskOwner("poke subscriber reader", logger=log)

    async def __aenter__(self) -> PokeSubscriber:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        self._proc = proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.relay_path", "--subscriber",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=str(REPO),
            env=env)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(self._info) + "\n").encode())  # the key: never argv
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), SUBSCRIBER_READY_TIMEOUT_S)
        if not line or not json.loads(line).get("ready"):
            await self._stop()
            raise RuntimeError("the poke subscriber process did not start")
        self._tasks.spawn(self._read(proc.stdout), name="poke subscriber lines")
        return self

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        while line := await stdout.readline():
            ref, version, t_wall = json.loads(line)
            key = (ref, version)
            self.counts[key] += 1
            self.received.setdefault(key, t_wall)

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), SUBSCRIBER_STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await self._tasks.aclose(grace_s=1.0)


def poke_counts(written: list[Written], watcher: PokeSubscriber) -> dict[str, int]:
    """How many of `written` the subscriber saw once, never, and more than once."""
    seen = [watcher.counts.get((w.ref, w.version), 0) for w in written]
    return {"writes": len(written), "poked_once": sum(1 for n in seen if n == 1),
            "never": sum(1 for n in seen if n == 0), "more_than_once": sum(1 for n in seen
                                                                          if n > 1)}


async def until_poked(written: list[Written], watcher: PokeSubscriber,
                      timeout_s: float) -> bool:
    """Wait until the subscriber has seen every version written; False on timeout."""
    deadline = time.monotonic() + timeout_s
    keys = [(w.ref, w.version) for w in written]
    while any(k not in watcher.received for k in keys):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(WAIT_STEP_S)
    return True


# ---------------------------------------------------------------------------- writes
async def create_one(writers: WardWriters, patient: str, rng: random.Random) -> Written:
    """One heart-rate Observation, as a bedside monitor posts it (one write, one poke)."""
    obs = vital_sign_observations(patient, random_vitals(rng), effective=datetime.now(UTC))[0]
    stored = await writers.reader.create(obs)
    return Written.of(stored, patient)


async def write_each_patient(writers: WardWriters, patients: list[str],
                             rng: random.Random) -> list[Written]:
    """One change per patient, one at a time."""
    return [await create_one(writers, patient, rng) for patient in patients]


class FsyncProbe:
    """While open: every `FSYNC_PROBE_S`, the time an fsync of 4 KiB takes in `directory`
    (in a thread). The relay commits its numbering with SQLite synchronous=FULL on its event
    loop, so a slow disk slows every poke; this says how slow the disk was meanwhile."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "fsync-probe"
        self.samples_ms: list[float] = []
        self._tasks = TaskOwner("fsync probe", logger=log)

    def _once(self) -> float:
        with open(self._path, "ab") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            t = time.perf_counter()
            os.fsync(fh.fileno())
            return (time.perf_counter() - t) * 1000

    async def _run(self) -> None:
        while True:
            self.samples_ms.append(await asyncio.to_thread(self._once))
            await asyncio.sleep(FSYNC_PROBE_S)

    async def __aenter__(self) -> FsyncProbe:
        self._tasks.spawn(self._run(), name="fsync probe")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tasks.aclose()
        self._path.unlink(missing_ok=True)


async def write_paced(writers: WardWriters, patients: list[str], rng: random.Random, *,
                      rate: float, duration_s: float, in_flight: int) -> list[Written]:
    """Single creates at `rate` per second (0: as fast as `in_flight` writers go) for
    `duration_s`; returns them in commit order."""
    gate = asyncio.Semaphore(in_flight)
    written: list[Written] = []

    async def one(i: int) -> None:
        try:
            written.append(await create_one(writers, patients[i % len(patients)], rng))
        finally:
            gate.release()

    start = time.monotonic()
    async with asyncio.TaskGroup() as group:
        i = 0
        while True:
            due = start + i / rate if rate > 0 else time.monotonic()
            if due - start >= duration_s:
                break
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            await gate.acquire()
            group.create_task(one(i))
            i += 1
    return sorted(written, key=lambda w: w.commit_wall)


# ---------------------------------------------------------------------------- metrics
async def scrape(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The relay's /metrics as {sample name (labels folded in): value}."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families((await http.get(url)).text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out


def published(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(PUBLISHED_SAMPLE))


# ---------------------------------------------------------------------------- latency
@dataclass
class Backend:
    """One variant's backend, writers, bare subscriber and app process."""

    variant: str
    info: dict[str, Any]
    writers: WardWriters
    watcher: PokeSubscriber
    app: AppProcess | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)


async def start_backend(stack: contextlib.AsyncExitStack, variant: str, cfg: Config,
                        scratch: Path) -> Backend:
    common = ("--no-simulator", "--patients", str(cfg.patients), "--seed", str(cfg.seed))
    if variant == SANDBOX_RELAY:
        info = await stack.enter_async_context(running_sandbox(*common))
    elif variant == RELAY_PROCESS:
        info = await stack.enter_async_context(running_sandbox(*common, "--no-relay"))
        relay = await stack.enter_async_context(running_relay(info, scratch / variant))
        info = {**info, "relay_process": relay}
    elif variant == BASELINE:
        info = await stack.enter_async_context(running_baseline(*common))
    else:
        raise ValueError(f"unknown variant {variant!r}")
    writers = await stack.enter_async_context(WardWriters.connect(info))
    watcher = await stack.enter_async_context(PokeSubscriber(info))
    return Backend(variant, info, writers, watcher)


def _rounds_of(cfg: Config, seconds: float) -> int:
    return max(1, int(seconds / cfg.round_interval_s))


async def latency_block(b: Backend, cfg: Config, rng: random.Random) -> None:
    """One block of vital-sign rounds to `b`, with the app's counters either side."""
    assert b.app is not None
    pacing = poke_to_render.Config(round_interval_s=cfg.round_interval_s)
    start = await b.app.snapshot("start")
    written = await poke_to_render.write_rounds(b.writers, b.app.ready["patients"], pacing, rng,
                                                _rounds_of(cfg, cfg.block_s))
    await until_poked(written, b.watcher, cfg.settle_s)
    await asyncio.sleep(cfg.settle_s)
    end = await b.app.snapshot("end")
    b.blocks.append({"written": written, "start": start, "end": end})


def by_position(written: list[Written], watcher: PokeSubscriber) -> list[float | None]:
    """commit -> poke at the bare subscriber, p50, for the 1st..7th Observation of a round
    (written one after the other within milliseconds): a publisher that sends one poke at a
    time makes the later ones wait for the earlier ones."""
    out: list[float | None] = []
    for position in range(VITALS_PER_ROUND):
        lags = [(watcher.received[(w.ref, w.version)] - w.commit_wall) * 1000
                for w in written[position::VITALS_PER_ROUND]
                if (w.ref, w.version) in watcher.received]
        out.append(distribution(lags).get("p50"))
    return out


def app_counters(blocks: list[dict[str, Any]]) -> dict[str, int]:
    """The app's intake over the measured blocks: pokes accepted, duplicates, seq gaps."""
    out: Counter[str] = Counter()
    for block in blocks:
        for name in ("pokes_accepted", "pokes_duplicate", "seq_gaps", "catch_ups"):
            out[name] += block["end"][name] - block["start"][name]
    return dict(out)


async def run_latency(cfg: Config, wd: Path, scratch: Path) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    async with contextlib.AsyncExitStack() as stack:
        backends = [await start_backend(stack, v, cfg, scratch) for v in cfg.variants]
        for b in backends:  # one at a time: start-up is CPU-heavy on 2 cores
            b.app = await stack.enter_async_context(AppProcess.run(
                b.info, wd, f"relay-path-{b.variant}", "--windows", str(cfg.windows)))
            pacing = poke_to_render.Config(round_interval_s=cfg.round_interval_s)
            warm = await poke_to_render.write_rounds(b.writers, b.app.ready["patients"][::-1],
                                                     pacing, rng, cfg.warmup_rounds)
            # A relay that has run for a while knows every patient's ward: one change per
            # patient first, so no measured poke waits for a first ward look-up.
            warm += await write_each_patient(b.writers, b.app.ready["patients"], rng)
            await until_poked(warm, b.watcher, cfg.drain_timeout_s)
        for r in range(cfg.rounds):
            k = r % len(backends)  # rotate the order: no variant always first after a pause
            for b in backends[k:] + backends[:k]:
                await latency_block(b, cfg, rng)
        for b in backends:
            written = [w for block in b.blocks for w in block["written"]]
            b.floor = await poke_to_render.fhir_read_floor(b.writers, written[0].ref,
                                                           cfg.floor_samples)
        reports = {}
        for b in backends:
            assert b.app is not None
            reports[b.variant] = await b.app.stop()
    return analyse_latency(cfg, backends, reports)


def analyse_latency(cfg: Config, backends: list[Backend],
                    reports: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]
                    ) -> dict[str, Any]:
    floor_all = [x for b in backends for x in b.floor]
    floor = distribution(floor_all)
    variants: dict[str, Any] = {}
    for b in backends:
        assert b.app is not None
        report, events = reports[b.variant]
        runs = [poke_to_render.analyse_run(
            block["written"], events, report, b.app.ready["windows"],
            block["start"]["t_mono_ns"], block["end"]["t_mono_ns"], b.watcher.received)
            for block in b.blocks]
        written = [w for block in b.blocks for w in block["written"]]
        variants[b.variant] = {
            "what": VARIANTS[b.variant],
            "pooled": poke_to_render.pooled(runs),
            "commit_to_poke_bare_p50_ms_by_position_in_round": by_position(written, b.watcher),
            "pokes_at_bare_subscriber": poke_counts(written, b.watcher),
            "app_intake": app_counters(b.blocks),
            "fhir_read_floor_ms": distribution(b.floor),
            "blocks": [{k: v for k, v in r.items() if k != "_raw"} for r in runs],
        }
    base = variants.get(BASELINE, {}).get("pooled", {})
    spans = ("write_to_poke_bare_subscriber_ms", "write_to_poke_ms", "write_to_render_ms",
             "write_to_all_windows_rendered_ms", "poke_to_render_ms")
    for name, v in variants.items():
        p = v["pooled"]
        v["ratios_to_fhir_read_floor"] = {
            f"{s}_{q}": ratio(p.get(s, {}).get(q, math.nan), floor.get("p50", math.nan))
            for s in spans for q in ("p50", "p99")}
        if name != BASELINE and base:
            v["ratios_to_baseline"] = {
                f"{s}_{q}": ratio(p.get(s, {}).get(q, math.nan), base.get(s, {}).get(q, math.nan))
                for s in spans for q in ("p50", "p99")}
            # The relay's share: what it adds to commit -> poke over the in-process hook
            # (percentile minus percentile: distributions, not per-write differences).
            v["relay_share_ms"] = {
                f"{s}_{q}": _minus(p.get(s, {}).get(q), base.get(s, {}).get(q))
                for s in ("write_to_poke_bare_subscriber_ms", "write_to_all_windows_rendered_ms")
                for q in ("mean", "p50", "p95", "p99")}
        last = p.get("write_to_all_windows_rendered_ms", {})
        app = p.get("poke_to_render_ms", {})
        v["targets_met"] = {
            "all_windows_rendered_p50_le_50_ms": last.get("p50", math.inf)
            <= TARGET_ALL_WINDOWS_P50_MS,
            "all_windows_rendered_p99_le_150_ms": last.get("p99", math.inf)
            <= TARGET_ALL_WINDOWS_P99_MS,
            "app_share_p50_le_10_ms": app.get("p50", math.inf) <= TARGET_APP_SHARE_P50_MS,
            "app_share_p99_le_40_ms": app.get("p99", math.inf) <= TARGET_APP_SHARE_P99_MS,
            "every_write_poked_once": v["pokes_at_bare_subscriber"]["poked_once"]
            == v["pokes_at_bare_subscriber"]["writes"],
            "every_write_rendered_in_every_window": p["missing"]["render"] == 0,
        }
    return {"fhir_read_floor_ms": floor, "variants": variants,
            "summary": {name: _summary(v) for name, v in variants.items()}}


def _minus(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round(a - b, 1)


def _summary(v: dict[str, Any]) -> dict[str, Any]:
    p = v["pooled"]

    def pick(span: str) -> list[float | None]:
        d = p.get(span, {})
        return [d.get("p50"), d.get("p95"), d.get("p99")]

    return {"commit_to_poke_bare_p50_p95_p99_ms": pick("write_to_poke_bare_subscriber_ms"),
            "commit_to_rendered_p50_p95_p99_ms": pick("write_to_render_ms"),
            "commit_to_all_windows_rendered_p50_p95_p99_ms":
                pick("write_to_all_windows_rendered_ms"),
            "app_share_poke_to_rendered_p50_p95_p99_ms": pick("poke_to_render_ms"),
            "commit_to_poke_bare_p50_ms_by_position_in_round":
                v["commit_to_poke_bare_p50_ms_by_position_in_round"],
            "relay_share_ms": v.get("relay_share_ms"),
            "ratios_to_baseline": v.get("ratios_to_baseline"),
            "pokes_at_bare_subscriber": v["pokes_at_bare_subscriber"]}


# ---------------------------------------------------------------------------- throughput
async def run_throughput(cfg: Config, scratch: Path) -> dict[str, Any]:
    rng = random.Random(cfg.seed + 1)
    steps: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        info = await stack.enter_async_context(running_sandbox(
            "--no-simulator", "--no-relay", "--patients", str(cfg.patients),
            "--seed", str(cfg.seed)))
        relay = await stack.enter_async_context(running_relay(info, scratch / "throughput"))
        writers = await stack.enter_async_context(WardWriters.connect(info))
        watcher = await stack.enter_async_context(PokeSubscriber(info))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))
        sampler = await stack.enter_async_context(ResourceSampler())
        sampler.watch("relay", relay["pid"])
        sampler.watch("sandbox", info["pid"])
        patients = ward_patients(cfg)
        warm = await write_each_patient(writers, patients, rng)  # wards known, as in a run
        await until_poked(warm, watcher, cfg.drain_timeout_s)
        for rate in cfg.throughput_rates:
            before = await scrape(http, relay["metrics_url"])
            t0 = time.monotonic()
            async with FsyncProbe(scratch) as fsync:
                written = await write_paced(writers, patients, rng, rate=rate,
                                            duration_s=cfg.throughput_step_s,
                                            in_flight=cfg.throughput_writers)
            t1 = time.monotonic()
            at_end = await scrape(http, relay["metrics_url"])
            sampler.sample()
            cpu = sampler.summary(t0, t1 + 0.01, ["relay", "sandbox"])
            cpu["fsync_ms"] = distribution(fsync.samples_ms)
            drained = await until_poked(written, watcher, cfg.drain_timeout_s)
            steps.append(throughput_step(rate, written, watcher, t1 - t0, before, at_end,
                                         cpu, drained, cfg))
    return {
        "what": "single Observation creates to a `wardsync --no-relay` sandbox with a "
                "`wardsync relay` process (topic Subscriptions, max_pokes_per_s as shipped); "
                "lag = commit -> poke at a bare subscriber",
        "bounded_if_lag_slope_at_most_s_per_s": cfg.bounded_slope,
        "steps": steps,
        **throughput_summary(steps),
    }


def throughput_summary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sustained: the highest write rate at which that step and every slower one kept the
    lag bounded (a noisy machine may let a faster step pass after a slower one failed: that
    one is reported apart, not counted)."""
    sustained = None
    for step in sorted(steps, key=lambda s: s["write_rate_per_s"] or 0.0):
        if not step["bounded"]:
            break
        sustained = step["write_rate_per_s"]
    unbounded = [s["write_rate_per_s"] for s in steps if not s["bounded"]]
    return {
        "sustained_notifications_per_s": sustained,
        "lowest_unbounded_write_rate_per_s": min(unbounded, default=None),
        "highest_bounded_write_rate_per_s": max(
            (s["write_rate_per_s"] for s in steps if s["bounded"]), default=None),
        "writer_max_rate_per_s": max((s["write_rate_per_s"] for s in steps), default=None),
        "relay_max_published_per_s": max(
            (s["relay_published_per_s_during_step"] for s in steps), default=None),
    }


def ward_patients(cfg: Config) -> list[str]:
    """The seeded ward's patients (`sandbox.ward.seed`: readable ids `pat-01`..., each with
    an in-progress stay on the ward)."""
    return [f"pat-{n:02d}" for n in range(1, cfg.patients + 1)]


def throughput_step(rate: float, written: list[Written], watcher: PokeSubscriber,
                    span_s: float, before: dict[str, float], at_end: dict[str, float],
                    cpu: dict[str, Any], drained: bool, cfg: Config) -> dict[str, Any]:
    lags = [(w.commit_wall, (watcher.received[(w.ref, w.version)] - w.commit_wall))
            for w in written if (w.ref, w.version) in watcher.received]
    t0 = written[0].commit_wall if written else 0.0
    fit = linear_fit([c - t0 for c, _ in lags], [lag for _, lag in lags])
    commit_span = (written[-1].commit_wall - t0) if len(written) > 1 else span_s
    slope = fit["slope"] if fit else None
    counts = poke_counts(written, watcher)
    quarter = max(1, len(lags) // 4)
    published_rate = (published(at_end) - published(before)) / span_s
    return {
        "target_rate_per_s": rate or "as fast as the writer can",
        "writes": len(written),
        "write_rate_per_s": round(len(written) / commit_span, 1) if commit_span > 0 else None,
        "relay_published_per_s_during_step": round(published_rate, 1),
        "relay_backlog_at_step_end": at_end.get("wardsync_relay_pokes_pending"),
        "commit_to_poke_ms": distribution(lag * 1000 for _, lag in lags),
        "lag_first_quarter_p50_ms": distribution(lag * 1000 for _, lag in lags[:quarter])
        .get("p50"),
        "lag_last_quarter_p50_ms": distribution(lag * 1000 for _, lag in lags[-quarter:])
        .get("p50"),
        "lag_growth_s_per_s": round(slope, 4) if slope is not None else None,
        "pokes": counts,
        "all_poked_after_step": drained,
        "cpu_percent_of_one_core": {name: (cpu.get(name) or {}).get("cpu_percent_of_one_core")
                                    for name in ("relay", "sandbox")},
        # The machine while the step ran: busy share of its cores, share of time some task
        # waited for a CPU (PSI), and how long an fsync of 4 KiB took in the relay's directory.
        "machine": {k: (cpu.get("machine") or {}).get(k) for k in (
            "cpu_busy_percent_of_all_cores", "some_task_waiting_for_cpu_percent")},
        "fsync_ms": cpu["fsync_ms"],
        # One ward's pokes go out one at a time (publisher.py): at a saturated step, the time
        # of one publish cycle (hub round trip + marking it published) is 1 / that rate.
        "publish_cycle_ms_if_saturated": round(1000 / published_rate, 1)
        if published_rate > 0 else None,
        "bounded": bool(drained and slope is not None and slope <= cfg.bounded_slope
                        and counts["more_than_once"] == 0),
    }


# ---------------------------------------------------------------------------- reconciliation
async def run_reconciliation(cfg: Config, scratch: Path) -> dict[str, Any]:
    rng = random.Random(cfg.seed + 2)
    async with contextlib.AsyncExitStack() as stack:
        info = await stack.enter_async_context(running_sandbox(
            "--no-simulator", "--no-relay", "--patients", str(cfg.patients),
            "--seed", str(cfg.seed)))
        writers = await stack.enter_async_context(WardWriters.connect(info))
        patients = ward_patients(cfg)
        poll_only = await poll_bound(cfg, info, writers, patients, rng, scratch)
        rounds = await round_cost(cfg, info, writers, patients, rng, scratch)
    worst_round_s = max((r["duration_ms"] for r in rounds["rounds"]), default=0.0) / 1000
    bound_s = cfg.poll_interval_s + worst_round_s
    latency = poll_only["commit_to_poke_ms"]
    poll_only["stated_bound_ms"] = round(bound_s * 1000, 1)
    poll_only["within_bound"] = bool(latency.get("n")) and latency["max"] <= bound_s * 1000
    return {"subscriptions_off": poll_only, "round_cost": rounds}


async def poll_bound(cfg: Config, info: dict[str, Any], writers: WardWriters,
                     patients: list[str], rng: random.Random, scratch: Path
                     ) -> dict[str, Any]:
    """Subscriptions off: the poll alone; writes at random moments, commit -> poke."""
    settings = {"SUBSCRIPTIONS_MODE": "none", "RECONCILE_INTERVAL_S": str(cfg.poll_interval_s)}
    async with running_relay(info, scratch / "poll-only", settings), \
            PokeSubscriber(info) as watcher:
        written: list[Written] = []
        for i in range(cfg.poll_writes):
            await asyncio.sleep(rng.uniform(*cfg.poll_spacing_s))
            written.append(await create_one(writers, patients[i % len(patients)], rng))
        await until_poked(written, watcher, cfg.poll_interval_s * 3 + 5)
    lat = [(watcher.received[(w.ref, w.version)] - w.commit_wall) * 1000 for w in written
           if (w.ref, w.version) in watcher.received]
    return {"what": "`wardsync relay` with subscriptions.mode = none; writes spaced "
                    f"{cfg.poll_spacing_s[0]}-{cfg.poll_spacing_s[1]} s at random",
            "reconcile_interval_s": cfg.poll_interval_s,
            "commit_to_poke_ms": distribution(lat),
            "pokes": poke_counts(written, watcher)}


def held_back_relay_config(info: dict[str, Any], data_dir: Path) -> RelayConfig:
    """The relay as `running_relay` runs it, in this process, its own poll held back."""
    data_dir.mkdir(parents=True, exist_ok=True)
    secret, key = data_dir / "client-secret", data_dir / "ably-key"
    secret.write_text(info["relay_client"]["client_secret"])
    key.write_text(info["ably_key"])
    for path in (secret, key):
        path.chmod(0o600)
    config = RelayConfig()
    config.relay.listen = "127.0.0.1:0"
    config.relay.data_dir = data_dir / "state"
    config.relay.default_ward = info["ward"]
    config.fhir.base = info["fhir_base"]
    config.fhir.client_id = info["relay_client"]["client_id"]
    config.fhir.client_secret_file = secret
    config.ably.endpoint = info["ably_endpoint"]
    config.ably.key_file = key
    config.ably.tls = False
    config.reconcile.interval_s = HELD_BACK_POLL_S
    config.reconcile.initial_lookback_s = 0.0
    config.reconcile.types = list(RECONCILE_TYPES)
    config.subscriptions.mode = "none"
    config.alerts.escalate = False
    return config


async def round_cost(cfg: Config, info: dict[str, Any], writers: WardWriters,
                     patients: list[str], rng: random.Random, scratch: Path) -> dict[str, Any]:
    """One reconciliation round by hand after K changes: duration, FHIR requests."""
    relay = Relay(held_back_relay_config(info, scratch / "round-cost"))
    await relay.start()
    try:
        assert relay.reconciler is not None
        reconciler = relay.reconciler
        await _until(lambda: reconciler.rounds >= 1, 30.0, "the relay's first round")
        rounds = []

        async def measured(label: str, k: int) -> None:
            await _write_count(writers, patients, rng, k, cfg.throughput_writers)
            requests = relay.fhir_requests_sent
            t = time.perf_counter()
            found = await reconciler.round()
            rounds.append({"case": label, "changed": k, "found": found,
                           "duration_ms": round((time.perf_counter() - t) * 1000, 1),
                           "fhir_requests": relay.fhir_requests_sent - requests})

        # Cold: one change per patient, each patient's ward looked up for the first time.
        await measured("cold: one change per patient, wards not yet known", len(patients))
        for k in cfg.reconcile_batches:
            await measured("warm" if k else "idle: nothing changed", k)
        assert relay.publisher is not None
        await relay.publisher.drain(cfg.drain_timeout_s)
    finally:
        await relay.stop(drain_s=2.0)
    return {"what": "wardsync.relay.Relay in the driver, subscriptions off, its poll held "
                    "back; one Reconciler.round() run after K Observations were written "
                    f"(types searched: {', '.join(RECONCILE_TYPES)}; page size 100)",
            "rounds": rounds}


async def _write_count(writers: WardWriters, patients: list[str], rng: random.Random,
                       k: int, in_flight: int) -> list[Written]:
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> Written:
        async with gate:
            return await create_one(writers, patients[i % len(patients)], rng)

    return list(await asyncio.gather(*(one(i) for i in range(k))))


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(WAIT_STEP_S)


# ---------------------------------------------------------------------------- driver
async def run(cfg: Config, keep_dir: Path | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"config": asdict(cfg), "variants_what": VARIANTS}
    timings: dict[str, float] = {}
    with work_directory(keep_dir) as wd, \
            tempfile.TemporaryDirectory(prefix="wardsync-relay-bench-") as tmp:
        scratch = Path(tmp)
        phases: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "latency": lambda: run_latency(cfg, wd, scratch),
            "throughput": lambda: run_throughput(cfg, scratch),
            "reconciliation": lambda: run_reconciliation(cfg, scratch),
        }
        for phase, body in phases.items():
            if phase in cfg.phases:
                t = time.monotonic()
                result[phase] = await body()
                timings[phase] = round(time.monotonic() - t, 1)
    result["phase_seconds"] = timings
    return result


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.relay_path",
                                description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--windows", type=int, default=d.windows)
    p.add_argument("--patients", type=int, default=d.patients)
    p.add_argument("--rounds", type=int, default=d.rounds,
                   help="latency blocks per variant (interleaved)")
    p.add_argument("--block-s", type=float, default=d.block_s)
    p.add_argument("--variants", nargs="+", default=list(d.variants), choices=list(VARIANTS))
    p.add_argument("--throughput-rates", type=float, nargs="+",
                   default=list(d.throughput_rates), help="writes/s per step; 0 = flat out")
    p.add_argument("--throughput-step-s", type=float, default=d.throughput_step_s)
    p.add_argument("--throughput-writers", type=int, default=d.throughput_writers)
    p.add_argument("--bounded-slope", type=float, default=d.bounded_slope)
    p.add_argument("--poll-interval-s", type=float, default=d.poll_interval_s)
    p.add_argument("--poll-writes", type=int, default=d.poll_writes)
    p.add_argument("--reconcile-batches", type=int, nargs="+",
                   default=list(d.reconcile_batches))
    p.add_argument("--phases", nargs="+", default=list(d.phases), choices=list(d.phases))
    p.add_argument("--out", type=Path, default=None, help="results directory")
    p.add_argument("--name", default="relay_path", help="result file name (no .json)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the app's metrics logs and reports in this directory")
    a = p.parse_args(argv)
    cfg = Config(windows=a.windows, patients=a.patients, rounds=a.rounds, block_s=a.block_s,
                 variants=tuple(a.variants), throughput_rates=tuple(a.throughput_rates),
                 throughput_step_s=a.throughput_step_s,
                 throughput_writers=a.throughput_writers, bounded_slope=a.bounded_slope,
                 poll_interval_s=a.poll_interval_s, poll_writes=a.poll_writes,
                 reconcile_batches=tuple(a.reconcile_batches), phases=tuple(a.phases))
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv) == ["--subscriber"]:
        asyncio.run(_serve_subscriber())
        return 0
    cfg, a = parse_args(argv)
    result = asyncio.run(run(cfg, a.keep))
    path = write_result(a.name, result, a.out)
    for name, s in (result.get("latency") or {}).get("summary", {}).items():
        print(f"{name}: commit->poke p50/p95/p99 {s['commit_to_poke_bare_p50_p95_p99_ms']} ms; "
              f"commit->all windows {s['commit_to_all_windows_rendered_p50_p95_p99_ms']} ms; "
              f"relay share {s['relay_share_ms']}")
    if "throughput" in result:
        t = result["throughput"]
        print(f"throughput: sustained {t['sustained_notifications_per_s']} /s; lowest "
              f"unbounded {t['lowest_unbounded_write_rate_per_s']} /s")
    if "reconciliation" in result:
        r = result["reconciliation"]
        print(f"reconciliation: subscriptions off {r['subscriptions_off']['commit_to_poke_ms']}"
              f"; rounds {r['round_cost']['rounds']}")
    print(f"wrote {path} in {result['phase_seconds']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
