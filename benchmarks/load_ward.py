"""Load benchmark: how many workstations can one ward's backend keep fresh on this machine?

N headless workstations — the real `sync.workstation.Workstation`, each signed in through the
sandbox's SMART flow as the demo clinician with its own token, HTTP client and realtime
connection — follow one ward (census, and vital signs and labs of every patient: 49 open
queries) while the ward receives `--rate` results a second (default 10) for `--duration-s`
(default 5 minutes). Workstations run many to a process (`station-host` children, as the
headless sync core is meant to be used for this); the sandbox (FHIR server, hub, poke relay)
is its own process; this driver writes.

**The write load** is the ward simulator's own plan (`sandbox.ward.planner.WritePlanner`,
seeded: new lab panels, occasional corrections, vital-sign rounds, 5 % critical results)
written by the sandbox's laboratory and bedside-device clients from this process and paced
so that `--rate` resources (Observations and DiagnosticReports, each one FHIR write and one
poke) are committed per second.

**Sustains** (decided before measuring, `SUSTAINS`): over the whole write phase
  1. poke-to-fresh-data p99 <= 1 s: commit (`meta.lastUpdated`) -> that version (or a newer
     one) in each workstation's store (`pull_done`, wall clock), over every write and every
     workstation;
  2. no lost update: every written version reached every workstation, and afterwards every
     workstation's store equals the server for every open query;
  3. every workstation stayed live (never reconnecting, degraded or offline);
  4. the writer kept >= 95 % of the target rate (the server took the writes in time).

**The polling baseline** runs the same write plan against the same number of workstations
without realtime, each polling every open query every `--polling-interval-s` (5 s), on a
fresh sandbox with the same seed, in the same run. Reported for both: FHIR requests per
minute (all workstations, idle and while writing), staleness (the same commit -> store
time), and the ratios polling / realtime.

CPU and memory of the sandbox process are sampled from /proc every second: it hosts the FHIR
server, the hub and the poke relay in one event loop, so their shares are reported together.
The station hosts and the machine as a whole are sampled too (the machine is shared).

Run: `.venv/bin/python -m benchmarks.load_ward --stations 25,50,75` (about 8 minutes per
level, plus 12 for the baseline). `--help` lists the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.app_process import Recorder, serve_protocol, ward_patients
from benchmarks.common import (
    AppProcess,
    PokeWatcher,
    ResourceSampler,
    SearchSpec,
    WardWriters,
    Written,
    app_settings,
    clinician_session,
    distribution,
    loop_stalls,
    ratio,
    running_sandbox,
    sandbox_stats,
    search_spec,
    server_truth,
    unwindowed,
    work_directory,
    write_result,
)
from wardsync.core.connection_status import ConnectionState
from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS
from wardsync.core.queries import PatientLabs, PatientVitals, QueryKey, WardCensus, WardTasks
from wardsync.fhir.client import FhirClient
from wardsync.fhir.errors import FhirError
from wardsync.sandbox.ward.observations import VITAL_SLUGS
from wardsync.sandbox.ward.planner import (
    LabCorrectionWrite,
    LabResultWrite,
    PlannedWrite,
    SimulatorConfig,
    VitalsWrite,
    WritePlanner,
)
from wardsync.station.services import Backend, workstation_config
from wardsync.sync.alerts import AlertCenter, Clinician
from wardsync.sync.workstation import Workstation, WorkstationConfig

log = logging.getLogger("benchmarks.load_ward")

# What "sustains" means (module docstring); decided before any measurement.
P99_FRESH_LIMIT_S = 1.0
WRITE_RATE_MIN_SHARE = 0.95
SUSTAINS = {
    "p99_poke_to_fresh_s_at_most": P99_FRESH_LIMIT_S,
    "lost_updates": 0,
    "stations_not_live_at_any_time": 0,
    "write_rate_share_at_least": WRITE_RATE_MIN_SHARE,
}

STATION_START_CONCURRENCY = 4  # sign-ins and first loads at once per host
STATION_READY_TIMEOUT_S = 120.0
HOST_READY_TIMEOUT_S = 600.0
VERIFY_TIMEOUT_S = 60.0
CONVERGE_POLL_S = 1.0
READY_POLL_S = 0.1
WRITER_CONCURRENCY = 4  # planned writes in flight at once (lab and devices in parallel)
VITALS_PER_ROUND = len(VITAL_SLUGS)
# Planner event rates: only their ratio matters here (the writer paces by resources): two lab
# events per vital-signs round makes about half the resources lab results.
PLAN_RESULTS_PER_MIN = 120.0
PLAN_VITALS_PER_MIN = 60.0
PUBLISHER_DRAIN_TIMEOUT_S = 60.0
SANDBOX = "sandbox (FHIR server + hub + poke relay, one process)"


# ============================================================================ the write load
@dataclass
class WriteRun:
    """What the paced writer did."""

    written: list[Written] = field(default_factory=list)
    started_mono: float = 0.0
    ended_mono: float = 0.0
    planned_writes: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    corrections_skipped: int = 0
    behind_s_max: float = 0.0  # how late the latest planned write started, at worst

    @property
    def resources(self) -> int:
        return len(self.written)

    def rate_per_s(self) -> float:
        span = self.ended_mono - self.started_mono
        return self.resources / span if span > 0 else float("nan")


class PacedWard:
    """The ward simulator's plan written from this process at `rate` resources a second.

    The plan (patients, panels, values, corrections, criticals) is `WritePlanner`'s; only the
    timing is ours: write k starts when the resources of writes 0..k-1 are due at `rate`, so
    a vital-signs round (7 Observations) takes 0.7 s of the budget at 10/s. Up to
    `WRITER_CONCURRENCY` writes run at once; a write the server refuses is counted, not
    retried (the run reports the rate it achieved).
    """

    def __init__(self, writers: WardWriters, patients: list[str], rate_per_s: float,
                 seed: int) -> None:
        self._writers = writers
        self._planner = WritePlanner(patients, SimulatorConfig(
            results_per_min=PLAN_RESULTS_PER_MIN, vitals_per_min=PLAN_VITALS_PER_MIN,
            seed=seed))
        self._rate = rate_per_s
        self._reports: dict[int, str] = {}  # plan seq -> DiagnosticReport id
        self._seen: set[tuple[str, str]] = set()

    @staticmethod
    def resources_of(write: PlannedWrite) -> int:
        if isinstance(write, VitalsWrite):
            return VITALS_PER_ROUND
        return len(write.values) + 1  # the Observations and their report

    async def run(self, duration_s: float) -> WriteRun:
        out = WriteRun(started_mono=time.monotonic())
        gate = asyncio.Semaphore(WRITER_CONCURRENCY)
        tasks: set[asyncio.Task[None]] = set()
        due_resources = 0
        try:
            for write in self._planner:
                due = out.started_mono + due_resources / self._rate
                if due - out.started_mono >= duration_s:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await gate.acquire()
                out.behind_s_max = max(out.behind_s_max, time.monotonic() - due)
                due_resources += self.resources_of(write)
                out.planned_writes += 1
                task = asyncio.get_running_loop().create_task(self._one(write, out, gate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        out.ended_mono = time.monotonic()
        return out

    async def _one(self, write: PlannedWrite, out: WriteRun, gate: asyncio.Semaphore) -> None:
        try:
            stored = await self._write(write, out)
        except (FhirError, httpx.HTTPError) as exc:
            out.failures[f"{type(write).__name__} {type(exc).__name__}"] += 1
            return
        finally:
            gate.release()
        for resource in stored:
            item = Written.of(resource, write.patient_id)
            if (item.ref, item.version) not in self._seen:  # a correction returns all results
                self._seen.add((item.ref, item.version))
                out.written.append(item)

    async def _write(self, write: PlannedWrite, out: WriteRun) -> list[dict[str, Any]]:
        w = self._writers
        if isinstance(write, VitalsWrite):
            return await w.devices.post_vitals(write.patient_id, write.vitals,
                                               round_id=f"LOAD-{write.seq}")
        if isinstance(write, LabResultWrite):
            report, observations = await w.lab.post_panel(
                write.patient_id, write.panel_code, write.values,
                accession=f"LOAD-{write.seq:06d}")
            self._reports[write.seq] = report["id"]
            return [*observations, report]
        assert isinstance(write, LabCorrectionWrite)
        report_id = self._reports.get(write.corrects_seq)
        if report_id is None:  # the original failed or is still being written
            out.corrections_skipped += 1
            return []
        report, observations = await w.lab.correct_report(report_id, write.values)
        return [*observations, report]


# ============================================================================ station host
PROFILES = ("app", "labs-and-vitals", "census-only")


def profile_keys(profile: str, ward: str, patients: list[str]) -> list[QueryKey]:
    """What each workstation keeps open, census first.

    `app`: what the app holds with one ward overview open (`ui.ward_overview`: the census,
    every patient's vital signs, the ward's tasks) plus its alert center (`_start_alerts`).
    `labs-and-vitals`: the census and every patient's vital signs and labs, as the other
    realtime benchmarks (poke_burst, polling_baseline) follow the ward.
    `census-only`: no query a result touches, so pokes cause no pulls: what the poke
    relay and the hub's fan-out cost on their own (a diagnostic, not a workstation).
    """
    census = WardCensus(ward)
    vitals = [PatientVitals(p) for p in patients]
    if profile == "census-only":
        return [census]
    if profile == "app":
        return [census, *vitals, WardTasks(ward, tuple(sorted(patients)))]
    return [census, *vitals, *(PatientLabs(p) for p in patients)]


class StationMetrics:
    """A MetricsSink keeping what the benchmark needs from one workstation, wall-clocked:
    when each poke arrived (`poke_received`), when each resource version reached its store
    (`pull_done`), and its connection states."""

    def __init__(self) -> None:
        self.arrived: dict[str, list[tuple[int, float]]] = {}  # ref -> [(version, t_wall)]
        self.poked: dict[tuple[str, str], float] = {}  # (ref, version) -> t_wall
        self.states: list[tuple[float, str]] = []

    def emit(self, event: str, **fields: Any) -> None:
        if event == "poke_received":
            self.poked.setdefault((str(fields.get("ref")), str(fields.get("versionId"))),
                                  time.time())
        elif event == "pull_done":
            try:
                version = int(fields["versionId"])
            except (KeyError, TypeError, ValueError):
                return
            self.arrived.setdefault(str(fields["ref"]), []).append((version, time.time()))
        elif event == "connection_state":
            self.states.append((time.time(), str(fields.get("state"))))

    def fresh_at(self, ref: str, version: int) -> float | None:
        """When this version of `ref`, or a newer one, first reached the store."""
        return min((t for v, t in self.arrived.get(ref, ()) if v >= version), default=None)


def search_kind(resource_type: str, params: Any) -> str:
    """A search's kind for counting: its type, plus the category it filters on."""
    category = next((v for k, v in params if k == "category"), None) if params else None
    return f"{resource_type} {category}" if category else resource_type


class CountingFetcher:
    """Wraps a workstation's FHIR client as its pull loops' fetcher and counts, per kind of
    search, how many ran and how many brought nothing new (every match already held)."""

    def __init__(self, fhir: FhirClient) -> None:
        self._fhir = fhir
        self.searches: Counter[str] = Counter()
        self.nothing_new: Counter[str] = Counter()

    async def search(self, resource_type: str, params: Any, *, known: Any = None) -> Any:
        result = await self._fhir.search(resource_type, params, known=known)
        kind = search_kind(resource_type, params)
        self.searches[kind] += 1
        if not result.matches:
            self.nothing_new[kind] += 1
        return result


@dataclass
class Station:
    name: str
    http: httpx.AsyncClient
    ws: Workstation
    metrics: StationMetrics
    leases: list[Any] = field(default_factory=list)
    alerts: AlertCenter | None = None
    fetcher: CountingFetcher | None = None

    def loaded(self, keys: list[QueryKey]) -> bool:
        open_keys = set(self.ws.queries.keys)
        return all(k in open_keys and self.ws.queries.state(k).status == "ok" for k in keys)


class StationHost:
    """Many headless workstations in this process, one ward, the same open queries."""

    def __init__(self, args: argparse.Namespace, recorder: Recorder) -> None:
        self.args = args
        self.rec = recorder
        overrides = {}
        if args.polling_interval_s is not None:
            overrides["sync.polling_interval_s"] = str(args.polling_interval_s)
        self.settings = app_settings(overrides)
        self.stations: list[Station] = []
        self.patients: list[str] = []
        self.keys: list[QueryKey] = []
        # Realtime workstations must stay live; the baseline's say "degraded: polling".
        self.expected_state = str(ConnectionState.DEGRADED if args.no_realtime
                                  else ConnectionState.LIVE)

    def _config(self) -> WorkstationConfig:
        a = self.args
        return workstation_config(self.settings, Backend(
            a.fhir_base, a.ward, None if a.no_realtime else a.realtime_endpoint,
            None if a.no_realtime else a.realtime_token_url, demo=True))

    async def start(self) -> None:
        first = await self._start_station(0)
        census = WardCensus(self.args.ward)
        first.leases.append(first.ws.open(census))
        await self._until(lambda: first.loaded([census]), "the ward census")
        self.patients = ward_patients(first.ws, self.args.ward)
        self.keys = profile_keys(self.args.profile, self.args.ward, self.patients)
        first.leases += [first.ws.open(k) for k in self.keys[1:]]
        await self._start_alerts(first)
        gate = asyncio.Semaphore(STATION_START_CONCURRENCY)

        async def one(i: int) -> None:
            async with gate:
                station = await self._start_station(i)
                station.leases = [station.ws.open(k) for k in self.keys]
                await self._start_alerts(station)
                await self._until(lambda: station.loaded(self.keys), f"{station.name} loaded")

        await asyncio.gather(*(one(i) for i in range(1, self.args.stations)))
        await self._until(lambda: all(s.loaded(self.keys) for s in self.stations),
                          "every station loaded")
        if not self.args.no_realtime:
            await self._until(lambda: all(s.ws.status.state is ConnectionState.LIVE
                                          for s in self.stations), "every station live")
        # As the app does once started (ui.gc_guard.freeze_startup_objects): what start-up
        # built stays out of later full collections, which would otherwise walk the whole
        # heap of every workstation in this process.
        gc.collect()
        gc.freeze()

    async def _start_alerts(self, station: Station) -> None:
        """The app's critical-result alert center (`station.services.AppServices.start_session`):
        it watches the ward's reports (WardAlerts) and pulls poked reports on its own."""
        if self.args.profile != "app":
            return
        s = self.settings
        session = station.ws.tokens
        station.alerts = AlertCenter(
            station.ws, workstation_name=station.name,
            clinician=Clinician.from_fhir_user(session.tokens.fhir_user,  # type: ignore[attr-defined]
                                               session.user_display_name),  # type: ignore[attr-defined]
            escalation_after_s=s["alerts.escalation_after_min"] * 60.0,
            limits=DEFAULT_CRITICAL_LIMITS.merged(s["alerts.critical_limits"]),
        )
        await station.alerts.start()

    async def _start_station(self, i: int) -> Station:
        s = self.settings
        http = httpx.AsyncClient(timeout=s["fhir.timeout_s"])
        name = f"{self.args.name}-{i:03d}"
        try:
            session = await clinician_session(http, self.args.fhir_base, s)
            metrics = StationMetrics()
            ws = Workstation(self._config(), session, schedule=asyncio.get_running_loop()
                             .call_soon, metrics=metrics, http=http)
            station = Station(name, http, ws, metrics, fetcher=CountingFetcher(ws.fhir))
            ws.queries.fetcher = station.fetcher  # counts what the pull loops ask
            self.stations.append(station)  # from here on aclose() stops it
            await ws.start()
        except BaseException:
            if not any(st.http is http for st in self.stations):
                await http.aclose()
            raise
        return station

    @staticmethod
    async def _until(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + STATION_READY_TIMEOUT_S
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"station host: timed out waiting for {what}")
            await asyncio.sleep(READY_POLL_S)

    def counters(self) -> dict[str, Any]:
        """Sums over the stations, and per station (requests, pulls, pokes accepted)."""
        per = []
        for st in self.stations:
            ws = st.ws
            per.append([ws.fhir.requests_sent, sum(q.pulls for q in ws.queries.states()),
                        ws.intake.accepted])
        states = Counter(str(st.ws.status.state) for st in self.stations)
        searches: Counter[str] = Counter()
        nothing_new: Counter[str] = Counter()
        for st in self.stations:
            if st.fetcher is not None:
                searches.update(st.fetcher.searches)
                nothing_new.update(st.fetcher.nothing_new)
        return {
            "t_wall": time.time(), "t_mono_ns": time.monotonic_ns(),
            "stations": len(self.stations),
            "fhir_requests_sent": sum(p[0] for p in per),
            "pulls": sum(p[1] for p in per),
            "pokes_accepted": sum(p[2] for p in per),
            "pokes_duplicate": sum(st.ws.intake.duplicates for st in self.stations),
            "pokes_rejected": sum(st.ws.intake.rejected_total for st in self.stations),
            "seq_gaps": sum(st.ws.intake.gaps for st in self.stations),
            "catch_ups": sum(st.ws.catch_ups for st in self.stations),
            "polls": sum(st.ws.polls for st in self.stations),
            "states": dict(states), "per_station": per,
            "searches": dict(searches), "searches_nothing_new": dict(nothing_new),
        }

    def open_searches(self) -> list[SearchSpec]:
        """Every search of every query open on any station now (alert centers open and
        close report keys on their own, so this is asked, not assumed)."""
        specs = {search_spec(s.resource_type, s.params) for st in self.stations
                 for k in st.ws.queries.keys for s in st.ws.queries.searches(k)}
        return sorted(specs)

    def verify(self, command: dict[str, Any]) -> dict[str, Any]:
        """Compare every station's store with the server (`truth`: the versions the server
        returns for each search) for the queries that station has open; with `written`,
        also time each written version into each store. Details go to `out`."""
        rows = json.loads(Path(command["truth"]).read_text("utf-8"))
        # Vital-sign windows moved on since the truth was read: matched without them.
        truth = {unwindowed(search_spec(rtype, params)): refs for rtype, params, refs in rows}
        mismatched: list[dict[str, Any]] = []
        unknown = 0
        refs_checked = 0
        for st in self.stations:
            expected: dict[str, str] = {}
            for key in st.ws.queries.keys:
                for search in key.searches():
                    refs = truth.get(search_spec(search.resource_type, search.params))
                    if refs is None:
                        unknown += 1  # opened after the truth was read: checked next time
                    else:
                        expected.update(refs)
            refs_checked += len(expected)
            wrong = {ref: [st.ws.store.version(ref), v] for ref, v in expected.items()
                     if st.ws.store.version(ref) != v}
            if wrong:
                mismatched.append({"station": st.name, "differ": len(wrong),
                                   "sample": dict(list(wrong.items())[:3])})
        out: dict[str, Any] = {"verified": True, "stations": len(self.stations),
                               "refs_checked": refs_checked, "searches_unknown": unknown,
                               "stations_mismatched": len(mismatched) + (1 if unknown else 0),
                               "mismatched": mismatched[:5]}
        if command.get("written"):
            written = json.loads(Path(command["written"]).read_text("utf-8"))
            since = float(command.get("since_wall", 0.0))
            latency_ms: list[list[float]] = []
            to_poke_ms: list[float] = []
            missing: list[int] = []
            not_live: list[dict[str, Any]] = []
            for st in self.stations:
                lat, lost = [], 0
                for ref, version, commit in written:
                    t = st.metrics.fresh_at(ref, int(version))
                    if t is None:
                        lost += 1
                    else:
                        lat.append(round((t - commit) * 1000.0, 1))
                    poked = st.metrics.poked.get((ref, str(version)))
                    if poked is not None:
                        to_poke_ms.append(round((poked - commit) * 1000.0, 1))
                latency_ms.append(lat)
                missing.append(lost)
                changes = [s for t, s in st.metrics.states if t >= since]
                if any(s != self.expected_state for s in changes):
                    not_live.append({"station": st.name, "states": changes[:10]})
            Path(command["out"]).write_text(json.dumps({
                "latency_ms": latency_ms, "commit_to_poke_ms": to_poke_ms,
                "missing": missing, "not_live": not_live,
            }), "utf-8")
            out.update(never_fresh=sum(missing), stations_not_live=len(not_live))
        return out

    async def aclose(self) -> None:
        for st in self.stations:
            if st.alerts is not None:
                await st.alerts.aclose()
            for lease in st.leases:
                lease.close()
        for st in self.stations:
            try:
                await st.ws.aclose()
            finally:
                await st.ws.tokens.aclose()  # type: ignore[attr-defined]  # the Session
                await st.http.aclose()


async def serve_host(args: argparse.Namespace) -> None:
    """The station host's side of the `AppProcess` protocol (benchmarks/app_process.py):
    `ready`, then `snapshot`, `searches`, `verify` and `stop` commands; the report at the end."""
    rec = Recorder()
    host = StationHost(args, rec)

    async def finish() -> dict[str, Any]:
        await host.aclose()
        return {}

    await serve_protocol(
        rec, "station host", start=host.start, finish=finish, report_path=args.report,
        ready=lambda: {"patients": host.patients, "keys": len(host.keys), **host.counters()},
        commands={
            "snapshot": lambda command: {"snapshot": command.get("label"), **host.counters()},
            "searches": lambda _: {"searches": host.open_searches()},
            # On the loop, between pulls: the stores are not read while a pull applies.
            "verify": host.verify,
        })


def host_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load_ward station-host")
    p.add_argument("--report", required=True)
    p.add_argument("--fhir-base", required=True)
    p.add_argument("--ward", required=True)
    p.add_argument("--realtime-endpoint", required=True)
    p.add_argument("--realtime-token-url", required=True)
    p.add_argument("--stations", type=int, required=True)
    p.add_argument("--name", default="ws")
    p.add_argument("--profile", choices=PROFILES, default="app")
    p.add_argument("--no-realtime", action="store_true")
    p.add_argument("--polling-interval-s", type=float, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve_host(args))
    return 0


# ============================================================================ the driver
@dataclass(frozen=True)
class Config:
    stations: tuple[int, ...] = (25, 50, 75)
    baseline_stations: int | None = None  # None: the largest sustained level (else the first)
    processes: int = 2  # station hosts per level
    rate_per_s: float = 10.0
    duration_s: float = 300.0
    idle_s: float = 15.0
    warmup_s: float = 5.0
    polling_interval_s: float = 5.0
    patients: int = 24
    seed: int = 5
    settle_s: float = 2.0
    profile: str = "app"


def _host_args(info: dict[str, Any], stations: int, name: str, mode: str,
               cfg: Config) -> list[str]:
    args = ["station-host", "--fhir-base", info["fhir_base"], "--ward", info["ward"],
            "--realtime-endpoint", info["ably_endpoint"],
            "--realtime-token-url", info["ably_token_url"],
            "--stations", str(stations), "--name", name, "--profile", cfg.profile]
    if mode == "polling":
        args += ["--no-realtime", "--polling-interval-s", str(cfg.polling_interval_s)]
    return args


def _split(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def per_minute(a: dict[str, Any], b: dict[str, Any], counter: str) -> float:
    minutes = (b["t_mono_ns"] - a["t_mono_ns"]) / 60e9
    return round((b[counter] - a[counter]) / minutes, 1) if minutes > 0 else float("nan")


def _sum_snaps(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"t_mono_ns": min(s["t_mono_ns"] for s in snaps),
                           "per_station": [p for s in snaps for p in s["per_station"]],
                           "states": Counter()}
    for key in ("fhir_requests_sent", "pulls", "pokes_accepted", "pokes_duplicate",
                "pokes_rejected", "seq_gaps", "catch_ups", "polls", "stations"):
        out[key] = sum(s[key] for s in snaps)
    searches: Counter[str] = Counter()
    nothing_new: Counter[str] = Counter()
    for s in snaps:
        out["states"].update(s["states"])
        searches.update(s["searches"])
        nothing_new.update(s["searches_nothing_new"])
    out["states"] = dict(out["states"])
    out["searches"], out["searches_nothing_new"] = searches, nothing_new
    return out


def searches_by_kind(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Pull searches between two snapshots, per kind, and the share that brought nothing new
    (a poke for a result the query does not show, or a pull another poke already served)."""
    out = {}
    for kind in sorted(b["searches"]):
        n = b["searches"][kind] - a["searches"].get(kind, 0)
        empty = b["searches_nothing_new"].get(kind, 0) - a["searches_nothing_new"].get(kind, 0)
        if n:
            out[kind] = {"searches": n, "nothing_new_share": round(empty / n, 3)}
    return out


async def _drain_publisher(http: httpx.AsyncClient, info: dict[str, Any]) -> None:
    """Wait until the sandbox's poke relay has published every poke of the writes."""
    deadline = time.monotonic() + PUBLISHER_DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        stats = await sandbox_stats(http, info)
        if not stats["pokes"]["pending"]:
            return
        await asyncio.sleep(0.2)
    log.warning("poke relay still had pokes pending after %.0f s", PUBLISHER_DRAIN_TIMEOUT_S)


async def run_phase(mode: str, n: int, cfg: Config, wd: Path,
                    sampler: ResourceSampler) -> dict[str, Any]:
    """One level: a fresh sandbox, `n` workstations in `mode` (realtime | polling), the
    write plan for `duration_s`, then convergence and the per-write freshness."""
    label = f"{mode}-{n}"
    print(f"[{time.strftime('%H:%M:%S')}] {label}: starting", flush=True)
    async with contextlib.AsyncExitStack() as stack:
        # Every workstation signs in as the demo clinician: one user, n connections.
        info = await stack.enter_async_context(running_sandbox(
            "--no-simulator", "--patients", str(cfg.patients), "--seed", str(cfg.seed),
            "--hub-connections-per-user", str(2 * n + 10)))
        writers = await stack.enter_async_context(WardWriters.connect(info))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30.0))
        # A realtime client doing nothing else: commit -> poke without any workstation's load.
        watcher = await stack.enter_async_context(PokeWatcher(info))
        sampler.watch(f"{label}/sandbox", int(info["pid"]))
        t_start = time.monotonic()
        hosts: list[AppProcess] = list(await asyncio.gather(*(
            stack.enter_async_context(AppProcess.spawn(
                "benchmarks.load_ward", wd, f"{label}-host{i}",
                *_host_args(info, k, f"{label}-h{i}", mode, cfg),
                ready_timeout_s=HOST_READY_TIMEOUT_S))
            for i, k in enumerate(_split(n, cfg.processes)))))
        for i, host in enumerate(hosts):
            sampler.watch(f"{label}/host{i}", host.proc.pid)
        startup_s = time.monotonic() - t_start
        patients = hosts[0].ready["patients"]
        print(f"[{time.strftime('%H:%M:%S')}] {label}: {n} stations ready in "
              f"{startup_s:.0f} s", flush=True)

        async def snap(name: str) -> dict[str, Any]:
            return _sum_snaps(list(await asyncio.gather(*(h.snapshot(name) for h in hosts))))

        await asyncio.sleep(cfg.warmup_s)
        since_wall = time.time()
        idle0 = await snap("idle_start")
        await asyncio.sleep(cfg.idle_s)
        idle1 = await snap("idle_end")
        t_write0 = time.monotonic()
        writes = await PacedWard(writers, patients, cfg.rate_per_s, cfg.seed).run(
            cfg.duration_s)
        t_write1 = time.monotonic()
        written_end = await snap("writes_end")
        await _drain_publisher(http, info)
        hub = await sandbox_stats(http, info)

        session = await clinician_session(http, info["fhir_base"])
        stack.push_async_callback(session.aclose)
        fhir = FhirClient(info["fhir_base"], session, http=http, require_tls=False)
        truth_path, written_path = wd / f"{label}.truth.json", wd / f"{label}.written.json"
        written_path.write_text(json.dumps([[w.ref, w.version, w.commit_wall]
                                            for w in writes.written]), "utf-8")
        # Converged: every station's store equals the server for every open query.
        converge_s: float | None = None
        verified: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []  # each check: how long reading the server took
        t_conv0 = time.monotonic()
        deadline = t_conv0 + cfg.settle_s + cfg.polling_interval_s * 3 + 30.0
        while True:
            specs = {search_spec(rtype, params) for h in await asyncio.gather(*(
                x.request({"cmd": "searches"}, "searches") for x in hosts))
                for rtype, params in h["searches"]}
            t_read = time.monotonic()
            truth = await server_truth(fhir, sorted(specs))
            attempts.append({"searches": len(specs),
                             "server_read_s": round(time.monotonic() - t_read, 1)})
            truth_path.write_text(json.dumps([[rtype, params, refs] for (rtype, params), refs
                                              in truth.items()]), "utf-8")
            verified = list(await asyncio.gather(*(
                h.request({"cmd": "verify", "truth": str(truth_path)}, "verified",
                          VERIFY_TIMEOUT_S) for h in hosts)))
            if not any(v["stations_mismatched"] for v in verified):
                converge_s = time.monotonic() - t_conv0
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(CONVERGE_POLL_S)
        settled = await snap("converged")
        final = list(await asyncio.gather(*(
            h.request({"cmd": "verify", "truth": str(truth_path), "written": str(written_path),
                       "since_wall": since_wall, "out": str(wd / f"{label}-host{i}.fresh.json")},
                      "verified", VERIFY_TIMEOUT_S)
            for i, h in enumerate(hosts))))
        reports = [await h.stop() for h in hosts]
        bare = dict(watcher.received)
        t_end = time.monotonic()
        for i in range(len(hosts)):
            sampler.forget(f"{label}/host{i}")
        sampler.forget(f"{label}/sandbox")

    latencies: list[float] = []
    to_poke: list[float] = []
    per_station_p99: list[float] = []
    not_live: list[dict[str, Any]] = []
    for i in range(len(hosts)):
        fresh = json.loads((wd / f"{label}-host{i}.fresh.json").read_text("utf-8"))
        for lat in fresh["latency_ms"]:
            latencies += lat
            per_station_p99.append(distribution(lat)["p99"] if lat else float("nan"))
        not_live += fresh["not_live"]
        to_poke += fresh["commit_to_poke_ms"]
    lost = sum(v["never_fresh"] for v in final)
    mismatched = sum(v["stations_mismatched"] for v in final)
    loops = [loop_stalls(r["ticks"], idle1["t_mono_ns"], written_end["t_mono_ns"],
                         cpu=r["tick_cpu"], gc_pauses=r["gc_pauses"])
             for r, _ in reports]
    # Every poke of the writes has arrived by `settled`, and the pulls they caused are done.
    pokes = settled["pokes_accepted"] - idle1["pokes_accepted"]
    pulls = settled["pulls"] - idle1["pulls"]
    requests = settled["fhir_requests_sent"] - idle1["fhir_requests_sent"]
    stale = distribution((x / 1000.0 for x in latencies), 3)
    phase: dict[str, Any] = {
        "mode": mode, "stations": n, "hosts": len(hosts), "startup_s": round(startup_s, 1),
        "writes": {
            "resources": writes.resources, "planned_writes": writes.planned_writes,
            "rate_per_s": round(writes.rate_per_s(), 2), "target_per_s": cfg.rate_per_s,
            "failures": dict(writes.failures),
            "corrections_skipped": writes.corrections_skipped,
            "start_behind_s_max": round(writes.behind_s_max, 3),
        },
        "poke_to_fresh_s": stale,
        "poke_to_fresh_per_station_p99_ms": distribution(per_station_p99, 1),
        # The backend's share: commit -> poke at each workstation (relay, hub, websocket).
        "commit_to_poke_ms": distribution(to_poke, 1),
        "commit_to_poke_bare_subscriber_ms": distribution(
            (watcher_t - w.commit_wall) * 1000.0 for w in writes.written
            if (watcher_t := bare.get((w.ref, w.version))) is not None),
        "never_fresh": lost,
        # An upper bound: it includes reading the server for every open search.
        "converged_after_writes_s": None if converge_s is None else round(converge_s, 1),
        "end_checks": attempts,
        "stations_mismatched_at_end": mismatched,
        "mismatch_sample": [m for v in final for m in v["mismatched"]][:3],
        "stations_not_live": len(not_live), "not_live_sample": not_live[:3],
        "fhir_requests_per_min_idle": per_minute(idle0, idle1, "fhir_requests_sent"),
        "fhir_requests_per_min_writing": per_minute(idle1, written_end, "fhir_requests_sent"),
        "pokes_accepted": pokes,
        "pokes_expected": writes.resources * n,
        "pulls": pulls,
        "pulls_per_poke": ratio(pulls, pokes, 3),
        "fhir_requests_per_poke": ratio(requests, pokes, 3),
        "pulls_per_write_per_station": ratio(pulls, writes.resources * n, 3),
        "searches_by_kind": searches_by_kind(idle1, settled),
        "pokes_duplicate": settled["pokes_duplicate"] - idle1["pokes_duplicate"],
        "seq_gaps": settled["seq_gaps"] - idle1["seq_gaps"],
        "catch_ups": settled["catch_ups"] - idle1["catch_ups"],
        "polls": settled["polls"] - idle1["polls"],
        "hub_and_poke_relay": hub,
        "resources": sampler.summary(t_write0, t_write1,
                                     [f"{label}/sandbox", *(f"{label}/host{i}"
                                                            for i in range(len(hosts)))]),
        "station_host_event_loop": loops,
        "wall_s": round(t_end - t_start, 1),
    }
    # The resources section is keyed by process: name them plainly for the reader.
    res = phase["resources"]
    res[SANDBOX] = res.pop(f"{label}/sandbox")
    for i in range(len(hosts)):
        res[f"station host {i}"] = res.pop(f"{label}/host{i}")
    phase["sustained"] = sustained(phase, cfg)
    phase["sustained_verdict"] = all(phase["sustained"].values())
    sandbox_cpu = res[SANDBOX].get("cpu_percent_of_one_core")
    print(f"[{time.strftime('%H:%M:%S')}] {label}: fresh p50 {stale.get('p50')} s "
          f"p99 {stale.get('p99')} s, never fresh {lost}, mismatched {mismatched}, "
          f"not live {len(not_live)}, writes {phase['writes']['rate_per_s']}/s, "
          f"requests/min {phase['fhir_requests_per_min_writing']}, pulls/poke "
          f"{phase['pulls_per_poke']}, sandbox CPU {sandbox_cpu} %, "
          f"sustained {phase['sustained_verdict']}", flush=True)
    return phase


def sustained(phase: dict[str, Any], cfg: Config) -> dict[str, bool]:
    """Each criterion of SUSTAINS, met or not."""
    p99 = phase["poke_to_fresh_s"].get("p99")
    return {
        "p99_poke_to_fresh_le_1s": p99 is not None and p99 <= P99_FRESH_LIMIT_S,
        "no_lost_update": phase["never_fresh"] == 0
        and phase["stations_mismatched_at_end"] == 0,
        "every_station_stayed_live": phase["stations_not_live"] == 0,
        "writer_kept_rate": phase["writes"]["rate_per_s"] >= WRITE_RATE_MIN_SHARE
        * cfg.rate_per_s,
    }


def compare(realtime: dict[str, Any], polling: dict[str, Any]) -> dict[str, Any]:
    """polling / realtime, the same number of workstations and the same writes."""
    return {
        "stations": realtime["stations"],
        "fhir_requests_per_min_writing": {"realtime": realtime["fhir_requests_per_min_writing"],
                                          "polling": polling["fhir_requests_per_min_writing"]},
        "fhir_requests_per_min_idle": {"realtime": realtime["fhir_requests_per_min_idle"],
                                       "polling": polling["fhir_requests_per_min_idle"]},
        "mean_staleness_s": {"realtime": realtime["poke_to_fresh_s"].get("mean"),
                             "polling": polling["poke_to_fresh_s"].get("mean")},
        "requests_per_min_writing_polling_over_realtime": ratio(
            polling["fhir_requests_per_min_writing"], realtime["fhir_requests_per_min_writing"]),
        "mean_staleness_polling_over_realtime": ratio(
            polling["poke_to_fresh_s"].get("mean", float("nan")),
            realtime["poke_to_fresh_s"].get("mean", float("nan")), 1),
        "p99_staleness_polling_over_realtime": ratio(
            polling["poke_to_fresh_s"].get("p99", float("nan")),
            realtime["poke_to_fresh_s"].get("p99", float("nan")), 1),
        "sandbox_cpu_percent_of_one_core": {
            m: p["resources"][SANDBOX].get("cpu_percent_of_one_core")
            for m, p in (("realtime", realtime), ("polling", polling))},
    }


async def run(cfg: Config, keep_dir: Path | None = None) -> dict[str, Any]:
    levels: list[dict[str, Any]] = []
    baseline: dict[str, Any] | None = None
    async with ResourceSampler() as sampler:
        with work_directory(keep_dir) as wd:
            for n in cfg.stations:
                levels.append(await run_phase("realtime", n, cfg, wd, sampler))
            held = [p["stations"] for p in levels if p["sustained_verdict"]]
            if cfg.baseline_stations is not None:
                n_base = cfg.baseline_stations
            else:
                n_base = max(held) if held else cfg.stations[0]
            realtime = next((p for p in levels if p["stations"] == n_base), None)
            if realtime is None:
                realtime = await run_phase("realtime", n_base, cfg, wd, sampler)
                levels.append(realtime)
            if cfg.polling_interval_s > 0:
                polling = await run_phase("polling", n_base, cfg, wd, sampler)
                baseline = {"polling": polling, "ratios": compare(realtime, polling)}
    held = sorted(p["stations"] for p in levels if p["sustained_verdict"])
    broke = sorted(p["stations"] for p in levels if not p["sustained_verdict"])
    return {
        "config": asdict(cfg),
        "sustains_means": SUSTAINS,
        "largest_sustained_stations": max(held) if held else None,
        "smallest_failed_stations": min(broke) if broke else None,
        "levels": sorted(levels, key=lambda p: p["stations"]),
        "baseline": baseline,
    }


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load_ward",
                                description=__doc__.split("\n\n")[0])
    d = Config()
    p.add_argument("--stations", default=",".join(map(str, d.stations)),
                   help="workstation counts to try, comma-separated")
    p.add_argument("--baseline-stations", type=int, default=None,
                   help="workstations for the polling baseline (default: the largest level "
                   "that sustained)")
    p.add_argument("--processes", type=int, default=d.processes,
                   help="station host processes per level")
    p.add_argument("--rate", type=float, default=d.rate_per_s, help="results per second")
    p.add_argument("--duration-s", type=float, default=d.duration_s)
    p.add_argument("--idle-s", type=float, default=d.idle_s)
    p.add_argument("--polling-interval-s", type=float, default=d.polling_interval_s,
                   help="the baseline's polling interval (0: no baseline)")
    p.add_argument("--patients", type=int, default=d.patients)
    p.add_argument("--profile", choices=PROFILES, default=d.profile,
                   help="what each workstation keeps open (see profile_keys)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=None, help="results directory")
    p.add_argument("--name", default="load_ward", help="result file name (no .json)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the hosts' reports, truths and freshness files here")
    a = p.parse_args(argv)
    cfg = Config(stations=tuple(int(x) for x in a.stations.split(",") if x.strip()),
                 baseline_stations=a.baseline_stations, processes=a.processes,
                 rate_per_s=a.rate, duration_s=a.duration_s, idle_s=a.idle_s,
                 polling_interval_s=a.polling_interval_s, patients=a.patients, seed=a.seed,
                 profile=a.profile)
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "station-host" in argv:  # a child: AppProcess.spawn puts --report first
        return host_main([a for a in argv if a != "station-host"])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, a = parse_args(argv)
    result = asyncio.run(run(cfg, a.keep))
    path = write_result(a.name, result, a.out)
    print(f"largest sustained: {result['largest_sustained_stations']}; smallest failed: "
          f"{result['smallest_failed_stations']}")
    if result["baseline"]:
        print(f"baseline: {result['baseline']['ratios']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
