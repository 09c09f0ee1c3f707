"""The fault bed: a sandbox, two fault proxies, several headless workstations and ward traffic.

Every workstation reaches the sandbox only through the proxies (FHIR, the realtime token
exchange and the hub), the way a workstation reaches its servers over the hospital network; the
laboratory and the ward devices write to the FHIR server directly (their own network). Sign-in
happens directly too, before the faults start.

After a fault, `FaultBed.assert_consistent()` checks what the issue asks of every workstation:
its data for every open query equals the server's, nothing was applied twice, and no version
replaced a newer one; `Station.states_since()` gives a workstation's `connection_state` timeline.

By default the sandbox's own relay publishes the pokes. `fault_bed(..., relay=RelayBeside(...))`
runs the sandbox without it (`--no-relay`) and a real `wardsync relay` process beside it
instead, as a hospital runs one: its FHIR traffic through a proxy of its own
(`FaultBed.relay_fhir_proxy`), its listening port fixed (its notify URL survives a restart), and
the workstations exchanging their tokens with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.faults.proxy import FaultProxy
from tests.postgres_fixtures import free_port
from tests.relay.relay_fixtures import (
    PokeWatcher,
    RelayProcess,
    poke_watcher,
    relay_flags,
    scrape,
)
from tests.sandbox_fixtures import DESKTOP_CLIENT, SCOPES, running_sandbox
from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.login import sign_in
from wardsync.auth.session import Session
from wardsync.core import codes
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.queries import PatientLabs, PatientVitals, QueryKey
from wardsync.fhir.errors import Conflict, FhirError
from wardsync.sandbox.hub import HubConfig
from wardsync.sandbox.server import Sandbox
from wardsync.sandbox.ward.observations import (
    VitalSigns,
    lab_observation,
    vital_sign_observations,
)
from wardsync.sync.pull import QueryLease
from wardsync.sync.workstation import Workstation, WorkstationConfig

STATIONS = 3
PATIENTS = ("pat-02", "pat-03", "pat-04")
# Shrunk timings (production: maxIdleInterval 15 s, degraded after 10 s, polling every 15 s).
HEARTBEAT_INTERVAL_S = 0.5
MAX_IDLE_INTERVAL_MS = 1500
DEGRADED_AFTER_S = 2.0
POLLING_INTERVAL_S = 1.0
BACKOFF_CAP_S = 2.0
GAP_GRACE_S = 1.0
POLL_STEP_S = 0.05


def fault_hub_config(**overrides: Any) -> HubConfig:
    """Hub timings for the fault suite: silence is noticed within seconds."""
    base = {"max_idle_interval_ms": MAX_IDLE_INTERVAL_MS,
            "heartbeat_interval_s": HEARTBEAT_INTERVAL_S, "presence_grace_s": 2.0}
    return HubConfig(**{**base, **overrides})


async def eventually(predicate: Callable[[], bool], timeout_s: float,
                     what: str = "condition") -> float:
    """Wait until `predicate()` holds; return how long that took (AssertionError on timeout)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_STEP_S)
    return time.monotonic() - start


class TimedMetrics(MemoryMetrics):
    """MemoryMetrics whose events carry `t` (monotonic seconds), like the log's t_mono_ns."""

    def emit(self, event: str, **fields: Any) -> None:
        super().emit(event, t=time.monotonic(), **fields)


@dataclass
class Station:
    """One headless workstation with its own HTTP client, session and metrics."""

    name: str
    ws: Workstation
    metrics: TimedMetrics
    session: Session
    http: httpx.AsyncClient
    leases: list[QueryLease] = field(default_factory=list)

    @property
    def state(self) -> ConnectionState:
        return self.ws.status.state

    def states_since(self, t0: float) -> list[str]:
        return [e["state"] for e in self.metrics.of("connection_state") if e["t"] >= t0]

    def first_state_after(self, state: str, t0: float) -> float | None:
        """Monotonic time the station first entered `state` at or after `t0`."""
        return next((e["t"] for e in self.metrics.of("connection_state")
                     if e["t"] >= t0 and e["state"] == state), None)


def server_view(sandbox: Sandbox, key: QueryKey) -> dict[str, str]:
    """ref -> versionId of everything the server returns for `key` (matches and includes)."""
    assert sandbox.store is not None
    out: dict[str, str] = {}
    for search in key.searches():
        page = sandbox.store.search(search.resource_type, [*search.params, ("_count", "1000")])
        assert page.next_offset is None, "the fault suite's queries fit in one page"
        for r in [*page.matches, *page.includes]:
            out[f"{r['resourceType']}/{r['id']}"] = r["meta"]["versionId"]
    return out


def station_view(station: Station, refs: set[str]) -> dict[str, str | None]:
    return {ref: station.ws.store.version(ref) for ref in refs}


@dataclass
class WriteLog:
    """Writes the servers acknowledged (ref -> newest acknowledged versionId) and refusals."""

    acknowledged: dict[str, int] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0

    def ack(self, resource: dict[str, Any]) -> None:
        ref = f"{resource['resourceType']}/{resource['id']}"
        version = int(resource["meta"]["versionId"])
        self.acknowledged[ref] = max(version, self.acknowledged.get(ref, 0))


class WardTraffic:
    """Writes that go on through a fault: lab panels and corrections (direct to the server),
    and vital signs recorded and amended at the workstations (through the proxies, If-Match).

    A write the fault refuses is retried on the next tick (the laboratory with the same
    accession, so no half-written panel is duplicated); a 412 is a conflict, never retried as
    an overwrite.
    """

    def __init__(self, bed: FaultBed, interval_s: float, *, lab: bool = True) -> None:
        self._bed = bed
        self.interval_s = interval_s
        self._with_lab = lab
        self.log = WriteLog()
        self._task: asyncio.Task[None] | None = None
        self._ticks = itertools.count()
        self._pending_accession: tuple[str, str] | None = None
        self._last_report: str | None = None
        self._recorded: list[tuple[str, int]] = []  # (Observation id, station index)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ward traffic")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @property
    def writes(self) -> int:
        return len(self.log.acknowledged)

    async def _run(self) -> None:
        while True:
            tick = next(self._ticks)
            if self._with_lab:
                await self._lab(tick)
            await self._bedside(tick)
            await asyncio.sleep(self.interval_s)

    async def _lab(self, tick: int) -> None:
        lab = self._bed.sandbox.lab
        patient = PATIENTS[tick % len(PATIENTS)]
        try:
            if tick % 4 == 3 and self._last_report is not None:
                report, observations = await lab.correct_report(
                    self._last_report, {codes.LACTATE.code: 1.0 + tick / 100})
            else:
                if self._pending_accession is None:
                    self._pending_accession = (patient, f"LAB-FAULT-{tick:05d}")
                patient, accession = self._pending_accession
                report, observations = await lab.post_panel(
                    patient, codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.5 + tick / 100},
                    accession=accession)
                self._pending_accession = None
                self._last_report = report["id"]
        except FhirError as exc:
            self.log.failures[f"lab {type(exc).__name__}"] += 1
            return
        for resource in (report, *observations):
            self.log.ack(resource)

    async def _bedside(self, tick: int) -> None:
        stations = self._bed.stations
        station_ix = tick % len(stations)
        station = stations[station_ix]
        try:
            if tick % 2 == 1 and self._recorded:
                # Another nurse amends a recorded heart rate, guarded by the version her
                # workstation shows: a stale screen gets 412, never a silent overwrite.
                obs_id, _ = self._recorded[-1]
                held = station.ws.store.get(f"Observation/{obs_id}")
                if held is None:
                    return
                amended = {**held, "valueQuantity": {**held["valueQuantity"],
                                                     "value": 60 + tick % 50}}
                stored = await station.ws.fhir.update(
                    amended, if_match_version=held["meta"]["versionId"])
            else:
                patient = PATIENTS[tick % len(PATIENTS)]
                vitals = VitalSigns(heart_rate=70 + tick % 30, respiratory_rate=16, spo2=97,
                                    temperature=36.8, systolic=120, diastolic=75)
                heart_rate = vital_sign_observations(
                    patient, vitals, effective=datetime.now(UTC))[0]
                stored = await station.ws.fhir.create(heart_rate)
                self._recorded.append((stored["id"], station_ix))
        except Conflict:
            self.log.conflicts += 1
            return
        except FhirError as exc:
            self.log.failures[f"bedside {type(exc).__name__}"] += 1
            return
        self.log.ack(stored)


# A relay beside the sandbox as the relay fault tests run it: topic Subscriptions, and a
# one-second poll as the safety net.
TOPIC_RELAY_CONFIG = """
[reconcile]
interval_s = 1.0
overlap_s = 1.0
initial_lookback_s = 0
types = ["DiagnosticReport", "Observation"]

[subscriptions]
mode = "topic"
heartbeat_s = 60
"""


@dataclass(frozen=True)
class RelayBeside:
    """A `wardsync relay` process to run beside a `--no-relay` sandbox (module docstring).

    `config` is its relay.toml; `public_url`, when set, is what it tells the FHIR server as its
    notify URL (a proxy in front of `port`, which is then fixed by the test)."""

    config: str
    port: int = 0
    public_url: str | None = None


@dataclass
class FaultBed:
    """Everything one fault test drives (see the module docstring)."""

    sandbox: Sandbox
    hub_proxy: FaultProxy
    fhir_proxy: FaultProxy
    stations: list[Station]
    keys: list[QueryKey]
    relay: RelayProcess | None = None
    relay_fhir_proxy: FaultProxy | None = None

    def traffic(self, interval_s: float = 0.3, *, lab: bool = True) -> WardTraffic:
        """Ward traffic to start; `lab=False` leaves the lab queries to the test's own writes."""
        return WardTraffic(self, interval_s, lab=lab)

    # ------------------------------------------------------------------ waiting
    def all_live(self) -> bool:
        return all(s.state is ConnectionState.LIVE for s in self.stations)

    def all_loaded(self) -> bool:
        return all(s.ws.queries.state(k).status == "ok" for s in self.stations for k in self.keys)

    def converged(self) -> bool:
        """Every station holds exactly the server's versions for every open query."""
        for key in self.keys:
            truth = server_view(self.sandbox, key)
            for s in self.stations:
                if station_view(s, set(truth)) != truth:
                    return False
        return True

    async def wait_converged(self, timeout_s: float, what: str = "convergence") -> float:
        """Wait until `converged()`; returns the seconds it took."""
        try:
            return await eventually(self.converged, timeout_s, what)
        except AssertionError:
            raise AssertionError(f"{what}: {self.divergence()}") from None

    def divergence(self) -> str:
        """What differs (refs and versions only), for failure messages."""
        out = []
        for key in self.keys:
            truth = server_view(self.sandbox, key)
            for s in self.stations:
                held = station_view(s, set(truth))
                wrong = {r: (held[r], v) for r, v in truth.items() if held[r] != v}
                if wrong:
                    sample = dict(list(wrong.items())[:4])
                    out.append(f"{s.name} {key.label()}: held/server {sample} "
                               f"({len(wrong)} differ)")
        return "; ".join(out) or "none"

    async def settle(self, timeout_s: float = 20.0) -> None:
        """Wait until the sandbox's relay has published the pokes of every write so far."""
        await self.sandbox.drain_pokes(timeout_s)

    # ------------------------------------------------------------------ checks
    def assert_consistent(self, writes: WriteLog | None = None) -> None:
        """After convergence: nothing lost, nothing applied twice, nothing went backwards."""
        assert self.converged(), self.divergence()
        for s in self.stations:
            done = s.metrics.of("pull_done")
            applied = Counter((e["ref"], e["versionId"]) for e in done)
            twice = [k for k, n in applied.items() if n > 1]
            assert not twice, f"{s.name} applied a version twice: {twice[:5]}"
            seen: dict[str, int] = {}
            for e in done:
                v = int(e["versionId"])
                assert v > seen.get(e["ref"], 0), (
                    f"{s.name} applied {e['ref']} v{v} after v{seen[e['ref']]}")
                seen[e["ref"]] = v
            # The store is what windows show: it must agree with what was applied.
            for ref, v in seen.items():
                assert s.ws.store.version(ref) == str(v), f"{s.name} {ref} store/pull mismatch"
        if writes is not None:
            assert writes.acknowledged, "the traffic wrote nothing"
            truth: dict[str, str] = {}
            for key in self.keys:
                truth.update(server_view(self.sandbox, key))
            for ref, version in writes.acknowledged.items():
                # No lost update: every acknowledged write is on the server, at that version
                # or newer, and (by convergence) on every workstation.
                assert ref in truth, f"acknowledged {ref} is not on the server"
                assert int(truth[ref]) >= version, f"{ref} went back from v{version}"


@contextlib.asynccontextmanager
async def fault_bed(
    seeded_data_dir: Path,
    tmp_path: Path,
    *,
    stations: int = STATIONS,
    hub_config: HubConfig | None = None,
    session_kwargs: dict[str, Any] | None = None,
    sandbox_overrides: dict[str, Any] | None = None,
    relay: RelayBeside | None = None,
    **workstation_overrides: Any,
) -> AsyncIterator[FaultBed]:
    """A running bed: every station signed in, its queries loaded and its realtime live."""
    async with contextlib.AsyncExitStack() as stack:
        sb = await stack.enter_async_context(running_sandbox(
            seeded_data_dir, tmp_path, hub_config=hub_config or fault_hub_config(),
            **(sandbox_overrides or {}), **({"relay": False} if relay else {})))
        assert sb.hub is not None
        hub_proxy = await stack.enter_async_context(FaultProxy(sb.config.host, sb.hub.port))
        fhir_proxy = await stack.enter_async_context(FaultProxy(sb.config.host, sb.port))
        keys: list[QueryKey] = [k for p in PATIENTS for k in (PatientLabs(p), PatientVitals(p))]
        bed = FaultBed(sb, hub_proxy, fhir_proxy, [], keys)
        token_url = fhir_proxy.url("realtime/token")
        if relay is not None:
            bed.relay_fhir_proxy = await stack.enter_async_context(
                FaultProxy(sb.config.host, sb.port))
            bed.relay = await _start_relay_beside(stack, bed, relay, tmp_path)
            token_url = bed.relay.ready["token_url"]
        config = {
            "fhir_base": fhir_proxy.url("fhir"), "ward": sb.ward,
            "realtime_endpoint": hub_proxy.endpoint,
            "realtime_token_url": token_url,
            "degraded_after_s": DEGRADED_AFTER_S, "polling_interval_s": POLLING_INTERVAL_S,
            "backoff_cap_s": BACKOFF_CAP_S, "gap_grace_s": GAP_GRACE_S,
            **workstation_overrides,
        }
        for i in range(stations):
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))
            smart, tokens = await sign_in(
                http, fhir_base=sb.fhir_base, client_id=DESKTOP_CLIENT, scopes=SCOPES,
                open_url=DemoBrowser(http, username="demo.clinician", password="demo"))
            session = Session(tokens, http=http, config=smart, client_id=DESKTOP_CLIENT,
                              **(session_kwargs or {}))
            stack.push_async_callback(session.aclose)
            metrics = TimedMetrics()
            ws = Workstation(WorkstationConfig(**config), session, metrics=metrics, http=http,
                             schedule=asyncio.get_running_loop().call_soon)
            await ws.start()
            stack.push_async_callback(ws.aclose)
            station = Station(f"ws{i + 1}", ws, metrics, session, http)
            station.leases = [ws.open(k) for k in keys]
            bed.stations.append(station)
        await eventually(lambda: bed.all_loaded() and bed.all_live(), 20.0,
                         "every station loaded and live")
        yield bed


async def _start_relay_beside(stack: contextlib.AsyncExitStack, bed: FaultBed,
                              spec: RelayBeside, tmp_path: Path) -> RelayProcess:
    assert bed.relay_fhir_proxy is not None
    config_file = tmp_path / "relay.toml"
    config_file.write_text(spec.config)
    flags = relay_flags(bed.sandbox, tmp_path, tmp_path / "relay-data")
    flags["fhir_base"] = bed.relay_fhir_proxy.url("fhir")
    flags["listen"] = f"127.0.0.1:{spec.port or free_port()}"
    if spec.public_url is not None:
        flags["public_url"] = spec.public_url
    process = RelayProcess(flags, config_file, tmp_path / "relay.log")
    stack.push_async_callback(process.close)
    await start_relay(process)
    return process


async def start_relay(relay: RelayProcess, timeout_s: float = 30.0) -> None:
    """(Re)start a relay process and wait until it leads, has polled once and maintains its
    Subscriptions on the server."""
    ready = await relay.start(timeout_s)
    async with httpx.AsyncClient(timeout=5) as http:
        async def ready_now() -> bool:
            reply = await http.get(ready["health_url"].replace("/healthz", "/readyz"))
            if reply.status_code != 200 or reply.json()["role"] != "leader":
                return False
            return await scrape(http, ready["metrics_url"], "wardsync_relay_subscriptions") >= 1

        deadline = time.monotonic() + timeout_s
        while not await ready_now():
            if time.monotonic() > deadline:
                raise AssertionError(f"the relay never got ready: {relay.log_tail()}")
            await asyncio.sleep(POLL_STEP_S)


async def post_marker(bed: FaultBed, patient: str = PATIENTS[0]) -> str:
    """One lab panel written now (directly, retried until the server takes it); its report ref."""
    for _ in range(50):
        try:
            report, _ = await bed.sandbox.lab.post_panel(
                patient, codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.9},
                accession=f"LAB-MARK-{id(bed):x}-{time.monotonic_ns()}")
        except FhirError:
            await asyncio.sleep(0.2)
            continue
        return f"DiagnosticReport/{report['id']}"
    raise AssertionError("the marker write never succeeded")


def assert_states(bed: FaultBed, t0: float, *, must: set[str], allowed: set[str],
                  last: str = "live") -> None:
    """Each station's states since `t0` include `must`, stay within `allowed`, end at `last`."""
    for s in bed.stations:
        states = s.states_since(t0)
        assert must <= set(states), f"{s.name} never said {must - set(states)}: {states}"
        assert set(states) <= allowed, f"{s.name} said {set(states) - allowed}: {states}"
        assert states and states[-1] == last, f"{s.name} ended {states[-1:]}, not {last}"


def write_behind_the_api(bed: FaultBed, patient: str = PATIENTS[1]) -> str:
    """A lab result stored through another interface of the server (an HL7 feed, say) while
    its REST API fails: the write commits and is poked, but workstations cannot pull it yet."""
    assert bed.sandbox.store is not None
    obs = lab_observation(patient, codes.LACTATE.code, 2.2, effective=datetime.now(UTC),
                          issued=datetime.now(UTC), status="final")
    stored = bed.sandbox.store.create(obs)
    return f"Observation/{stored['id']}"


@contextlib.asynccontextmanager
async def bare_subscriber(bed: FaultBed) -> AsyncIterator[PokeWatcher]:
    """A realtime client on the ward channel that only counts pokes (no workstation behind
    it), straight to the hub with a token from the bed's relay, in the first station's name."""
    assert bed.relay is not None
    station = bed.stations[0]
    async with poke_watcher(bed.sandbox, station.session, station.http,
                            bed.relay.ready["token_url"]) as watcher:
        await eventually(lambda: watcher.client.connection.state == "connected", 10.0,
                         "the bare subscriber connected")
        yield watcher


def newest_versions(bed: FaultBed, refs: set[str]) -> dict[str, str]:
    """ref -> the server's current versionId, for `refs` (all in the bed's open queries)."""
    truth: dict[str, str] = {}
    for key in bed.keys:
        truth.update(server_view(bed.sandbox, key))
    missing = refs - set(truth)
    assert not missing, f"not on the server: {sorted(missing)[:5]}"
    return {ref: truth[ref] for ref in refs}


def assert_poked_once(counts: Counter[tuple[str, str]], newest: dict[str, str]) -> None:
    """No version poked twice; the newest version of every ref in `newest` poked once (an
    older version the relay never saw as current is covered by it: docs/relay.md)."""
    twice = {v: n for v, n in counts.items() if n > 1}
    assert not twice, f"poked more than once: {twice}"
    unpoked = sorted((ref, v) for ref, v in newest.items() if counts[(ref, v)] != 1)
    assert not unpoked, f"{len(unpoked)} newest version(s) never poked: {unpoked[:5]}"


async def relay_pokes_published(http: httpx.AsyncClient, relay: RelayProcess) -> float:
    """Pokes the relay process has seen acknowledged by the hub since it started."""
    total = 0.0
    for kind in ("CRITICAL_LAB_RESULT", "LAB_RESULT_READY", "RESOURCE_CHANGED"):
        total += await scrape(http, relay.ready["metrics_url"],
                              "wardsync_relay_pokes_published_total", type=kind)
    return total


def assert_contiguous(seqs: list[int]) -> None:
    assert seqs, "no pokes"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"seq not contiguous: {seqs}"
