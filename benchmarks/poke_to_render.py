"""Benchmark 1: poke-to-render latency with several windows open, on loopback.

The sandbox runs as its own process (`wardsync sandbox --no-simulator`); the app side runs as
another (`benchmarks.app_process --windows N`: the real sync stack on the qasync loop with N
ward overview windows, offscreen Qt); this driver writes rounds of vital signs with the
sandbox's bedside-device client at a steady rate, as a monitor would. For every Observation
written it joins, by reference and version:

  commit (server meta.lastUpdated) -> poke_received -> pull_done -> rendered (each window)
                                                                   -> first paint after it

and, from a bare realtime subscriber in this process (`PokeWatcher`), when the same poke
reached a client that does nothing else: that splits write -> poke into the backend's share
and the app's. Cross-process spans use the wall clock (same host clock); spans inside the
app use its monotonic clock. Each variant runs `--runs` times, each run with a fresh app
process, runs of different variants interleaved; an authenticated FHIR read round trip
measured by this driver in the same runs is the machine's floor (ratios to it compare across
machines better than milliseconds). The app's windows are sized to show every row, so each
change is really painted.

Run: `.venv/bin/python -m benchmarks.poke_to_render` (about 9 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    NS_PER_MS,
    AppProcess,
    PokeWatcher,
    WardWriters,
    Written,
    distribution,
    loop_stalls,
    random_vitals,
    ratio,
    running_sandbox,
    work_directory,
    write_result,
)

# name -> (what it is, app_process flags). The first is the app as shipped (its built-in
# settings); the second is the earlier 50 ms pull debounce, as a baseline in the same run.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "app_defaults": ("the app as shipped (built-in settings: pull debounce 10 ms)", ()),
    "debounce_50ms": ("baseline: sync.pull_debounce_ms = 50", ("--debounce-ms", "50")),
}
TARGET_P50_MS = 50.0
TARGET_P99_MS = 200.0
FLOOR_SAMPLES = 60
SETTLE_S = 2.0  # after the last write, time for the last pulls and repaints
WARMUP_ROUNDS = 3  # unmeasured rounds once the app is up: first-call costs are not latency


@dataclass(frozen=True)
class Config:
    windows: int = 4
    runs: int = 3
    duration_s: float = 30.0
    round_interval_s: float = 1.0  # one round of 7 vital signs per interval
    patients: int = 24
    variants: tuple[str, ...] = tuple(VARIANTS)
    seed: int = 11
    floor_samples: int = FLOOR_SAMPLES
    warmup_rounds: int = WARMUP_ROUNDS
    settle_s: float = SETTLE_S


async def write_rounds(writers: WardWriters, patients: list[str], cfg: Config,
                       rng: random.Random, rounds: int | None = None) -> list[Written]:
    """One vital-signs round per interval, patients in turn, on a fixed schedule."""
    written: list[Written] = []
    if rounds is None:
        rounds = max(1, int(cfg.duration_s / cfg.round_interval_s))
    start = time.monotonic()
    for i in range(rounds):
        delay = start + i * cfg.round_interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        patient = patients[i % len(patients)]
        stored = await writers.devices.post_vitals(patient, random_vitals(rng),
                                                   effective=datetime.now(UTC))
        written += [Written.of(obs, patient) for obs in stored]
    return written


async def fhir_read_floor(writers: WardWriters, ref: str, samples: int) -> list[float]:
    """Authenticated FHIR reads from this process: the loopback round trip of one request."""
    rtype, rid = ref.split("/", 1)
    await writers.reader.read(rtype, rid)  # token fetched outside the timing
    out = []
    for _ in range(samples):
        t = time.perf_counter_ns()
        await writers.reader.read(rtype, rid)
        out.append((time.perf_counter_ns() - t) / NS_PER_MS)
    return out


def analyse_run(written: list[Written], events: list[dict[str, Any]], report: dict[str, Any],
                windows: list[str], start_ns: int, end_ns: int,
                bare_pokes: dict[tuple[str, str], float]) -> dict[str, Any]:
    """Join writes with the app's metrics; every span in milliseconds."""
    pokes: dict[tuple[str, str], dict] = {}
    pulls: dict[tuple[str, str], dict] = {}
    renders: dict[tuple[str, str, str], dict] = {}  # (window, ref, version) -> first render
    rendered_events: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        kind = e.get("event")
        if kind == "poke_received":
            pokes.setdefault((e["ref"], str(e["versionId"])), e)
        elif kind == "pull_done":
            pulls.setdefault((e["ref"], str(e["versionId"])), e)
        elif kind == "rendered":
            rendered_events[e["window"]].append(e)
            for ref in e["refs"]:
                renders.setdefault((e["window"], ref, str(e["versions"][ref])), e)

    spans: dict[str, list[float]] = defaultdict(list)
    missing = {"poke": 0, "pull": 0, "render": 0}
    ahead_of_own_poke = 0
    for w in written:
        key = (w.ref, w.version)
        poke, pull = pokes.get(key), pulls.get(key)
        bare = bare_pokes.get(key)
        if bare is not None:
            spans["write_to_poke_bare_subscriber_ms"].append((bare - w.commit_wall) * 1000)
        if poke is None:
            missing["poke"] += 1
        else:
            spans["write_to_poke_ms"].append((poke["t_wall"] - w.commit_wall) * 1000)
            if bare is not None:
                spans["bare_subscriber_to_app_poke_ms"].append((poke["t_wall"] - bare) * 1000)
        if pull is None:
            missing["pull"] += 1
        else:
            spans["write_to_pull_ms"].append((pull["t_wall"] - w.commit_wall) * 1000)
            if poke is not None:
                spans["poke_to_pull_ms"].append(
                    (pull["t_mono_ns"] - poke["t_mono_ns"]) / NS_PER_MS)
        last_window = None
        for window in windows:
            r = renders.get((window, w.ref, w.version))
            if r is None:
                missing["render"] += 1
                continue
            spans["write_to_render_ms"].append((r["t_wall"] - w.commit_wall) * 1000)
            if poke is not None and r["t_mono_ns"] < poke["t_mono_ns"]:
                # Shown before its own poke arrived: the pull for an earlier poke on the same
                # key (a vital written a moment before) already brought it. Common when pokes
                # come through the relay, one per version; it is no span of the app's.
                ahead_of_own_poke += 1
            elif poke is not None:
                spans["poke_to_render_ms"].append(
                    (r["t_mono_ns"] - poke["t_mono_ns"]) / NS_PER_MS)
            if pull is not None:
                spans["pull_to_render_ms"].append(
                    (r["t_mono_ns"] - pull["t_mono_ns"]) / NS_PER_MS)
            last_window = max(last_window or 0.0, r["t_wall"])
        if last_window is not None:
            spans["write_to_all_windows_rendered_ms"].append(
                (last_window - w.commit_wall) * 1000)

    # Repaint on screen: the first Paint event of the window's table after each `rendered`.
    for window, evs in rendered_events.items():
        paints = report["paints"].get(window, [])
        for e in evs:
            after = next((p for p in paints if p >= e["t_mono_ns"]), None)
            if after is not None:
                spans["rendered_to_paint_ms"].append((after - e["t_mono_ns"]) / NS_PER_MS)

    return {
        "resources_written": len(written),
        "render_samples": len(spans["write_to_render_ms"]),
        "missing": missing,
        "rendered_before_own_poke": ahead_of_own_poke,
        **{name: distribution(values) for name, values in sorted(spans.items())},
        "event_loop": loop_stalls(report["ticks"], start_ns, end_ns,
                                  cpu=report.get("tick_cpu"),
                                  gc_pauses=report.get("gc_pauses")),
        "_raw": spans,
    }


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({k for r in runs for k in r["_raw"]})
    out: dict[str, Any] = {n: distribution(v for r in runs for v in r["_raw"][n]) for n in names}
    out["missing"] = {k: sum(r["missing"][k] for r in runs) for k in ("poke", "pull", "render")}
    out["rendered_before_own_poke"] = sum(r["rendered_before_own_poke"] for r in runs)
    return out


async def one_run(info: dict[str, Any], writers: WardWriters, wd: Path, variant: str, i: int,
                  cfg: Config, rng: random.Random) -> dict[str, Any]:
    """A fresh app process for `variant`, the steady writes, the joined timings."""
    flags = VARIANTS[variant][1]
    async with AppProcess.run(info, wd, f"render-{variant}-r{i}", "--windows",
                              str(cfg.windows), *flags) as app:
        await write_rounds(writers, app.ready["patients"][::-1], cfg, rng, cfg.warmup_rounds)
        await asyncio.sleep(cfg.settle_s)
        async with PokeWatcher(info) as watcher:
            start = await app.snapshot("start")
            written = await write_rounds(writers, app.ready["patients"], cfg, rng)
            await asyncio.sleep(cfg.settle_s)
            end = await app.snapshot("end")
        floor = await fhir_read_floor(writers, written[0].ref, cfg.floor_samples)
        report, events = await app.stop()
    result = analyse_run(written, events, report, app.ready["windows"],
                         start["t_mono_ns"], end["t_mono_ns"], watcher.received)
    result["fhir_read_floor_ms"] = distribution(floor)
    result["_floor"] = floor
    return result


async def run(cfg: Config, keep_dir: Path | None = None) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    floor_all: list[float] = []
    async with (running_sandbox("--no-simulator", "--patients", str(cfg.patients),
                                "--seed", str(cfg.seed)) as info,
                WardWriters.connect(info) as writers):
        with work_directory(keep_dir) as wd:
            # Runs interleave the variants, so a slow spell of this shared machine hits
            # all of them rather than one.
            by_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in cfg.variants}
            for i in range(cfg.runs):
                for variant in cfg.variants:
                    by_variant[variant].append(
                        await one_run(info, writers, wd, variant, i, cfg, rng))
                    floor_all += by_variant[variant][-1].pop("_floor")
    configs = [{"variant": v, "what": VARIANTS[v][0], "pooled": pooled(runs),
                "runs": [{k: x for k, x in r.items() if k != "_raw"} for r in runs]}
               for v, runs in by_variant.items()]
    floor_dist = distribution(floor_all)
    for c in configs:
        w2r = c["pooled"].get("write_to_render_ms", {"n": 0})
        c["targets_met"] = {
            "p50_le_50_ms": w2r.get("p50", float("inf")) <= TARGET_P50_MS,
            "p99_le_200_ms": w2r.get("p99", float("inf")) <= TARGET_P99_MS,
            "every_write_rendered_in_every_window": c["pooled"]["missing"]["render"] == 0,
        }
        c["ratios_to_fhir_read_floor"] = {
            "write_to_render_p50": ratio(w2r.get("p50", float("nan")), floor_dist["p50"]),
            "write_to_render_p99": ratio(w2r.get("p99", float("nan")), floor_dist["p50"]),
        }
    return {
        "config": asdict(cfg),
        "targets": {"write_to_render_p50_ms": TARGET_P50_MS,
                    "write_to_render_p99_ms": TARGET_P99_MS},
        "fhir_read_floor_ms": floor_dist,
        "configs": configs,
    }


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.poke_to_render",
                                description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--windows", type=int, default=d.windows)
    p.add_argument("--runs", type=int, default=d.runs)
    p.add_argument("--duration-s", type=float, default=d.duration_s)
    p.add_argument("--round-interval-s", type=float, default=d.round_interval_s)
    p.add_argument("--patients", type=int, default=d.patients)
    p.add_argument("--variants", nargs="+", default=list(d.variants), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=None, help="results directory")
    p.add_argument("--name", default="poke_to_render", help="result file name (no .json)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the app's metrics logs and reports in this directory")
    a = p.parse_args(argv)
    cfg = Config(windows=a.windows, runs=a.runs, duration_s=a.duration_s,
                 round_interval_s=a.round_interval_s, patients=a.patients,
                 variants=tuple(a.variants))
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    cfg, a = parse_args(argv)
    result = asyncio.run(run(cfg, a.keep))
    path = write_result(a.name, result, a.out)
    for c in result["configs"]:
        p = c["pooled"]
        w2r, p2r = p.get("write_to_render_ms", {}), p.get("poke_to_render_ms", {})
        print(f"{c['variant']}: write->render p50 {w2r.get('p50')} "
              f"p95 {w2r.get('p95')} p99 {w2r.get('p99')} ms (n={w2r.get('n')}); "
              f"poke->render p50 {p2r.get('p50')} p99 {p2r.get('p99')} ms; "
              f"targets {c['targets_met']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
