"""Soak: one app with 8 windows under ward simulator traffic for 30 minutes.

Three processes, as on a ward:

* the **sandbox** (`wardsync sandbox --no-simulator`): FHIR server, hub, poke relay;
* the **app** (this module's `app` side, its own process): the real `ui.app.AppController`
  on the qasync loop, offscreen Qt, with the garbage collection the shipped app uses
  (`ui.gc_guard.MainThreadGarbageCollector`, start-up objects frozen after
  `FREEZE_AFTER_START_S`), signed in as the demo clinician through SMART. It opens 8 windows:
  2 ward overviews, 3 patient charts, a lab report, Alerts and Diagnostics. Only the backend
  differs from `wardsync --demo`: the app is pointed at the sandbox the driver started
  (`AppServices.start_backend` is replaced by one that uses it), so the driver can stop the
  traffic and read the server. A clinician is at the workstation: once a minute she
  acknowledges the open critical-result alerts (read-back of the bed) and counts as input
  for the idle lock;
* the **driver** (this module): runs the sandbox's own `WardSimulator` against it at a brisk
  rate (`--results-per-min`, `--vitals-per-min`: about 4.5 times the simulator's default,
  roughly 9 FHIR writes a second), samples CPU and memory of both processes from /proc.

Reported: the app's RSS over time and its growth per hour (least-squares line after a
warm-up), beside the growth of what it legitimately holds (resources in its store, which
grows with the ward's data); event-loop stalls (a 10 ms heartbeat on the GUI thread's loop:
max gap, gaps over 100 ms, garbage collections timed inside them); and at the end, after the
simulator stopped, whether every window is fresh: the store holds exactly the server's
versions for every query the window (or, for Alerts, the alert center) has open, every
resource a window has shown is shown at the server's version (its last `rendered` event),
and its status bar says Live.

Run: `.venv/bin/python -m benchmarks.soak` (about 32 minutes). `--help` lists the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.app_process import Recorder, serve_protocol
from benchmarks.common import (
    AppProcess,
    ResourceSampler,
    WardWriters,
    app_settings,
    clinician_session,
    linear_fit,
    loop_stalls,
    process_cpu_rss,
    running_sandbox,
    sandbox_stats,
    search_spec,
    server_truth,
    unwindowed,
    work_directory,
    write_result,
)
from wardsync.core.queries import WardCensus
from wardsync.fhir.client import FhirClient
from wardsync.sandbox.ward.simulator import SimulatorConfig, WardSimulator

log = logging.getLogger("benchmarks.soak")

WINDOW_COUNT = 8
READY_TIMEOUT_S = 120.0
READY_POLL_S = 0.1
CHECK_TIMEOUT_S = 60.0
CONVERGE_TIMEOUT_S = 30.0
CONVERGE_POLL_S = 1.0
PUBLISHER_DRAIN_TIMEOUT_S = 60.0
SECONDS_PER_HOUR = 3600.0
MIB = 2**20


# ============================================================================ the app side
class SoakApp:
    """The app under test: an AppController with its 8 windows, sampled from inside."""

    def __init__(self, args: argparse.Namespace, recorder: Recorder) -> None:
        self.args = args
        self.rec = recorder
        self.controller: Any = None
        self.collector: Any = None
        self.samples: list[dict[str, Any]] = []
        self.acknowledged = 0
        self.ack_failures: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        from PySide6.QtWidgets import QApplication

        from wardsync.infra.metrics import metrics_from_env
        from wardsync.ui.app import FREEZE_AFTER_START_S, AppController
        from wardsync.ui.gc_guard import MainThreadGarbageCollector

        loop = asyncio.get_running_loop()
        # As run_app: collections on the GUI thread, start-up objects frozen once loaded.
        self.collector = MainThreadGarbageCollector(QApplication.instance())
        self.collector.start()
        settings = app_settings({"ui.vitals_window_h": str(self.args.vitals_window_h)})
        self.controller = AppController(settings, metrics_from_env(), demo=True)
        self.controller.services.start_backend = self._external_backend
        await self.controller.start()
        loop.call_later(FREEZE_AFTER_START_S, self.collector.freeze_startup_objects)
        await self._open_windows()
        self._tasks = [loop.create_task(self._sample_memory(), name="soak memory samples"),
                       loop.create_task(self._clinician(), name="soak clinician")]

    async def _external_backend(self, progress: Any = None) -> None:
        """`AppServices.start_backend` in demo mode, with the driver's sandbox."""
        from wardsync.station.services import Backend

        a = self.args
        self.controller.services.use_backend(
            Backend(a.fhir_base, a.ward, a.realtime_endpoint, a.realtime_token_url, demo=True))

    async def _open_windows(self) -> None:
        c = self.controller
        ward = c.open_ward_overview()
        await self._until(lambda: len(ward.model.rows) > 0, "the ward overview's rows")
        c.open_ward_overview()
        patients = [row.patient_id for row in ward.model.rows][:3]
        charts = [c.open_patient_chart(p) for p in patients]
        await self._until(lambda: all(self._loaded(w) for w in charts), "the charts")
        report = self._a_report(patients)
        if report is None:
            raise RuntimeError("no lab report on the ward to open")
        c.open_lab_report(*report)
        c.open_alerts_window()
        c.open_diagnostics()
        assert len(c.windows) == WINDOW_COUNT, [w.window_id for w in c.windows]
        await self._until(lambda: all(self._loaded(w) for w in c.windows), "every window")

    def _a_report(self, patients: list[str]) -> tuple[str, str] | None:
        store = self.controller.workspace.store
        for patient in patients:
            ref = f"Patient/{patient}"
            reports = store.select("DiagnosticReport",
                                   lambda r, ref=ref: (r.get("subject") or {})
                                   .get("reference") == ref)
            if reports:
                return reports[-1]["id"], patient
        return None

    def _loaded(self, window: Any) -> bool:
        queries = self.controller.workspace.queries
        return all(queries.state(k).status == "ok" for k in window.open_keys)

    async def _until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"soak app: timed out waiting for {what}")
            await asyncio.sleep(READY_POLL_S)

    # ------------------------------------------------------------------ during the soak
    def sample(self) -> dict[str, Any]:
        """One memory sample: RSS and what the app holds (cheap to take: no heap walk)."""
        from PySide6.QtWidgets import QApplication

        ws = self.controller.workspace.workstation
        alerts = self.controller.services.alerts
        got = process_cpu_rss(os.getpid())
        return {
            "t_mono_ns": time.monotonic_ns(), "t_wall": time.time(),
            "rss_bytes": got[1] if got else None,
            "store_resources": len(ws.store),
            "allocated_blocks": sys.getallocatedblocks(),
            "gc_counts": list(gc.get_count()), "gc_frozen": gc.get_freeze_count(),
            "asyncio_tasks": len(asyncio.all_tasks()),
            "widgets": len(QApplication.allWidgets()),
            "open_queries": len(ws.queries.keys),
            "alerts_open": len(alerts.active()) if alerts else None,
            "alerts_known": len(alerts.ledger.records()) if alerts else None,
        }

    async def _sample_memory(self) -> None:
        while True:
            self.samples.append(self.sample())
            await asyncio.sleep(self.args.sample_s)

    async def _clinician(self) -> None:
        """Once a minute: input for the idle lock, and every open alert acknowledged with a
        read-back of the bed, as the acknowledgement dialog does (ui/ack_dialog.py)."""
        from wardsync.sync.alerts import AcknowledgeError, ReadBack

        while True:
            await asyncio.sleep(self.args.ack_interval_s)
            self.controller.idle.note_input()
            alerts = self.controller.services.alerts
            if alerts is None:
                continue
            for record in alerts.active():
                patient = alerts.patient(record.patient_id)
                try:
                    await alerts.acknowledge(record.id, ReadBack(patient.bed or patient.mrn,
                                                                 value_confirmed=True))
                    self.acknowledged += 1
                except AcknowledgeError as exc:
                    name = type(exc).__name__
                    self.ack_failures[name] = self.ack_failures.get(name, 0) + 1

    # ------------------------------------------------------------------ at the end
    def window_queries(self) -> list[dict[str, Any]]:
        """Every window with the searches of the queries its data comes from."""
        out = []
        for window in self.controller.windows:
            keys = list(window.open_keys)
            if window.kind == "alerts" and self.controller.services.alerts is not None:
                # The Alerts window shows the alert center's data, held under its keys.
                feed = self.controller.services.alerts.feed_key
                keys += [WardCensus(self.args.ward), *([feed] if feed else [])]
            queries = self.controller.workspace.workstation.queries
            out.append({"window": window.window_id, "kind": window.kind,
                        "searches": sorted({search_spec(s.resource_type, s.params)
                                            for k in keys for s in queries.searches(k)})})
        return out

    def check(self, truth_path: str) -> dict[str, Any]:
        """Per window: does the store hold exactly the server's version of everything the
        window's queries return, and what does its status bar say."""
        rows = json.loads(Path(truth_path).read_text("utf-8"))
        # Vital-sign windows may have moved on since the truth was read: matched without them.
        truth = {unwindowed(search_spec(rtype, params)): refs for rtype, params, refs in rows}
        store = self.controller.workspace.store
        windows = []
        for entry in self.window_queries():
            expected: dict[str, str] = {}
            unknown = 0
            for spec in entry["searches"]:
                refs = truth.get(unwindowed(spec))
                if refs is None:
                    unknown += 1
                else:
                    expected.update(refs)
            differ = {ref: [store.version(ref), v] for ref, v in expected.items()
                      if store.version(ref) != v}
            window = next(w for w in self.controller.windows
                          if w.window_id == entry["window"])
            windows.append({
                "window": entry["window"], "kind": entry["kind"],
                "searches": len(entry["searches"]), "searches_unknown": unknown,
                "refs": len(expected), "differ": len(differ),
                "differ_sample": dict(list(differ.items())[:3]),
                "connection": window.connection.text(), "freshness": window.freshness.text(),
                "last_fresh_wall": window.last_fresh_wall,
            })
        return {"checked": True, "windows": windows,
                "all_equal": all(w["differ"] == 0 and w["searches_unknown"] == 0
                                 for w in windows)}

    def counters(self) -> dict[str, Any]:
        ws = self.controller.workspace.workstation
        return {
            "t_wall": time.time(), "t_mono_ns": time.monotonic_ns(),
            "state": str(ws.status.state), "fhir_requests_sent": ws.fhir.requests_sent,
            "pokes_accepted": ws.intake.accepted, "seq_gaps": ws.intake.gaps,
            "catch_ups": ws.catch_ups, "polls": ws.polls, "store_resources": len(ws.store),
            "acknowledged": self.acknowledged, "ack_failures": dict(self.ack_failures),
            "window_count": len(self.controller.windows),
            "gc_collections": list(self.collector.collections) if self.collector else None,
        }

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.controller is not None:
            await self.controller.aclose()
        if self.collector is not None:
            self.collector.stop()


async def serve_app(args: argparse.Namespace) -> None:
    """The app side of the `AppProcess` protocol (benchmarks/app_process.py): `ready`, then
    `snapshot`, `windows`, `check` and `stop`; the report at the end."""
    rec = Recorder()
    app = SoakApp(args, rec)

    def ready() -> dict[str, Any]:
        return {"windows": [w.window_id for w in app.controller.windows], **app.counters()}

    def snapshot(command: dict[str, Any]) -> dict[str, Any]:
        return {"snapshot": command.get("label"), **app.counters(),
                "memory": app.samples[-1] if app.samples else None}

    async def finish() -> dict[str, Any]:
        final: dict[str, Any] = {}
        if app.controller is not None and app.controller.workspace is not None:
            final = app.counters()
        await app.aclose()
        return {"final": final, "memory": app.samples}

    await serve_protocol(
        rec, "soak app", start=app.start, ready=ready, finish=finish, report_path=args.report,
        commands={"snapshot": snapshot, "windows": lambda _: {"windows": app.window_queries()},
                  "check": lambda command: app.check(command["truth"])})


def app_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak app")
    p.add_argument("--report", required=True)
    p.add_argument("--fhir-base", required=True)
    p.add_argument("--ward", required=True)
    p.add_argument("--realtime-endpoint", required=True)
    p.add_argument("--realtime-token-url", required=True)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--ack-interval-s", type=float, default=60.0)
    p.add_argument("--vitals-window-h", type=float, default=Config.vitals_window_h)
    p.add_argument("--profile-out", default=None,
                   help="write a cProfile of the whole app side here (pstats format)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import qasync
    from PySide6.QtWidgets import QApplication

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    qt_app.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    profiler = None
    if args.profile_out:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        with loop:
            loop.run_until_complete(serve_app(args))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile_out)
    return 0


# ============================================================================ the driver
@dataclass(frozen=True)
class Config:
    duration_s: float = 1800.0
    warmup_s: float = 300.0  # memory before this is start-up, not growth
    results_per_min: float = 30.0
    vitals_per_min: float = 60.0
    critical_probability: float = 0.05
    sample_s: float = 10.0
    ack_interval_s: float = 60.0
    progress_s: float = 60.0
    patients: int = 24
    seed: int = 7
    # The app's `ui.vitals_window_h`. Shorter than the soak, the store fills the window in the
    # first half and memory must then stay level; the shipped default (72 h) never fills here.
    vitals_window_h: float = 0.25


async def ward_stays(fhir: FhirClient, ward: str) -> dict[str, str]:
    """patient id -> in-progress Encounter id on the ward (what the simulator writes to)."""
    out: dict[str, str] = {}
    for search in WardCensus(ward).searches():
        if search.resource_type != "Encounter":
            continue
        result = await fhir.search("Encounter", [*search.params, ("_count", "200")])
        for enc in result.matches:
            subject = (enc.get("subject") or {}).get("reference", "")
            if enc.get("status") == "in-progress" and subject.startswith("Patient/"):
                out[subject.split("/", 1)[1]] = enc["id"]
    return out


async def _drain_publisher(http: httpx.AsyncClient, info: dict[str, Any]) -> None:
    deadline = time.monotonic() + PUBLISHER_DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if not (await sandbox_stats(http, info))["pokes"]["pending"]:
            return
        await asyncio.sleep(0.2)
    log.warning("poke relay still had pokes pending after %.0f s", PUBLISHER_DRAIN_TIMEOUT_S)


def memory_growth(samples: list[dict[str, Any]], start_ns: int, end_ns: int) -> dict[str, Any]:
    """Per hour, from least-squares lines over [start, end]: RSS, store size, allocations."""
    rows = [s for s in samples if start_ns <= s["t_mono_ns"] <= end_ns and s["rss_bytes"]]
    if len(rows) < 3:
        return {"samples": len(rows)}
    hours = [(s["t_mono_ns"] - rows[0]["t_mono_ns"]) / 1e9 / SECONDS_PER_HOUR for s in rows]

    def per_hour(values: list[float]) -> dict[str, Any] | None:
        fit = linear_fit(hours, values)
        if fit is None:
            return None
        return {"per_hour": round(fit["slope"], 2), "r2": round(fit["r2"], 3)}

    rss = [s["rss_bytes"] / MIB for s in rows]
    store = [float(s["store_resources"]) for s in rows]
    out: dict[str, Any] = {
        "samples": len(rows),
        "window_min": round(hours[-1] * 60.0, 1),
        "rss_mib": {"at_start": round(rss[0], 1), "at_end": round(rss[-1], 1),
                    "max": round(max(rss), 1)},
        "rss_mib_growth": per_hour(rss),
        "store_resources": {"at_start": int(store[0]), "at_end": int(store[-1])},
        "store_resources_growth": per_hour(store),
        "allocated_blocks_growth": per_hour([float(s["allocated_blocks"]) for s in rows]),
        "widgets": {"at_start": rows[0]["widgets"], "at_end": rows[-1]["widgets"]},
        "asyncio_tasks": {"at_start": rows[0]["asyncio_tasks"],
                          "at_end": rows[-1]["asyncio_tasks"],
                          "max": max(s["asyncio_tasks"] for s in rows)},
        "open_queries": {"at_start": rows[0]["open_queries"],
                         "at_end": rows[-1]["open_queries"]},
    }
    # How much memory each resource the store gained costs, if that is what RSS follows.
    fit = linear_fit(store, rss)
    if fit is not None and store[-1] > store[0]:
        out["rss_kib_per_stored_resource"] = round(fit["slope"] * 1024.0, 2)
        rss_growth, store_growth = out["rss_mib_growth"], out["store_resources_growth"]
        if rss_growth and store_growth:
            explained = store_growth["per_hour"] * fit["slope"]
            out["rss_mib_growth_not_following_the_store_per_hour"] = round(
                rss_growth["per_hour"] - explained, 2)
    return out


def rendered_check(events: list[dict[str, Any]], windows: list[dict[str, Any]],
                   truth: dict[tuple[Any, ...], dict[str, str]]) -> dict[str, Any]:
    """Per window: of the resources it showed (`rendered`) that its queries still return,
    how many it last showed at an older version than the server holds."""
    last: dict[str, dict[str, str]] = {}
    for e in events:
        if e.get("event") == "rendered":
            shown = last.setdefault(str(e.get("window")), {})
            shown.update({str(k): str(v) for k, v in (e.get("versions") or {}).items()})
    out = {}
    for w in windows:
        expected: dict[str, str] = {}
        for rtype, params in w["searches"]:
            expected.update(truth.get(search_spec(rtype, params), {}))
        shown = last.get(w["window"], {})
        older = {ref: [v, expected[ref]] for ref, v in shown.items()
                 if ref in expected and int(v) < int(expected[ref])}
        out[w["window"]] = {"shown": len(shown), "still_in_its_queries":
                            sum(1 for ref in shown if ref in expected),
                            "shown_at_an_older_version": len(older),
                            "sample": dict(list(older.items())[:3])}
    return out


async def run(cfg: Config, keep_dir: Path | None = None,
              profile_out: Path | None = None) -> dict[str, Any]:
    progress: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        info = await stack.enter_async_context(running_sandbox(
            "--no-simulator", "--patients", str(cfg.patients), "--seed", str(cfg.seed)))
        writers = await stack.enter_async_context(WardWriters.connect(info))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30.0))
        sampler = await stack.enter_async_context(ResourceSampler())
        wd = stack.enter_context(work_directory(keep_dir))
        sampler.watch("sandbox", int(info["pid"]))
        t_launch = time.monotonic()
        app = await stack.enter_async_context(AppProcess.spawn(
            "benchmarks.soak", wd, "soak-app", "app", "--fhir-base", info["fhir_base"],
            "--ward", info["ward"], "--realtime-endpoint", info["ably_endpoint"],
            "--realtime-token-url", info["ably_token_url"], "--sample-s", str(cfg.sample_s),
            "--ack-interval-s", str(cfg.ack_interval_s),
            "--vitals-window-h", str(cfg.vitals_window_h),
            *(["--profile-out", str(profile_out)] if profile_out else [])))
        sampler.watch("app", app.proc.pid)
        startup_s = time.monotonic() - t_launch
        session = await clinician_session(http, info["fhir_base"])
        stack.push_async_callback(session.aclose)
        fhir = FhirClient(info["fhir_base"], session, http=http, require_tls=False)
        stays = await ward_stays(fhir, info["ward"])
        simulator = WardSimulator(
            lab=writers.lab, devices=writers.devices, patients=sorted(stays), encounters=stays,
            config=SimulatorConfig(results_per_min=cfg.results_per_min,
                                   vitals_per_min=cfg.vitals_per_min,
                                   critical_probability=cfg.critical_probability,
                                   seed=cfg.seed))
        print(f"[{time.strftime('%H:%M:%S')}] app ready with {len(app.ready['windows'])} "
              f"windows in {startup_s:.0f} s; simulator on for {cfg.duration_s:.0f} s",
              flush=True)
        start = await app.snapshot("start")
        t0 = time.monotonic()
        simulator.start()
        try:
            while (left := cfg.duration_s - (time.monotonic() - t0)) > 0:
                await asyncio.sleep(min(cfg.progress_s, left))
                snap = await app.snapshot(f"t+{time.monotonic() - t0:.0f}s")
                progress.append(snap)
                mem = snap.get("memory") or {}
                print(f"[{time.strftime('%H:%M:%S')}] {snap['snapshot']}: "
                      f"{snap['state']}, RSS {(mem.get('rss_bytes') or 0) / MIB:.0f} MiB, "
                      f"store {snap['store_resources']}, pokes {snap['pokes_accepted']}, "
                      f"acknowledged {snap['acknowledged']}", flush=True)
        finally:
            await simulator.stop()
        t1 = time.monotonic()
        end = await app.snapshot("simulator_stopped")
        await _drain_publisher(http, info)

        # Fresh at the end: each window's store versions equal the server's.
        converge_s: float | None = None
        checked: dict[str, Any] = {}
        windows: list[dict[str, Any]] = []
        truth: dict[Any, dict[str, str]] = {}
        truth_path = wd / "soak.truth.json"
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while True:
            windows = (await app.request({"cmd": "windows"}, "windows"))["windows"]
            specs = {search_spec(rtype, params) for w in windows
                     for rtype, params in w["searches"]}
            truth = await server_truth(fhir, sorted(specs))
            truth_path.write_text(json.dumps([[rtype, params, refs] for (rtype, params), refs
                                              in truth.items()]), "utf-8")
            checked = await app.request({"cmd": "check", "truth": str(truth_path)}, "checked",
                                        CHECK_TIMEOUT_S)
            if checked["all_equal"]:
                converge_s = time.monotonic() - t1
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(CONVERGE_POLL_S)
        hub = await sandbox_stats(http, info)
        report, events = await app.stop()
        resources = sampler.summary(t0, t1, ["sandbox", "app"])

    if report.get("error"):
        raise RuntimeError(f"the soak app failed: {report['error']}")
    warm_ns = start["t_mono_ns"] + int(cfg.warmup_s * 1e9)
    return {
        "config": asdict(cfg),
        "startup_s": round(startup_s, 1),
        "windows": app.ready["windows"],
        "traffic": {"simulator": hub.get("simulator"), "pokes": hub.get("pokes"),
                    "pokes_accepted_by_app": end["pokes_accepted"] - start["pokes_accepted"],
                    # One poke per FHIR write (the simulator's and the acknowledgements).
                    "pokes_per_s": round((end["pokes_accepted"] - start["pokes_accepted"])
                                         / max(t1 - t0, 1e-9), 2),
                    "alerts_acknowledged": end["acknowledged"],
                    "acknowledge_failures": end["ack_failures"],
                    "seq_gaps": end["seq_gaps"] - start["seq_gaps"],
                    "catch_ups": end["catch_ups"] - start["catch_ups"],
                    "polls": end["polls"] - start["polls"]},
        "memory": {
            "after_warmup": memory_growth(report["memory"], warm_ns, end["t_mono_ns"]),
            "whole_run": memory_growth(report["memory"], start["t_mono_ns"],
                                       end["t_mono_ns"]),
            "samples": [[round((s["t_mono_ns"] - start["t_mono_ns"]) / 1e9, 1),
                         round(s["rss_bytes"] / MIB, 1), s["store_resources"],
                         s["allocated_blocks"]]
                        for s in report["memory"] if s["rss_bytes"]],
            "samples_columns": ["t_s", "rss_mib", "store_resources", "allocated_blocks"],
        },
        "event_loop": loop_stalls(report["ticks"], start["t_mono_ns"], end["t_mono_ns"],
                                  cpu=report["tick_cpu"], gc_pauses=report["gc_pauses"]),
        "garbage_collections": report["final"].get("gc_collections"),
        "fresh_at_end": {
            "all_windows_equal_server": checked.get("all_equal", False),
            "converged_after_simulator_stopped_s": None if converge_s is None
            else round(converge_s, 1),
            "windows": checked.get("windows", []),
            "rendered_versus_server": rendered_check(events, windows, truth),
            "app_state": end["state"],
        },
        "resources": resources,
        "progress": [{"at": p["snapshot"], "state": p["state"],
                      "rss_mib": round(((p.get("memory") or {}).get("rss_bytes") or 0) / MIB,
                                       1),
                      "store_resources": p["store_resources"],
                      "pokes_accepted": p["pokes_accepted"]} for p in progress],
        "loop_gap_ms_by_minute": _gaps_by_minute(report["ticks"], start["t_mono_ns"],
                                                 end["t_mono_ns"]),
    }


def _gaps_by_minute(ticks: list[int], start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    """Max heartbeat gap and gaps over 100 ms in each minute: does stalling grow with time?"""
    out: list[dict[str, Any]] = []
    minute_ns = 60 * 1_000_000_000
    for m in range(int((end_ns - start_ns) // minute_ns) + 1):
        lo, hi = start_ns + m * minute_ns, start_ns + (m + 1) * minute_ns
        stalls = loop_stalls(ticks, lo, min(hi, end_ns))
        out.append({"minute": m, "max_gap_ms": stalls["max_gap_ms"],
                    "gaps_over_100ms": stalls["gaps_over"]})
    return out


def summary_line(result: dict[str, Any]) -> str:
    mem = result["memory"]["after_warmup"]
    loop = result["event_loop"]
    fresh = result["fresh_at_end"]
    growth = (mem.get("rss_mib_growth") or {}).get("per_hour")
    return (f"RSS {mem.get('rss_mib')} MiB, growth {growth} MiB/h after warm-up; store "
            f"{mem.get('store_resources')}; loop max gap {loop['max_gap_ms']} ms, "
            f"{loop['gaps_over']} gaps > 100 ms; every window equals the server: "
            f"{fresh['all_windows_equal_server']}")


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--duration-s", type=float, default=d.duration_s)
    p.add_argument("--warmup-s", type=float, default=d.warmup_s)
    p.add_argument("--results-per-min", type=float, default=d.results_per_min)
    p.add_argument("--vitals-per-min", type=float, default=d.vitals_per_min)
    p.add_argument("--sample-s", type=float, default=d.sample_s)
    p.add_argument("--ack-interval-s", type=float, default=d.ack_interval_s)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--vitals-window-h", type=float, default=d.vitals_window_h,
                   help="the app's ui.vitals_window_h (hours of vital signs it keeps)")
    p.add_argument("--out", type=Path, default=None, help="results directory")
    p.add_argument("--name", default="soak", help="result file name (no .json)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the app's metrics log, report and stderr here")
    p.add_argument("--profile-out", type=Path, default=None,
                   help="profile the app side with cProfile into this file (slows it down)")
    a = p.parse_args(argv)
    cfg = Config(duration_s=a.duration_s, warmup_s=a.warmup_s,
                 results_per_min=a.results_per_min, vitals_per_min=a.vitals_per_min,
                 sample_s=a.sample_s, ack_interval_s=a.ack_interval_s, seed=a.seed,
                 vitals_window_h=a.vitals_window_h)
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "app" in argv:  # the child: AppProcess.spawn puts --report first
        return app_main([a for a in argv if a != "app"])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, a = parse_args(argv)
    result = asyncio.run(run(cfg, a.keep, a.profile_out))
    path = write_result(a.name, result, a.out)
    print(summary_line(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
