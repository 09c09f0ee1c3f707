"""Hospital mode as real processes, the way a site runs it: the sandbox playing the hospital's
FHIR + authorization server and Ably (`wardsync sandbox --no-relay`), `wardsync relay` beside
it, and the desktop app (`wardsync`, not `--demo`) configured for that server through its
documented `WARDSYNC_*` settings (docs/architecture.md §7), signing in through the browser.

The app is watched through its metrics log (docs/architecture.md §3.4), as the benchmarks
watch it, but while it runs: read on as it grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wardsync.infra.sandbox_process import SandboxProcess

REPO = Path(__file__).resolve().parents[2]
APP_STOP_TIMEOUT_S = 30.0


@dataclass
class SandboxChild:
    """`wardsync sandbox` started as a child process by the app's own `SandboxProcess`; its
    ready line under the names the relay test helpers read (`ready_info()`, `fhir_base`), so
    `tests.relay.relay_fixtures` drives it as it drives an in-process sandbox."""

    process: SandboxProcess

    def ready_info(self) -> dict[str, Any]:
        return self.process.info

    @property
    def fhir_base(self) -> str:
        return str(self.process.info["fhir_base"])


@contextlib.asynccontextmanager
async def sandbox_child(*args: str) -> AsyncIterator[SandboxChild]:
    child = await SandboxProcess.start(*args)
    try:
        yield SandboxChild(child)
    finally:
        await child.stop()


class HospitalApp:
    """`python -m wardsync` in hospital mode, offscreen, with a private home, config and
    runtime directory (so no layout, user file or running instance of anyone else applies),
    `settings` given as `WARDSYNC_*` environment variables and its metrics log in `work`."""

    def __init__(self, work: Path, settings: dict[str, str]) -> None:
        self.work = work
        self.metrics_path = work / "app.metrics.jsonl"
        self.stderr_path = work / "app.stderr.log"
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self._read_to = 0
        self._events: list[dict[str, Any]] = []
        self._rendered: dict[tuple[str, str], float] = {}

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARDSYNC_")}
        runtime = self.work / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env.update(
            QT_QPA_PLATFORM="offscreen", HOME=str(self.work / "home"),
            XDG_CONFIG_HOME=str(self.work / "config"), XDG_RUNTIME_DIR=str(runtime),
            PYTHONPATH=os.pathsep.join([str(REPO / "desktop"), str(REPO)]),
            WARDSYNC_METRICS_LOG=str(self.metrics_path),
        )
        env.update({f"WARDSYNC_{k.upper().replace('.', '_')}": v
                    for k, v in self.settings.items()})
        return env

    async def start(self) -> None:
        stderr = await asyncio.to_thread(open, self.stderr_path, "wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wardsync", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=stderr, cwd=str(REPO),
                env=self.environment())
        finally:
            stderr.close()  # the child has its own copy

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The app's metrics events so far, read on from where the last call stopped (a line
        the app is still writing is left for the next call)."""
        try:
            with open(self.metrics_path, "rb") as log:
                log.seek(self._read_to)
                chunk = log.read()
        except FileNotFoundError:
            chunk = b""
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._read_to += len(complete)
        for line in complete.decode("utf-8").splitlines():
            if line.strip():
                event = json.loads(line)
                self._events.append(event)
                if event["event"] == "rendered":
                    for ref, version in event.get("versions", {}).items():
                        self._rendered.setdefault((ref, str(version)), float(event["t_wall"]))
        return self._events if name is None else [e for e in self._events if e["event"] == name]

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    async def wait_until(self, predicate: Callable[[], object], timeout_s: float,
                         what: str) -> None:
        """Like tests.waiting.wait_for, failing early (with its stderr) if the app exits."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise AssertionError(f"the app exited ({self.proc.returncode}) before "
                                     f"{what}:\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.stderr_tail()}")
            await asyncio.sleep(0.05)

    def quiet_for(self, seconds: float) -> bool:
        """Nothing pulled or painted for `seconds`: the first load (the census, then every
        patient's vital signs, then the alert center's labs) is over."""
        busy = [e["t_wall"] for e in self.events() if e["event"] in ("pull_done", "rendered")]
        return bool(busy) and time.time() - max(busy) >= seconds

    def past_start_up(self, after_s: float) -> bool:
        """`after_s` have passed since the first window showed data (the app schedules its
        start-up garbage collection just before: ui/app.py FREEZE_AFTER_START_S)."""
        rendered = self.events("rendered")
        return bool(rendered) and time.time() - float(rendered[0]["t_wall"]) >= after_s

    def state(self) -> str | None:
        """The last connection state the app reported (`connection_state`)."""
        states = self.events("connection_state")
        return str(states[-1]["state"]) if states else None

    def rendered_at(self, ref: str, version: str) -> float | None:
        """When a window first showed this resource version (`rendered`, wall clock)."""
        self.events()
        return self._rendered.get((ref, version))

    async def stop(self) -> int:
        """SIGTERM, as a logout does: the app closes its windows and sync stack; exit 0."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), APP_STOP_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                raise
        return self.proc.returncode

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def settings_env_value(items: list[str]) -> str:
    """A list setting as its environment variable takes it: a TOML inline array."""
    return json.dumps(items)
