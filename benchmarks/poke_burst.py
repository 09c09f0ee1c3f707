"""Benchmark 2: HTTP requests per poke under a burst, and event-loop stalls meanwhile.

A ward of 40 patients; the app side (`benchmarks.app_process`, its own process) holds a
`PatientVitals` and a `PatientLabs` key per patient plus the census, either headless or as the
app with ward overview windows open. This driver then makes a burst and counts what the app
side sent to the FHIR server and how its event loop kept up. Two ways to make the burst:

* `pokes` (the target scenario): 1000 pokes over the 40 patients in 2 s. The sandbox's FHIR
  server takes about 150-200 writes/s on this 2-core machine, not the 500/s this needs, so the
  pokes are published straight to the hub's `ward:<id>` channel with the sandbox's root
  `ably_key` through `AblyRest`, exactly as the sandbox's relay does: well-formed
  pokes (docs/architecture.md §3.2) for resources that exist (written before the app started),
  numbered on from the relay's last `seq` so the app sees no gap or duplicate.
* `writes`: 1000 real FHIR writes (vital-sign rounds and lab panels) by the sandbox's device
  and laboratory clients, four at a time, as fast as the server takes them.

Measured per burst: pokes accepted, FHIR requests (`FhirClient.requests_sent`) and pulls per
key (`QueryState.pulls`) between two snapshots; from the app's request log, when each key's
pulls started, so that "at most one pull per invalidated key per debounce window" is checked
pull by pull; repaints per window; and the gaps of a 10 ms heartbeat on the app's event loop.

Run: `.venv/bin/python -m benchmarks.poke_burst` (about 5 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ably import AblyRest
from ably.types.message import Message

from benchmarks.common import (
    NORMAL_LYTES,
    NS_PER_MS,
    AppProcess,
    WardWriters,
    distribution,
    loop_stalls,
    random_vitals,
    ratio,
    running_sandbox,
    sandbox_stats,
    work_directory,
    write_result,
)
from wardsync.core import codes
from wardsync.core.pokes import LAB_RESULT_READY, RESOURCE_CHANGED, ROUTINE, Poke, poke_to_dict

SETTLE_S = 3.0  # after the burst: the last pulls finish
PUBLISH_TICK_S = 0.02  # pokes go out in a batch every 20 ms (100 REST publishes in 2 s)
WRITE_CONCURRENCY = 4
STALL_TARGET_MS = 100.0
DRAIN_TIMEOUT_S = 30.0

# client name -> app_process flags
CLIENTS: dict[str, tuple[str, ...]] = {
    "headless": ("--windows", "0", "--vitals", "--labs"),
    "app_4_windows": ("--windows", "4", "--labs"),
}


@dataclass(frozen=True)
class Config:
    patients: int = 40
    pokes: int = 1000
    burst_s: float = 2.0
    writes: int = 1000
    runs: int = 3
    scenarios: tuple[str, ...] = ("pokes", "writes")
    clients: tuple[str, ...] = tuple(CLIENTS)
    debounce_ms: int = 10  # the app's default (sync.pull_debounce_ms)
    seed: int = 5
    settle_s: float = SETTLE_S


@dataclass(frozen=True)
class Target:
    """An existing resource a synthetic poke may name."""

    resource_type: str
    id: str
    version: str
    patient: str
    poke_type: str


# ---------------------------------------------------------------------------- bursts
async def existing_resources(writers: WardWriters, patients: list[str],
                             rng: random.Random) -> dict[str, list[Target]]:
    """One vital-signs round and one lab panel per patient; pokes will name these."""
    out: dict[str, list[Target]] = {}
    sem = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def one(patient: str) -> None:
        async with sem:
            vitals = await writers.devices.post_vitals(patient, random_vitals(rng))
            report, _ = await writers.lab.post_panel(patient, codes.ELECTROLYTES_PANEL.code,
                                                     NORMAL_LYTES)
        out[patient] = [
            *(Target("Observation", o["id"], o["meta"]["versionId"], patient,
                     RESOURCE_CHANGED) for o in vitals),
            Target("DiagnosticReport", report["id"], report["meta"]["versionId"], patient,
                   LAB_RESULT_READY),
        ]

    await asyncio.gather(*(one(p) for p in patients))
    return out


def hub_client(info: dict[str, Any]) -> AblyRest:
    """A REST client of the sandbox hub with its root key, as the relay makes it."""
    host, port = info["ably_endpoint"].rsplit(":", 1)
    return AblyRest(key=info["ably_key"], use_token_auth=True, endpoint=host, port=int(port),
                    tls=False, use_binary_protocol=True)


async def publish_burst(rest: AblyRest, channel: str, plan: list[Target], first_seq: int,
                        burst_s: float) -> dict[str, Any]:
    """Publish one poke per `plan` item, evenly over `burst_s`, numbered from `first_seq`."""
    ch = rest.channels.get(channel)
    ticks = max(1, round(burst_s / PUBLISH_TICK_S))
    per_tick = math.ceil(len(plan) / ticks)
    start = time.monotonic()
    publishes = 0
    for t in range(ticks):
        batch = plan[t * per_tick:(t + 1) * per_tick]
        if not batch:
            break
        delay = start + t * PUBLISH_TICK_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        seq0 = first_seq + t * per_tick
        await ch.publish([
            Message(name="poke", data=poke_to_dict(Poke(
                type=x.poke_type, resource_type=x.resource_type, id=x.id,
                version_id=x.version, patient_id=x.patient, seq=seq0 + i, priority=ROUTINE)))
            for i, x in enumerate(batch)
        ])
        publishes += 1
    return {"pokes": len(plan), "rest_publishes": publishes,
            "duration_s": round(time.monotonic() - start, 3)}


async def write_burst(writers: WardWriters, patients: list[str], n: int,
                      rng: random.Random) -> dict[str, Any]:
    """About `n` real writes: vital-sign rounds (7) and lab panels (6), four at a time."""
    jobs: list[tuple[str, str]] = []
    total = 0
    while total < n:
        kind = "vitals" if len(jobs) % 2 == 0 else "labs"
        jobs.append((kind, rng.choice(patients)))
        total += 7 if kind == "vitals" else len(NORMAL_LYTES) + 1
    queue = list(reversed(jobs))
    written = 0

    async def worker() -> None:
        nonlocal written
        while queue:
            kind, patient = queue.pop()
            # Count after the await: `written += len(await ...)` would read `written`
            # before the await and lose the other workers' counts.
            if kind == "vitals":
                done = len(await writers.devices.post_vitals(patient, random_vitals(rng)))
            else:
                _, obs = await writers.lab.post_panel(patient, codes.ELECTROLYTES_PANEL.code,
                                                      NORMAL_LYTES)
                done = len(obs) + 1
            written += done

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(WRITE_CONCURRENCY)))
    duration = time.monotonic() - start
    return {"writes": written, "duration_s": round(duration, 3),
            "writes_per_s": round(written / duration, 1)}


async def drained(http: Any, info: dict[str, Any]) -> int:
    """Wait until the sandbox published every poke; returns its last seq."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        stats = await sandbox_stats(http, info)
        if stats["pokes"]["pending"] == 0 or time.monotonic() > deadline:
            return int(stats["pokes"]["last_seq"])
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------- analysis
def key_of_request(path: str, query: str) -> tuple[str, bool] | None:
    """(key label, is the first search of that key's pull) for a FHIR search request."""
    q = parse_qs(query)
    patient = (q.get("patient") or [""])[0]
    rtype = path.rstrip("/").rsplit("/", 1)[-1]
    category = (q.get("category") or [""])[0]
    if rtype == "Observation" and codes.CATEGORY_VITAL_SIGNS in category:
        return f"vitals {patient}", True
    if rtype == "DiagnosticReport" and patient:
        return f"labs {patient}", True
    if rtype == "Observation" and codes.CATEGORY_LABORATORY in category:
        return f"labs {patient}", False
    if rtype == "Location":
        return "census", True
    if rtype == "Encounter":
        return "census", False
    return None


def pull_starts(requests: list[list[Any]], start_ns: int, end_ns: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for t, method, path, query in requests:
        if start_ns <= t <= end_ns and method == "GET" and "/fhir/" in path:
            key = key_of_request(path, query)
            if key is not None and key[1]:
                out[key[0]].append(t)
    return out


def max_in_window(times: list[int], window_ns: int) -> int:
    """The most pull starts of one key within any `window_ns` (sliding)."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect.bisect_left(times, t + window_ns) - i)
    return best


def touched_keys(plan: list[Target]) -> Counter[str]:
    """Pokes per key label, by the app's rules (core.queries touched_by)."""
    out: Counter[str] = Counter()
    for x in plan:
        if x.resource_type == "Observation":
            out[f"vitals Patient/{x.patient}"] += 1
        out[f"labs Patient/{x.patient}"] += 1  # Observation and DiagnosticReport both
    return out


def analyse(before: dict[str, Any], after: dict[str, Any], report: dict[str, Any],
            events: list[dict[str, Any]], burst: dict[str, Any], debounce_ms: int,
            burst_end_ns: int) -> dict[str, Any]:
    start_ns, end_ns = before["t_mono_ns"], after["t_mono_ns"]
    pokes = after["pokes_accepted"] - before["pokes_accepted"]
    fhir = after["fhir_requests_sent"] - before["fhir_requests_sent"]
    http = after["http_requests"] - before["http_requests"]
    pulls = {k: after["pulls"].get(k, 0) - before["pulls"].get(k, 0) for k in after["pulls"]}
    pulled = {k: n for k, n in pulls.items() if n > 0}
    starts = pull_starts(report["requests"], start_ns, end_ns)
    window_ns = debounce_ms * NS_PER_MS
    gaps_ms = [(b - a) / NS_PER_MS for ts in starts.values() for a, b in itertools.pairwise(ts)]
    per_window = {k: max_in_window(ts, window_ns) for k, ts in starts.items()}
    renders = Counter(e["window"] for e in events
                      if e.get("event") == "rendered" and start_ns <= e["t_mono_ns"] <= end_ns)
    last_request = max((t for ts in starts.values() for t in ts), default=None)
    return {
        "burst": burst,
        "pokes_accepted": pokes,
        "pokes_duplicate": after["pokes_duplicate"] - before["pokes_duplicate"],
        "pokes_rejected": after["pokes_rejected"] - before["pokes_rejected"],
        "seq_gaps": after["seq_gaps"] - before["seq_gaps"],
        "catch_ups": after["catch_ups"] - before["catch_ups"],
        "fhir_requests": fhir,
        "http_requests": http,
        "fhir_requests_per_poke": ratio(fhir, pokes, 3),
        "keys_open": len(after["pulls"]),
        "keys_pulled": len(pulled),
        "pulls_total": sum(pulled.values()),
        "pulls_per_pulled_key": distribution(pulled.values(), 2),
        "max_pull_starts_of_one_key_in_one_debounce_window": max(per_window.values(),
                                                                  default=0),
        "keys_with_two_pulls_in_one_debounce_window": sum(1 for n in per_window.values()
                                                          if n > 1),
        "interval_between_pulls_of_a_key_ms": distribution(gaps_ms),
        "last_pull_request_after_burst_end_ms": (
            round((last_request - burst_end_ns) / NS_PER_MS, 1) if last_request else None),
        "repaints_per_window": dict(sorted(renders.items())),
        "event_loop": loop_stalls(report["ticks"], start_ns, end_ns,
                                  stall_over_ms=STALL_TARGET_MS, cpu=report.get("tick_cpu"),
                                  gc_pauses=report.get("gc_pauses")),
    }


# ---------------------------------------------------------------------------- runs
async def run_scenario(scenario: str, cfg: Config, wd: Path,
                       rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in cfg.clients}
    async with (running_sandbox("--no-simulator", "--patients", str(cfg.patients),
                                "--seed", str(cfg.seed)) as info,
                WardWriters.connect(info) as writers):
        patients = [f"pat-{i:02d}" for i in range(1, cfg.patients + 1)]  # seed.py ids
        targets = await existing_resources(writers, patients, rng) if scenario == "pokes" else {}
        next_seq = await drained(writers.http, info) + 1
        rest = hub_client(info)
        try:
            for i in range(cfg.runs):
                for client in cfg.clients:
                    flags = (*CLIENTS[client], "--debounce-ms", str(cfg.debounce_ms))
                    async with AppProcess.run(info, wd, f"burst-{scenario}-{client}-r{i}",
                                              *flags) as app:
                        on_ward = [p for p in app.ready["patients"] if p in patients]
                        before = await app.snapshot("before")
                        if scenario == "pokes":
                            plan = [rng.choice(targets[rng.choice(on_ward)])
                                    for _ in range(cfg.pokes)]
                            burst = await publish_burst(rest, f"ward:{info['ward']}", plan,
                                                        next_seq, cfg.burst_s)
                            next_seq += len(plan)
                            burst["pokes_per_key"] = distribution(
                                touched_keys(plan).values(), 1)
                        else:
                            burst = await write_burst(writers, on_ward, cfg.writes, rng)
                            next_seq = await drained(writers.http, info) + 1
                        burst_end = await app.snapshot("burst_end")
                        await asyncio.sleep(cfg.settle_s)
                        after = await app.snapshot("after")
                        report, events = await app.stop()
                    results[client].append(analyse(before, after, report, events, burst,
                                                   cfg.debounce_ms, burst_end["t_mono_ns"]))
        finally:
            await rest.close()
    return results


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Across repeated runs: the worst case for the targets, the spread for the rest."""
    def values(name: str) -> list[float]:
        return [r[name] for r in runs if r.get(name) is not None]

    max_gaps = [r["event_loop"]["max_gap_ms"] for r in runs
                if r["event_loop"]["max_gap_ms"] is not None]
    return {
        "runs": len(runs),
        "fhir_requests_per_poke": distribution(values("fhir_requests_per_poke"), 3),
        "pulls_total": distribution(values("pulls_total"), 1),
        "max_pull_starts_of_one_key_in_one_debounce_window":
            max(values("max_pull_starts_of_one_key_in_one_debounce_window"), default=None),
        "event_loop_max_gap_ms": distribution(max_gaps, 1),
        "targets_met": {
            "at_most_one_pull_per_key_per_debounce_window": all(
                r["max_pull_starts_of_one_key_in_one_debounce_window"] <= 1 for r in runs),
            "no_event_loop_stall_over_100_ms": all(g <= STALL_TARGET_MS for g in max_gaps),
        },
    }


async def run(cfg: Config, keep_dir: Path | None = None) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    scenarios = {}
    with work_directory(keep_dir) as wd:
        for scenario in cfg.scenarios:
            per_client = await run_scenario(scenario, cfg, wd, rng)
            scenarios[scenario] = {c: {"summary": summary(r), "runs": r}
                                   for c, r in per_client.items()}
    return {
        "config": asdict(cfg),
        "targets": {"pulls_per_invalidated_key_per_debounce_window": 1,
                    "event_loop_max_gap_ms": STALL_TARGET_MS},
        "how_the_burst_is_made": {
            "pokes": "well-formed pokes for existing resources published straight to the hub "
                     "(root ably_key, AblyRest) in batches every 20 ms: the sandbox FHIR server "
                     "takes ~150-200 writes/s here, not 500/s",
            "writes": "real FHIR creates by the sandbox's device and lab clients, 4 at a time",
        },
        "scenarios": scenarios,
    }


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.poke_burst",
                                description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--patients", type=int, default=d.patients)
    p.add_argument("--pokes", type=int, default=d.pokes)
    p.add_argument("--burst-s", type=float, default=d.burst_s)
    p.add_argument("--writes", type=int, default=d.writes)
    p.add_argument("--runs", type=int, default=d.runs)
    p.add_argument("--scenarios", nargs="+", default=list(d.scenarios),
                   choices=["pokes", "writes"])
    p.add_argument("--clients", nargs="+", default=list(d.clients), choices=list(CLIENTS))
    p.add_argument("--debounce-ms", type=int, default=d.debounce_ms)
    p.add_argument("--out", type=Path, default=None, help="results directory")
    p.add_argument("--name", default="poke_burst", help="result file name (no .json)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the app's metrics logs and reports in this directory")
    a = p.parse_args(argv)
    cfg = Config(patients=a.patients, pokes=a.pokes, burst_s=a.burst_s, writes=a.writes,
                 runs=a.runs, scenarios=tuple(a.scenarios), clients=tuple(a.clients),
                 debounce_ms=a.debounce_ms)
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    cfg, a = parse_args(argv)
    result = asyncio.run(run(cfg, a.keep))
    path = write_result(a.name, result, a.out)
    for scenario, clients in result["scenarios"].items():
        for client, body in clients.items():
            s = body["summary"]
            print(f"{scenario}/{client}: requests/poke {s['fhir_requests_per_poke']}, "
                  f"max pulls of a key per debounce window "
                  f"{s['max_pull_starts_of_one_key_in_one_debounce_window']}, "
                  f"loop max gap {s['event_loop_max_gap_ms']}, targets {s['targets_met']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
