"""The app side of the realtime benchmarks, run as its own process.

It composes a headless station the way `station.services.AppServices` does in demo mode — one
httpx client, the demo clinician signed in through the sandbox's SMART flow with `DemoBrowser`,
a `Session`, the `Workstation` sync stack configured from the app's own settings by
`station.services.workstation_config` — but against a
sandbox that already runs in another process (the benchmark driver started it and writes to
it). With `--windows N` (N > 0) it runs on the qasync loop like the app and opens N ward
overview windows (offscreen Qt), with the app's GUI-thread garbage collector (`ui.gc_guard`,
start-up objects frozen once loaded); with `--windows 0` it is a headless workstation on plain
asyncio (Python's own garbage collection) that opens the census and the per-patient keys
itself.

The app's metrics go to `WARDSYNC_METRICS_LOG` through its own file sink
(docs/architecture.md §3.4).
This process also records what only it can see: every request of the shared HTTP client, a
10 ms heartbeat on its event loop (stalls), when each window's table was painted, and
counters (`FhirClient.requests_sent`, pulls per key) when the driver asks.

Protocol with the driver, one JSON object per line:
  stdout  {"ready": true, ...}  once every open query has loaded (and realtime is live)
  stdin   {"cmd": "snapshot", "label": L}  ->  stdout {"snapshot": L, ...}
  stdin   {"cmd": "stop"} or end of input  ->  the report is written to --report, exit 0
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.login import sign_in
from wardsync.auth.session import Session
from wardsync.core.connection_status import ConnectionState
from wardsync.core.queries import PatientLabs, PatientVitals, QueryKey, WardCensus
from wardsync.infra.metrics import metrics_from_env
from wardsync.infra.settings import Settings, load_settings
from wardsync.station.services import (
    DEMO_PASSWORD,
    DEMO_USER,
    Backend,
    workstation_config,
)
from wardsync.sync.workstation import Workstation

log = logging.getLogger("benchmarks.app_process")

HEARTBEAT_INTERVAL_S = 0.010
READY_TIMEOUT_S = 60.0
READY_POLL_S = 0.05
SETTLE_AFTER_READY_S = 0.5
GC_PAUSE_RECORD_NS = 1_000_000  # garbage collections shorter than 1 ms are not recorded
WINDOW_SLACK_PX = 40


@dataclass
class Recorder:
    """Timestamps this process collects besides the metrics log (monotonic ns)."""

    requests: list[tuple[int, str, str, str]] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    tick_cpu: list[int] = field(default_factory=list)  # this thread's CPU time at each tick
    paints: dict[str, list[int]] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    gc_pauses: list[tuple[int, int, int]] = field(default_factory=list)  # start, ns, gen
    _gc_started: int = 0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """gc.callbacks hook: every garbage collection over GC_PAUSE_RECORD_NS, timed."""
        now = time.monotonic_ns()
        if phase == "start":
            self._gc_started = now
        elif now - self._gc_started >= GC_PAUSE_RECORD_NS:
            self.gc_pauses.append((self._gc_started, now - self._gc_started,
                                   int(info.get("generation", -1))))

    async def on_request(self, request: httpx.Request) -> None:
        """httpx request hook: every request the shared client sends, FHIR or not."""
        self.requests.append((time.monotonic_ns(), request.method, request.url.path,
                              request.url.query.decode("ascii", "replace")))

    async def heartbeat(self) -> None:
        """Tick every 10 ms; a late tick is a stall of the event loop (GUI thread).

        The thread's CPU time at each tick tells a loop busy with our own work (CPU time
        advanced with the wall clock) from a process the OS did not run (it did not).
        """
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)
            self.ticks.append(time.monotonic_ns())
            self.tick_cpu.append(time.thread_time_ns())


def bench_settings(args: argparse.Namespace) -> Settings:
    """The app's built-in settings (no policy, user file or environment) plus our flags."""
    overrides = {}
    if args.debounce_ms is not None:
        overrides["sync.pull_debounce_ms"] = str(args.debounce_ms)
    if args.polling_interval_s is not None:
        overrides["sync.polling_interval_s"] = str(args.polling_interval_s)
    with tempfile.TemporaryDirectory() as tmp:
        none = Path(tmp) / "absent.toml"
        return load_settings(argv_overrides=overrides, environ={}, policy_path=none,
                             user_path=none)


def backend(args: argparse.Namespace) -> Backend:
    """The driver's servers; without realtime for the polling baseline."""
    realtime = not args.no_realtime
    return Backend(args.fhir_base, args.ward,
                   args.realtime_endpoint if realtime else None,
                   args.realtime_token_url if realtime else None, demo=True)


def ward_patients(ws: Workstation, ward: str) -> list[str]:
    """Patients with an in-progress stay on the ward, from the census in the store."""
    ward_beds = {f"Location/{r['id']}" for r in ws.store.of_type("Location")
                 if (r.get("partOf") or {}).get("reference") == f"Location/{ward}"}
    ward_beds.add(f"Location/{ward}")
    out = set()
    for enc in ws.store.of_type("Encounter"):
        here = any((loc.get("location") or {}).get("reference") in ward_beds
                   for loc in enc.get("location") or ())
        subject = (enc.get("subject") or {}).get("reference", "")
        if here and enc.get("status") == "in-progress" and subject.startswith("Patient/"):
            out.add(subject.split("/", 1)[1])
    return sorted(out)


class AppSide:
    """The workstation under test and the windows it shows."""

    def __init__(self, args: argparse.Namespace, recorder: Recorder,
                 collector: Any = None) -> None:
        self.args = args
        self.rec = recorder
        self.collector = collector  # the app's GUI-thread garbage collector (windows only)
        self.settings = bench_settings(args)
        self.metrics = metrics_from_env()
        self.http: httpx.AsyncClient | None = None
        self.session: Session | None = None
        self.ws: Workstation | None = None
        self.windows: list[Any] = []
        self.leases: list[Any] = []
        self.patients: list[str] = []
        self._probes: list[Any] = []

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        self.http = httpx.AsyncClient(timeout=s["fhir.timeout_s"],
                                      event_hooks={"request": [self.rec.on_request]})
        config, tokens = await sign_in(
            self.http, fhir_base=self.args.fhir_base, client_id=s["auth.client_id"],
            scopes=s["auth.scopes"],
            open_url=DemoBrowser(self.http, username=DEMO_USER, password=DEMO_PASSWORD),
        )
        self.session = Session(tokens, http=self.http, config=config,
                               client_id=s["auth.client_id"])
        self.ws = Workstation(workstation_config(s, backend(self.args)), self.session,
                              schedule=loop.call_soon, metrics=self.metrics, http=self.http)
        await self.ws.start()
        census = WardCensus(self.args.ward)
        if self.args.windows > 0:
            self._open_windows()
        else:
            self.leases.append(self.ws.open(census))
        await self._until(lambda: self._loaded([census]), "the ward census")
        self.patients = ward_patients(self.ws, self.args.ward)
        keys: list[QueryKey] = [census]
        if self.args.windows == 0 and self.args.vitals:
            keys += [PatientVitals(p) for p in self.patients]
        if self.args.labs:
            keys += [PatientLabs(p) for p in self.patients]
        for key in keys[1:]:
            self.leases.append(self.ws.open(key))
        if self.args.windows > 0:
            keys += [PatientVitals(p) for p in self.patients]  # the windows open these
        await self._until(lambda: self._loaded(keys) and self._windows_filled(),
                          "every query and window")
        for window in self.windows:
            # Every row on screen, so each change is really painted (rows scrolled out of
            # view are not), as on a tall ward monitor.
            table = window.table
            rows_px = table.verticalHeader().length() + table.horizontalHeader().height()
            window.resize(window.width(), window.height() - table.viewport().height()
                          + rows_px + WINDOW_SLACK_PX)
        if not self.args.no_realtime:
            await self._until(lambda: self.ws.status.state is ConnectionState.LIVE, "live")
        settle = SETTLE_AFTER_READY_S
        if self.windows:
            from wardsync.ui.ward_overview import HIGHLIGHT_S

            # Rows filled in by the initial load are highlighted for HIGHLIGHT_S; the expiry
            # repaints every row, which belongs to start-up, not to what is measured next.
            settle += HIGHLIGHT_S
        await asyncio.sleep(settle)
        if self.collector is not None:
            # As run_app does once started: what start-up built stays out of full passes.
            self.collector.freeze_startup_objects()

    def _open_windows(self) -> None:
        from benchmarks.paint_probe import PaintProbe
        from wardsync.station.workspace import Workspace
        from wardsync.ui.ward_overview import WardOverviewWindow

        assert self.ws is not None and self.session is not None
        workspace = Workspace(workstation=self.ws, metrics=self.metrics,
                              user_name=self.session.user_display_name, demo=True,
                              ward=self.args.ward)
        for _ in range(self.args.windows):
            window = WardOverviewWindow.in_workspace(workspace)
            paints = self.rec.paints.setdefault(window.window_id, [])
            probe = PaintProbe(paints, window)
            window.table.viewport().installEventFilter(probe)
            self._probes.append(probe)
            window.show()
            self.windows.append(window)

    def _loaded(self, keys: list[QueryKey]) -> bool:
        assert self.ws is not None
        open_keys = set(self.ws.queries.keys)
        return all(k in open_keys and self.ws.queries.state(k).status == "ok" for k in keys)

    def _windows_filled(self) -> bool:
        return all(len(w.model.rows) == len(self.patients) and self.patients
                   for w in self.windows)

    async def _until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"app side: timed out waiting for {what}")
            await asyncio.sleep(READY_POLL_S)

    def counters(self) -> dict[str, Any]:
        """What the driver compares before and after a phase."""
        ws = self.ws
        assert ws is not None
        return {
            "t_wall": time.time(), "t_mono_ns": time.monotonic_ns(),
            "fhir_requests_sent": ws.fhir.requests_sent,
            "http_requests": len(self.rec.requests),
            "pulls": {st.key.label(): st.pulls for st in ws.queries.states()},
            "pokes_accepted": ws.intake.accepted, "pokes_duplicate": ws.intake.duplicates,
            "pokes_rejected": ws.intake.rejected_total, "seq_gaps": ws.intake.gaps,
            "catch_ups": ws.catch_ups, "polls": ws.polls, "state": str(ws.status.state),
            "bus_flushes": ws.bus.flushes, "handler_errors": ws.bus.handler_errors,
        }

    async def aclose(self) -> None:
        for window in self.windows:
            window.close()
        self.windows.clear()
        for lease in self.leases:
            lease.close()
        if self.ws is not None:
            await self.ws.aclose()
        if self.session is not None:
            await self.session.aclose()
        if self.http is not None:
            await self.http.aclose()


def _read_stdin(loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue[str | None]) -> None:
    """Blocks on the driver's commands; ends at end of input (the driver closes it)."""
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(inbox.put_nowait, line)
        loop.call_soon_threadsafe(inbox.put_nowait, None)
    except RuntimeError:
        return  # the loop already closed after a "stop": nobody is waiting for input


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


Command = Callable[[dict[str, Any]], dict[str, Any]]


async def serve_protocol(rec: Recorder, side: str, *, start: Callable[[], Awaitable[None]],
                         ready: Callable[[], dict[str, Any]], commands: Mapping[str, Command],
                         finish: Callable[[], Awaitable[dict[str, Any]]],
                         report_path: str) -> None:
    """The child's side of the line protocol (module doc), shared by every app-side process.

    `start()` brings the side up; `ready()` is the rest of the ready line; each driver command
    but "stop" is answered with `commands[cmd](command)` (on the loop, between pulls);
    `finish()` shuts the side down and returns its part of the report, which is written to
    `report_path` with the loop's heartbeat ticks and garbage-collection pauses.
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[str | None] = asyncio.Queue()
    heartbeat: asyncio.Task[None] | None = None
    error: str | None = None
    try:
        await start()
        heartbeat = loop.create_task(rec.heartbeat(), name=f"{side} heartbeat")
        gc.callbacks.append(rec.on_gc)
        threading.Thread(target=_read_stdin, args=(loop, inbox), daemon=True,
                         name="driver commands").start()
        _say({"ready": True, **ready()})
        while (line := await inbox.get()) is not None:
            command = json.loads(line)
            cmd = command.get("cmd")
            if cmd == "stop":
                break
            handler = commands.get(cmd)
            _say(handler(command) if handler is not None else {"error": f"unknown command {cmd!r}"})
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        log.exception("%s failed", side)
        raise
    finally:
        if rec.on_gc in gc.callbacks:
            gc.callbacks.remove(rec.on_gc)
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        report = {"error": error, **await finish(), "ticks": rec.ticks,
                  "tick_cpu": rec.tick_cpu, "gc_pauses": rec.gc_pauses}
        await asyncio.to_thread(Path(report_path).write_text, json.dumps(report), "utf-8")


async def serve(args: argparse.Namespace, collector: Any = None) -> None:
    rec = Recorder()
    app = AppSide(args, rec, collector)

    def snapshot(command: dict[str, Any]) -> dict[str, Any]:
        snap = {"label": command.get("label"), **app.counters()}
        rec.snapshots.append(snap)
        return {"snapshot": snap["label"], **snap}

    async def finish() -> dict[str, Any]:
        final = app.counters() if app.ws is not None else {}
        await app.aclose()
        return {
            "patients": app.patients, "final": final, "snapshots": rec.snapshots,
            "requests": rec.requests, "paints": rec.paints,
            "gc_guard": None if collector is None else {
                "collections": list(collector.collections),
                "full_deferred": collector.full_deferred},
            "clock": {"t_wall": time.time(), "t_mono_ns": time.monotonic_ns()},
        }

    def ready() -> dict[str, Any]:
        assert app.ws is not None
        return {"patients": app.patients, "keys": len(app.ws.queries.keys),
                "windows": [w.window_id for w in app.windows], **app.counters()}

    await serve_protocol(rec, "app side", start=app.start, ready=ready,
                         commands={"snapshot": snapshot}, finish=finish,
                         report_path=args.report)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.app_process")
    p.add_argument("--fhir-base", required=True)
    p.add_argument("--ward", required=True)
    p.add_argument("--realtime-endpoint", required=True)
    p.add_argument("--realtime-token-url", required=True)
    p.add_argument("--report", required=True, help="where to write the final report (JSON)")
    p.add_argument("--windows", type=int, default=0,
                   help="ward overview windows to open (0: headless, no Qt)")
    p.add_argument("--vitals", action="store_true",
                   help="headless: open a PatientVitals key per patient (windows always do)")
    p.add_argument("--labs", action="store_true", help="open a PatientLabs key per patient")
    p.add_argument("--debounce-ms", type=int, default=None,
                   help="sync.pull_debounce_ms (default: the app's built-in setting)")
    p.add_argument("--polling-interval-s", type=float, default=None,
                   help="sync.polling_interval_s (default: the app's)")
    p.add_argument("--no-realtime", action="store_true",
                   help="no realtime connection: the watchdog polls (the baseline client)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.windows <= 0:
        asyncio.run(serve(args))
        return 0
    import qasync
    from PySide6.QtWidgets import QApplication

    from wardsync.ui.gc_guard import MainThreadGarbageCollector

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    # As AppController: closing the windows at the end must not stop the loop under us.
    qt_app.setQuitOnLastWindowClosed(False)
    # As run_app: garbage collected on the GUI thread, full passes at quiet moments.
    collector = MainThreadGarbageCollector(qt_app)
    collector.start()
    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    try:
        with loop:
            loop.run_until_complete(serve(args, collector))
    finally:
        collector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
