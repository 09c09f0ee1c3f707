"""The embedded sandbox as a child process of the desktop app (demo and training mode).

The app runs `wardsync sandbox` (the same executable, so it works from a source checkout and
from the installed bundle), reads its one JSON ready line and stops it on exit. The child
holds the read end of a pipe as stdin and stops when it closes, so it also ends when the app
is killed outright. The sandbox's
data lives in a temporary directory that it deletes when stopped: synthetic or not, nothing
that looks like a patient record is left on the workstation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class SandboxStartError(RuntimeError):
    """The embedded sandbox did not start; the message says why in plain words."""


def sandbox_command(*args: str) -> list[str]:
    """How to run `wardsync sandbox` with this very installation."""
    if getattr(sys, "frozen", False):  # PyInstaller bundle: the executable is wardsync
        return [sys.executable, "sandbox", *args]
    return [sys.executable, "-m", "wardsync", "sandbox", *args]


@dataclass
class SandboxProcess:
    """A running child sandbox and its ready-line details."""

    process: subprocess.Popen[str]
    info: dict[str, Any]

    @classmethod
    async def start(cls, *args: str, timeout_s: float = READY_TIMEOUT_S) -> SandboxProcess:
        env = dict(os.environ)
        env.pop("WARDSYNC_METRICS_LOG", None)  # the app's metrics are the app's own
        try:
            proc = await asyncio.to_thread(
                subprocess.Popen, sandbox_command("--stop-on-stdin-eof", *args),
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.PIPE,
                text=True, env=env,
            )
        except OSError as exc:
            raise SandboxStartError(f"the demo server could not be started ({exc})") from exc
        assert proc.stdout is not None  # stdout=PIPE
        try:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout_s)
            info = json.loads(line)
            if not isinstance(info, dict) or "fhir_base" not in info:
                raise ValueError("no ready line")
        except (TimeoutError, ValueError) as exc:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            raise SandboxStartError("the demo server did not start in time") from exc
        log.info("demo sandbox ready (pid %s)", proc.pid)
        return cls(proc, info)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait, then kill if it does not stop in time. Returns the exit code."""
        proc = self.process
        if proc.stdin is not None:
            proc.stdin.close()  # the sandbox stops on EOF too, if the signal is lost
        if proc.poll() is None:
            proc.terminate()  # SIGTERM on POSIX: the sandbox stops cleanly
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout_s)
            except TimeoutError:
                log.warning("demo sandbox did not stop in %.0f s; killing it", timeout_s)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode
