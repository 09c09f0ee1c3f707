"""Benchmark 3: the poke/pull client against a client that polls every 5 s, in the same run.

Two headless workstations (`benchmarks.app_process --windows 0`, each its own process) follow
the same ward with the same keys (census, vitals and labs per patient) at the same time:

* `realtime`: the app's sync stack as shipped — pokes over the hub, pulls per invalidated key;
* `polling`: no realtime connection, so the workstation's watchdog pulls every open key every
  `--polling-interval-s` (5 s), which is what a client without pokes has to do.

This driver writes at a steady rate (a vital-signs round or a lab panel every 2 s, patients in
turn) with the sandbox's device and laboratory clients. Reported for each client: staleness,
the time from a write's commit (server `meta.lastUpdated`) to that version being in the
client's store (`pull_done`, wall clock); and FHIR requests per minute, idle and while
writing. The ratios polling / realtime are the point: both are measured in the same run on
the same machine, so machine speed mostly cancels out.

Run: `.venv/bin/python -m benchmarks.polling_baseline` (about 4 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    NORMAL_LYTES,
    AppProcess,
    WardWriters,
    Written,
    distribution,
    random_vitals,
    ratio,
    running_sandbox,
    work_directory,
    write_result,
)
from wardsync.core import codes

SETTLE_S = 1.5  # after the last write, beyond one polling interval

CLIENTS: dict[str, tuple[str, ...]] = {
    "realtime": ("--windows", "0", "--vitals", "--labs"),
    "polling": ("--windows", "0", "--vitals", "--labs", "--no-realtime"),
}


@dataclass(frozen=True)
class Config:
    patients: int = 24
    polling_interval_s: float = 5.0
    idle_s: float = 30.0
    duration_s: float = 60.0
    write_interval_s: float = 2.0
    runs: int = 2
    seed: int = 3
    settle_s: float = SETTLE_S


async def write_steady(writers: WardWriters, patients: list[str], cfg: Config,
                       rng: random.Random) -> list[Written]:
    """A vital-signs round or a lab panel every `write_interval_s`, alternating."""
    written: list[Written] = []
    n = max(1, int(cfg.duration_s / cfg.write_interval_s))
    start = time.monotonic()
    for i in range(n):
        delay = start + i * cfg.write_interval_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        patient = patients[i % len(patients)]
        if i % 2 == 0:
            stored = await writers.devices.post_vitals(patient, random_vitals(rng))
        else:
            report, obs = await writers.lab.post_panel(
                patient, codes.ELECTROLYTES_PANEL.code, NORMAL_LYTES)
            stored = [*obs, report]
        written += [Written.of(r, patient) for r in stored]
    return written


def per_minute(a: dict[str, Any], b: dict[str, Any], counter: str) -> float:
    minutes = (b["t_mono_ns"] - a["t_mono_ns"]) / 60e9
    return round((b[counter] - a[counter]) / minutes, 1) if minutes > 0 else float("nan")


def staleness_s(written: list[Written], events: list[dict[str, Any]]) -> tuple[list[float],
                                                                               int]:
    """Seconds from commit to the version in the client's store; and how many never came."""
    arrived: dict[tuple[str, str], float] = {}
    for e in events:
        if e.get("event") == "pull_done":
            arrived.setdefault((e["ref"], str(e["versionId"])), e["t_wall"])
    out, missing = [], 0
    for w in written:
        t = arrived.get((w.ref, w.version))
        if t is None:
            missing += 1
        else:
            out.append(t - w.commit_wall)
    return out, missing


async def one_run(info: dict[str, Any], writers: WardWriters, wd: Path, i: int, cfg: Config,
                  rng: random.Random) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        apps: dict[str, AppProcess] = {}
        for name, flags in CLIENTS.items():
            extra = (("--polling-interval-s", str(cfg.polling_interval_s))
                     if name == "polling" else ())
            apps[name] = await stack.enter_async_context(
                AppProcess.run(info, wd, f"baseline-{name}-r{i}", *flags, *extra))
        patients = apps["realtime"].ready["patients"]

        async def snap(label: str) -> dict[str, dict[str, Any]]:
            return {n: await a.snapshot(label) for n, a in apps.items()}

        idle_start = await snap("idle_start")
        await asyncio.sleep(cfg.idle_s)
        idle_end = await snap("idle_end")
        written = await write_steady(writers, patients, cfg, rng)
        writes_end = await snap("writes_end")
        await asyncio.sleep(cfg.polling_interval_s + cfg.settle_s)
        finished = {n: await a.stop() for n, a in apps.items()}

    out: dict[str, Any] = {"resources_written": len(written)}
    for name, (_report, events) in finished.items():
        stale, missing = staleness_s(written, events)
        out[name] = {
            "staleness_s": distribution(stale, 3),
            "never_arrived": missing,
            "fhir_requests_per_min_idle": per_minute(idle_start[name], idle_end[name],
                                                     "fhir_requests_sent"),
            "fhir_requests_per_min_writing": per_minute(idle_end[name], writes_end[name],
                                                        "fhir_requests_sent"),
            "polls": writes_end[name]["polls"] - idle_start[name]["polls"],
            "_stale": stale,
        }
    return out


def compare(realtime: dict[str, Any], polling: dict[str, Any]) -> dict[str, Any]:
    return {
        "mean_staleness_polling_over_realtime": ratio(polling["staleness_s"]["mean"],
                                                      realtime["staleness_s"]["mean"], 1),
        "p95_staleness_polling_over_realtime": ratio(polling["staleness_s"]["p95"],
                                                     realtime["staleness_s"]["p95"], 1),
        "requests_per_min_writing_polling_over_realtime": ratio(
            polling["fhir_requests_per_min_writing"], realtime["fhir_requests_per_min_writing"]),
        "requests_per_min_idle_polling_minus_realtime": round(
            polling["fhir_requests_per_min_idle"] - realtime["fhir_requests_per_min_idle"], 1),
    }


async def run(cfg: Config, keep_dir: Path | None = None) -> dict[str, Any]:
    rng = random.Random(cfg.seed)
    runs = []
    async with (running_sandbox("--no-simulator", "--patients", str(cfg.patients),
                                "--seed", str(cfg.seed)) as info,
                WardWriters.connect(info) as writers):
        with work_directory(keep_dir) as wd:
            for i in range(cfg.runs):
                runs.append(await one_run(info, writers, wd, i, cfg, rng))
    pooled: dict[str, Any] = {}
    for name in CLIENTS:
        body = [r[name] for r in runs]
        pooled[name] = {
            "staleness_s": distribution((s for b in body for s in b.pop("_stale")), 3),
            "never_arrived": sum(b["never_arrived"] for b in body),
            "fhir_requests_per_min_idle": distribution(
                (b["fhir_requests_per_min_idle"] for b in body), 1),
            "fhir_requests_per_min_writing": distribution(
                (b["fhir_requests_per_min_writing"] for b in body), 1),
        }
    flat = {n: {"staleness_s": pooled[n]["staleness_s"],
                "fhir_requests_per_min_idle": pooled[n]["fhir_requests_per_min_idle"]["mean"],
                "fhir_requests_per_min_writing":
                    pooled[n]["fhir_requests_per_min_writing"]["mean"]} for n in CLIENTS}
    for r in runs:
        r["ratios"] = compare(r["realtime"], r["polling"])
    return {
        "config": asdict(cfg),
        "pooled": pooled,
        "ratios": compare(flat["realtime"], flat["polling"]),
        "runs": runs,
    }


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.polling_baseline",
                                description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--patients", type=int, default=d.patients)
    p.add_argument("--polling-interval-s", type=float, default=d.polling_interval_s)
    p.add_argument("--idle-s", type=float, default=d.idle_s)
    p.add_argument("--duration-s", type=float, default=d.duration_s)
    p.add_argument("--write-interval-s", type=float, default=d.write_interval_s)
    p.add_argument("--runs", type=int, default=d.runs)
    p.add_argument("--out", type=Path, default=None, help="results directory")
    p.add_argument("--name", default="polling_baseline", help="result file name (no .json)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the app's metrics logs and reports in this directory")
    a = p.parse_args(argv)
    cfg = Config(patients=a.patients, polling_interval_s=a.polling_interval_s,
                 idle_s=a.idle_s, duration_s=a.duration_s,
                 write_interval_s=a.write_interval_s, runs=a.runs)
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    cfg, a = parse_args(argv)
    result = asyncio.run(run(cfg, a.keep))
    path = write_result(a.name, result, a.out)
    for name, body in result["pooled"].items():
        st = body["staleness_s"]
        print(f"{name}: staleness mean {st.get('mean')} s p95 {st.get('p95')} s "
              f"(n={st.get('n')}, never arrived {body['never_arrived']}); requests/min idle "
              f"{body['fhir_requests_per_min_idle'].get('mean')}, writing "
              f"{body['fhir_requests_per_min_writing'].get('mean')}")
    print(f"ratios: {result['ratios']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
