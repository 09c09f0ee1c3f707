"""What every benchmark script shares: the processes it runs, statistics, result files.

Three processes take part in every run, as on a real ward: the sandbox backend
(`wardsync sandbox`, started through the app's own `SandboxProcess`), the app side
(`benchmarks.app_process`, one per workstation under test) and the benchmark driver itself,
which writes to the FHIR server as a laboratory or bedside-device system would. The writer is
therefore never on the app's event loop, and times that cross processes use the wall clock
(`t_wall`, and the server's `meta.lastUpdated` as the commit time of a write).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from ably import AblyRealtime

from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.login import sign_in
from wardsync.auth.session import Session
from wardsync.core import codes
from wardsync.core.fhirtime import parse_instant
from wardsync.core.heartbeats import HEARTBEAT_MESSAGE_NAME
from wardsync.core.queries import PatientVitals
from wardsync.fhir.client import FhirClient
from wardsync.infra.sandbox_process import SandboxProcess
from wardsync.infra.settings import Settings, load_settings
from wardsync.sandbox.ward.devices import WardDevices
from wardsync.sandbox.ward.fhir_writer import FhirRestWriter
from wardsync.sandbox.ward.lab import LabSystem
from wardsync.sandbox.ward.observations import VitalSigns
from wardsync.station.services import DEMO_PASSWORD, DEMO_USER

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
APP_READY_TIMEOUT_S = 90.0
APP_STOP_TIMEOUT_S = 30.0
SNAPSHOT_TIMEOUT_S = 10.0
WRITER_HTTP_TIMEOUT_S = 10.0
NS_PER_MS = 1_000_000
REPLY_LINE_LIMIT = 64 * 1024 * 1024  # one reply line (every open search of 25 stations) is MBs
SAMPLE_INTERVAL_S = 1.0  # /proc sampling period of ResourceSampler
TRUTH_PAGE_SIZE = 200
TRUTH_MAX_PAGES = 1000  # a soak's vitals search runs to many pages; the truth reads them all
# The machine's load when the benchmark process started (this module is imported first thing):
# `write_result` runs at the end, so reading the load average there gives the end twice.
LOADAVG_AT_START = tuple(round(x, 2) for x in os.getloadavg())
# A normal electrolytes panel (values do not matter to timing; never critical, so routine).
NORMAL_LYTES = {codes.SODIUM.code: 139.0, codes.POTASSIUM.code: 4.1, codes.UREA.code: 5.2,
                codes.CREATININE.code: 80.0, codes.GLUCOSE.code: 5.5}


# ---------------------------------------------------------------------------- statistics
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def distribution(values: Iterable[float], places: int = 1) -> dict[str, Any]:
    """n, mean, p50, p95, p99, min and max of `values` (rounded), or just n=0."""
    data = sorted(values)
    if not data:
        return {"n": 0}

    def r(x: float) -> float:
        return round(x, places)

    return {
        "n": len(data),
        "mean": r(sum(data) / len(data)),
        "p50": r(percentile(data, 50)),
        "p95": r(percentile(data, 95)),
        "p99": r(percentile(data, 99)),
        "min": r(data[0]),
        "max": r(data[-1]),
    }


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float] | None:
    """Least-squares line through (xs, ys): slope, intercept and r² (None under 3 points)."""
    n = len(xs)
    if n < 3 or n != len(ys):
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2, "n": n}


def ratio(numerator: float, denominator: float, places: int = 2) -> float | None:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return None
    return round(numerator / denominator, places)


def commit_wall(resource: dict[str, Any]) -> float:
    """When the server committed this version: its `meta.lastUpdated`, epoch seconds.

    The sandbox stamps lastUpdated (microseconds) with the host clock at commit, the same
    clock the app's `t_wall` uses, so the two can be subtracted.
    """
    stamp = parse_instant((resource.get("meta") or {}).get("lastUpdated"))
    if stamp is None:
        raise ValueError("stored resource has no usable meta.lastUpdated")
    return stamp.timestamp()


@dataclass(frozen=True)
class Written:
    """One resource version a benchmark wrote, and when the server committed it."""

    ref: str
    version: str
    commit_wall: float
    patient: str

    @classmethod
    def of(cls, stored: dict[str, Any], patient: str) -> Written:
        return cls(f"{stored['resourceType']}/{stored['id']}", str(stored["meta"]["versionId"]),
                   commit_wall(stored), patient)


def random_vitals(rng: random.Random) -> VitalSigns:
    """A plausible round of bedside observations (values do not matter to timing)."""
    return VitalSigns(
        heart_rate=rng.randint(60, 110), respiratory_rate=rng.randint(12, 24),
        spo2=rng.randint(92, 99), temperature=round(rng.uniform(36.2, 38.4), 1),
        systolic=rng.randint(100, 150), diastolic=rng.randint(60, 90),
    )


# ---------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on (every result file carries it)."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "python": platform.python_version(),
        "os": platform.platform(),
        "loadavg_at_start": list(LOADAVG_AT_START),
        "packages": {d: _version(d) for d in ("pyside6-essentials", "qasync", "httpx", "ably",
                                              "aiohttp", "fhir.resources")},
        "git_commit": _git("rev-parse", "--short", "HEAD") or None,
        # Application files changed but not committed when this was measured (if any).
        "app_files_uncommitted": (_git("status", "--porcelain", "--", "desktop") or "")
        .splitlines(),
    }


def write_result(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    """Write `benchmarks/results/<name>.json` (or into `out_dir`) with the machine noted."""
    directory = out_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    body = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(), **payload}
    body["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path.write_text(json.dumps(body, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- sandbox
@contextlib.asynccontextmanager
async def running_sandbox(*args: str) -> AsyncIterator[dict[str, Any]]:
    """`wardsync sandbox <args>` as a child process; yields its JSON ready line."""
    sandbox = await SandboxProcess.start(*args)
    try:
        yield sandbox.info
    finally:
        await sandbox.stop()


def _relay_secret_files(info: dict[str, Any], data_dir: Path) -> tuple[Path, Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = data_dir / "client-secret"
    secret.write_text(info["relay_client"]["client_secret"])
    key = data_dir / "ably-key"
    key.write_text(info["ably_key"])
    for path in (secret, key):
        path.chmod(0o600)
    return secret, key


async def _until_subscribed(metrics_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(600):
            metrics = (await http.get(metrics_url)).text
            if any(line.startswith("wardsync_relay_subscriptions ")
                   and float(line.split()[1]) > 0 for line in metrics.splitlines()):
                return
            await asyncio.sleep(0.05)
    raise RuntimeError("wardsync relay made no Subscriptions")


@contextlib.asynccontextmanager
async def running_relay(info: dict[str, Any], data_dir: Path,
                        settings: dict[str, str] | None = None
                        ) -> AsyncIterator[dict[str, Any]]:
    """`wardsync relay` as a child process beside a `--no-relay` sandbox, consuming its FHIR
    Subscriptions (docs/relay.md); yields the relay's JSON ready line and its `pid`.

    `settings` are more `WARDSYNC_RELAY_*` variables (e.g. `SUBSCRIPTIONS_MODE`: "none",
    then the poll alone finds changes and no Subscription is waited for)."""
    secret, key = await asyncio.to_thread(_relay_secret_files, info, data_dir)
    extra = {f"WARDSYNC_RELAY_{k}": v for k, v in (settings or {}).items()}
    env = {**os.environ, "WARDSYNC_RELAY_RECONCILE_INITIAL_LOOKBACK_S": "0",
           "WARDSYNC_RELAY_RECONCILE_TYPES": "DiagnosticReport,Encounter,Observation,Task",
           "WARDSYNC_RELAY_RELAY_DEFAULT_WARD": info["ward"], **extra}
    wait_for_subscriptions = extra.get("WARDSYNC_RELAY_SUBSCRIPTIONS_MODE") != "none"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wardsync", "relay", "--config", os.devnull,
        "--fhir-base", info["fhir_base"], "--client-id", info["relay_client"]["client_id"],
        "--client-secret-file", str(secret), "--ably-key-file", str(key),
        "--ably-endpoint", info["ably_endpoint"], "--listen", "127.0.0.1:0",
        "--data-dir", str(data_dir / "state"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError("wardsync relay exited before it was ready")
        ready = {**json.loads(line), "pid": proc.pid}
        if wait_for_subscriptions:
            # Ready to serve; its Subscriptions are made just after: wait for them.
            await _until_subscribed(ready["metrics_url"])
        yield ready
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)


async def sandbox_stats(http: httpx.AsyncClient, info: dict[str, Any]) -> dict[str, Any]:
    """The sandbox's control endpoint: hub counters and its relay's poke counters."""
    resp = await http.get(f"{info['admin_url']}/stats",
                          headers={"Authorization": f"Bearer {info['admin_token']}"})
    resp.raise_for_status()
    return resp.json()


@dataclass
class WardWriters:
    """The sandbox's laboratory and bedside-device clients, with its own credentials.

    `reader` is a plain FHIR REST client with the device credentials, for timing reads.
    """

    http: httpx.AsyncClient
    lab: LabSystem
    devices: WardDevices
    reader: FhirRestWriter

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, info: dict[str, Any]) -> AsyncIterator[WardWriters]:
        async with httpx.AsyncClient(timeout=WRITER_HTTP_TIMEOUT_S) as http:
            common = {"fhir_base": info["fhir_base"], "token_url": info["token_url"],
                      "http": http}
            yield cls(
                http=http,
                lab=LabSystem(client_id=info["lab_client"]["client_id"],
                              client_secret=info["lab_client"]["client_secret"], **common),
                devices=WardDevices(client_id=info["devices_client"]["client_id"],
                                    client_secret=info["devices_client"]["client_secret"],
                                    **common),
                reader=FhirRestWriter(client_id=info["devices_client"]["client_id"],
                                      client_secret=info["devices_client"]["client_secret"],
                                      **common),
            )


class PokeWatcher:
    """A bare realtime subscriber on the ward channel (root key, real ably SDK).

    It records when each poke reached a client that does nothing else, in this process: the
    floor of the write -> poke path (the backend's commit, publisher and hub), so that the
    app's own `poke_received` can be split into "the backend took" and "the app took".
    """

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info
        self.received: dict[tuple[str, str], float] = {}  # (ref, versionId) -> t_wall
        self._realtime: AblyRealtime | None = None

    def _on_message(self, message: Any) -> None:
        if getattr(message, "name", None) == HEARTBEAT_MESSAGE_NAME:
            return  # the relay's liveness, not a poke
        data = message.data
        if isinstance(data, str | bytes):
            data = json.loads(data)
        if isinstance(data, dict):
            key = (f"{data.get('resourceType')}/{data.get('id')}", str(data.get("versionId")))
            self.received.setdefault(key, time.time())

    async def __aenter__(self) -> PokeWatcher:
        # Realtime takes host:port in `endpoint` (docs/architecture.md §4); the key's secret is
        # exchanged for a token, as plain-HTTP basic auth is refused by the SDK.
        self._realtime = AblyRealtime(key=self._info["ably_key"], use_token_auth=True,
                                      endpoint=self._info["ably_endpoint"] + "/", tls=False)
        channel = self._realtime.channels.get(f"ward:{self._info['ward']}")
        await channel.subscribe(self._on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._realtime is not None:
            await self._realtime.close()


# ---------------------------------------------------------------------------- app side
class AppProcessError(RuntimeError):
    """The app side did not start, answer or stop as the protocol says."""


@dataclass
class AppProcess:
    """Driver's handle on one `benchmarks.app_process` child (see its docstring)."""

    proc: asyncio.subprocess.Process
    metrics_path: Path
    report_path: Path
    stderr_path: Path
    ready: dict[str, Any] = field(default_factory=dict)

    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, info: dict[str, Any], work_dir: Path, name: str,
                  *args: str) -> AsyncIterator[AppProcess]:
        """Start the app side against the sandbox `info`, wait until it is ready."""
        async with cls.spawn(
            "benchmarks.app_process", work_dir, name,
            "--fhir-base", info["fhir_base"], "--ward", info["ward"],
            "--realtime-endpoint", info["ably_endpoint"],
            "--realtime-token-url", info["ably_token_url"], *args,
        ) as app:
            yield app

    @classmethod
    @contextlib.asynccontextmanager
    async def spawn(cls, module: str, work_dir: Path, name: str, *args: str,
                    ready_timeout_s: float = APP_READY_TIMEOUT_S) -> AsyncIterator[AppProcess]:
        """Run `python -m <module> --report <path> <args>` speaking this class's protocol
        (a `ready` line, then commands on stdin; see `benchmarks.app_process`), with its
        metrics log at `metrics_path`; wait until it is ready."""
        metrics_path, report_path, stderr_path = _fresh_paths(work_dir, name)
        env = dict(os.environ)
        env["WARDSYNC_METRICS_LOG"] = str(metrics_path)
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        cmd = [sys.executable, "-m", module, "--report", str(report_path), *args]
        stderr = await asyncio.to_thread(open, stderr_path, "wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=stderr, cwd=str(REPO), env=env, limit=REPLY_LINE_LIMIT,
            )
        finally:
            stderr.close()  # the child has its own copy
        app = cls(proc, metrics_path, report_path, stderr_path)
        try:
            app.ready = await app._read_line("ready", ready_timeout_s)
            yield app
        finally:
            await app._terminate()

    def _stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    async def _read_line(self, key: str, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError as exc:
            raise AppProcessError(f"app side gave no {key!r} line in {timeout_s:.0f} s:\n"
                                  f"{self._stderr_tail()}") from exc
        if not line:
            await self.proc.wait()
            raise AppProcessError(f"app side ended (exit {self.proc.returncode}) before "
                                  f"{key!r}:\n{self._stderr_tail()}")
        message = json.loads(line)
        if key not in message:
            raise AppProcessError(f"expected {key!r} from the app side, got {message}")
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        await self.proc.stdin.drain()

    async def snapshot(self, label: str) -> dict[str, Any]:
        """Ask the app side to record its counters now; returns its acknowledgement."""
        return await self.request({"cmd": "snapshot", "label": label}, "snapshot")

    async def request(self, command: dict[str, Any], reply: str,
                      timeout_s: float = SNAPSHOT_TIMEOUT_S) -> dict[str, Any]:
        """Send one command line and return the answer line, which must carry `reply`."""
        await self._send(command)
        return await self._read_line(reply, timeout_s)

    async def stop(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Stop the app side cleanly; returns its report and its metrics-log events."""
        await self._send({"cmd": "stop"})
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            code = await asyncio.wait_for(self.proc.wait(), APP_STOP_TIMEOUT_S)
        except TimeoutError as exc:
            raise AppProcessError("app side did not stop in time") from exc
        if code != 0:
            raise AppProcessError(f"app side exited with {code}:\n{self._stderr_tail()}")
        report = json.loads(await asyncio.to_thread(self.report_path.read_text, "utf-8"))
        return report, await asyncio.to_thread(read_metrics, self.metrics_path)

    async def _terminate(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), APP_STOP_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _fresh_paths(work_dir: Path, name: str) -> tuple[Path, Path, Path]:
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = (work_dir / f"{name}.metrics.jsonl", work_dir / f"{name}.report.json",
             work_dir / f"{name}.stderr.log")
    for path in paths:
        path.unlink(missing_ok=True)
    return paths


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a WARDSYNC_METRICS_LOG file."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@contextlib.contextmanager
def work_directory(keep: Path | None = None) -> Any:
    """Where app processes put their metrics logs and reports (temporary unless `keep`)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="wardsync-bench-") as tmp:
        yield Path(tmp)


# ---------------------------------------------------------------------------- app reports
def tick_gaps_ms(ticks: Sequence[int], start_ns: int | None = None,
                 end_ns: int | None = None) -> list[float]:
    """Gaps between consecutive heartbeat ticks (ms) whose later tick is in [start, end]."""
    return [gap for _, gap, _ in _gaps(ticks, None, start_ns, end_ns)]


def _gaps(ticks: Sequence[int], cpu: Sequence[int] | None, start_ns: int | None,
          end_ns: int | None) -> list[tuple[int, float, float | None]]:
    out = []
    for i in range(1, len(ticks)):
        cur = ticks[i]
        if (start_ns is None or cur >= start_ns) and (end_ns is None or cur <= end_ns):
            busy = (cpu[i] - cpu[i - 1]) / NS_PER_MS if cpu and len(cpu) > i else None
            out.append((cur, (cur - ticks[i - 1]) / NS_PER_MS, busy))
    return out


def loop_stalls(ticks: Sequence[int], start_ns: int | None = None, end_ns: int | None = None,
                interval_ms: float = 10.0, stall_over_ms: float = 100.0,
                cpu: Sequence[int] | None = None,
                gc_pauses: Sequence[Sequence[int]] | None = None) -> dict[str, Any]:
    """How regularly the app's 10 ms heartbeat ticked in a window: a gap between two ticks
    is how long the event loop (in the app: the GUI thread) could not run anything else.

    With `cpu` (the loop thread's CPU time at each tick) every long gap is also split into
    the loop's own work and time the OS did not run it (other processes on the machine);
    with `gc_pauses` ((start_ns, duration_ns, generation) of the app's garbage collections)
    the collections inside long gaps are added up.
    """
    gaps = _gaps(ticks, cpu, start_ns, end_ns)
    long = [(g, b) for _, g, b in gaps if g > stall_over_ms]
    out: dict[str, Any] = {
        "heartbeat_interval_ms": interval_ms,
        "tick_gap_ms": distribution(g for _, g, _ in gaps),
        "max_gap_ms": round(max(g for _, g, _ in gaps), 1) if gaps else None,
        "gaps_over_ms": stall_over_ms,
        "gaps_over": len(long),
    }
    if cpu is not None:
        # A gap where the thread ran less than half the time was mostly the machine's doing.
        out["gaps_over_mostly_own_work"] = sum(1 for g, b in long if b is not None
                                               and b >= g / 2)
        out["long_gaps_cpu_share"] = distribution(
            (b / g for g, b in long if b is not None), 2)
    if gc_pauses is not None:
        in_window = [p for p in gc_pauses
                     if (start_ns is None or p[0] >= start_ns)
                     and (end_ns is None or p[0] <= end_ns)]
        out["gc_pause_ms"] = distribution((p[1] / NS_PER_MS for p in in_window), 1)
        gc_in_long = []
        for end, gap, _ in gaps:
            if gap > stall_over_ms:
                begin = end - gap * NS_PER_MS
                gc_in_long.append(sum(p[1] for p in in_window
                                      if begin <= p[0] <= end) / NS_PER_MS)
        out["gc_ms_inside_long_gaps"] = [round(x, 1) for x in gc_in_long]
    return out


# ---------------------------------------------------------------------------- clinicians
def app_settings(overrides: dict[str, str] | None = None) -> Settings:
    """The app's built-in settings (no policy, user file or environment) plus `overrides`."""
    with tempfile.TemporaryDirectory() as tmp:
        none = Path(tmp) / "absent.toml"
        return load_settings(argv_overrides=overrides or {}, environ={}, policy_path=none,
                             user_path=none)


async def clinician_session(http: httpx.AsyncClient, fhir_base: str,
                            settings: Settings | None = None) -> Session:
    """The demo clinician signed in through the sandbox's SMART flow, as the app does it
    (`station.services.AppServices.sign_in` in demo mode): its own tokens, the app's scopes."""
    s = settings or app_settings()
    config, tokens = await sign_in(
        http, fhir_base=fhir_base, client_id=s["auth.client_id"], scopes=s["auth.scopes"],
        open_url=DemoBrowser(http, username=DEMO_USER, password=DEMO_PASSWORD),
    )
    return Session(tokens, http=http, config=config, client_id=s["auth.client_id"])


SearchSpec = tuple[str, tuple[tuple[str, str], ...]]  # (resource type, params) of one search


def search_spec(resource_type: str, params: Iterable[Sequence[str]]) -> SearchSpec:
    """A hashable, JSON-friendly name for one FHIR search (a query key's `Search`)."""
    return resource_type, tuple((str(k), str(v)) for k, v in params)


def unwindowed(spec: SearchSpec) -> SearchSpec:
    """A search without the window of a time-series query (`QueryCache.searches` adds it with
    the start of the window at that moment): names the query's search whatever the moment."""
    rtype, params = spec
    return rtype, tuple(p for p in params if p[0] != PatientVitals.series_param)


async def server_truth(fhir: FhirClient, searches: Iterable[SearchSpec]
                       ) -> dict[SearchSpec, dict[str, str]]:
    """ref -> versionId of everything the server returns now for each search (matches and
    `_include`s, every page): what a workstation holding that query must hold once fresh."""
    out: dict[SearchSpec, dict[str, str]] = {}
    for spec in dict.fromkeys(searches):
        rtype, params = spec
        result = await fhir.search(rtype, [*params, ("_count", str(TRUTH_PAGE_SIZE))],
                                   max_pages=TRUTH_MAX_PAGES)
        if result.invalid:
            raise ValueError(f"the server returned {len(result.invalid)} invalid entries "
                             f"for {rtype}")
        out[spec] = {f"{r['resourceType']}/{r['id']}": str(r["meta"]["versionId"])
                     for r in result.resources}
    return out


# ---------------------------------------------------------------------------- /proc sampling
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_cpu_rss(pid: int) -> tuple[float, int] | None:
    """(user + system CPU seconds, resident set in bytes) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    # Fields after "pid (comm) "; comm may hold spaces, so split after its closing ")".
    rest = stat.rsplit(")", 1)[1].split()
    cpu_s = (int(rest[11]) + int(rest[12])) / CLOCK_TICKS_PER_S  # utime, stime (proc(5))
    return cpu_s, int(statm.split()[1]) * PAGE_BYTES


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(ticks)
    return (total - ticks[3] - ticks[4]) / CLOCK_TICKS_PER_S, total / CLOCK_TICKS_PER_S


def cpu_pressure_us() -> int | None:
    """Microseconds, since boot, in which some runnable task waited for a CPU (Linux PSI,
    /proc/pressure/cpu "some"): how much the machine's processes queue for its cores."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class ResourceSampler:
    """Samples the CPU time and memory of named processes, and the machine's CPU and load,
    every `interval_s` while it runs (an async context manager owning one task).

    `summary(t0, t1)` reports, per process, the CPU it used in [t0, t1] (percent of one
    core: 100 is one core fully busy) with the distribution of its per-interval CPU, and its
    RSS at the start, end and peak; for the machine, the busy share of all cores and the
    1-minute load average (other work on a shared machine shows up here), and the share of
    time some task waited for a CPU (PSI).
    """

    interval_s: float = SAMPLE_INTERVAL_S
    pids: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    machine: list[tuple[float, float, float, float, int | None]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.samples.setdefault(name, [])
        self._sample_one(name, pid, time.monotonic())

    def forget(self, name: str) -> None:
        self.pids.pop(name, None)

    def _sample_one(self, name: str, pid: int, now: float) -> None:
        got = process_cpu_rss(pid)
        if got is not None:
            self.samples[name].append((now, got[0], got[1]))

    def sample(self) -> None:
        now = time.monotonic()
        for name, pid in list(self.pids.items()):
            self._sample_one(name, pid, now)
        cpu = machine_cpu()
        if cpu is not None:
            self.machine.append((now, cpu[0], cpu[1], os.getloadavg()[0], cpu_pressure_us()))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> ResourceSampler:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="proc sampler")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def summary(self, t0: float, t1: float, names: Iterable[str] | None = None
                ) -> dict[str, Any]:
        """Per process and for the machine, over monotonic [t0, t1]."""
        out: dict[str, Any] = {}
        for name in names if names is not None else self.samples:
            rows = [r for r in self.samples.get(name, ()) if t0 <= r[0] <= t1]
            if len(rows) < 2:
                out[name] = {"samples": len(rows)}
                continue
            span = rows[-1][0] - rows[0][0]
            per_interval = [100.0 * (b[1] - a[1]) / (b[0] - a[0])
                            for a, b in itertools.pairwise(rows) if b[0] > a[0]]
            mib = [r[2] / 2**20 for r in rows]
            out[name] = {
                "samples": len(rows),
                "cpu_percent_of_one_core": round(100.0 * (rows[-1][1] - rows[0][1]) / span, 1)
                if span > 0 else None,
                "cpu_percent_per_interval": distribution(per_interval, 1),
                "rss_mib": {"start": round(mib[0], 1), "end": round(mib[-1], 1),
                            "max": round(max(mib), 1)},
            }
        rows = [r for r in self.machine if t0 <= r[0] <= t1]
        if len(rows) >= 2:
            busy, total = rows[-1][1] - rows[0][1], rows[-1][2] - rows[0][2]
            first, last = rows[0], rows[-1]
            out["machine"] = {
                "cpu_busy_percent_of_all_cores": round(100.0 * busy / total, 1)
                if total else None,
                "cores": os.cpu_count(),
                "loadavg_1min": distribution((r[3] for r in rows), 2),
                "some_task_waiting_for_cpu_percent":
                    round((last[4] - first[4]) / 1e4 / (last[0] - first[0]), 1)
                    if first[4] is not None and last[4] is not None and last[0] > first[0]
                    else None,
            }
        return out
