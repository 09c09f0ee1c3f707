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
EXIT_WAIT_S = 10.0  # how long a child that closed its stdout gets to report its exit status

# The sandbox is an optional part of the product (the `sandbox` extra, docs/architecture.md
# §8): hospital installs may leave it out. `wardsync sandbox` exits with this status, and
# says this, when its libraries are missing; the app relays the same words.
SANDBOX_NOT_INSTALLED_EXIT = 3
SANDBOX_NOT_INSTALLED_MESSAGE = (
    "The demo needs the sandbox component, which is not installed here. Install it with "
    "pip install 'wardsync[sandbox]', or ask IT for a WardSync installation that includes it."
)


# The ready-line fields the app may write to its metrics log (`sandbox_ready`,
# docs/architecture.md §3): endpoints and the ward, never the keys and secrets beside them.
PUBLIC_READY_FIELDS = ("fhir_base", "ably_endpoint", "smart_config", "token_url",
                       "ably_token_url", "ward")


class SandboxStartError(RuntimeError):
    """The embedded sandbox did not start; the message says why in plain words."""


class SandboxNotInstalled(SandboxStartError):
    """The sandbox component (the `wardsync[sandbox]` extra) is not installed."""

    def __init__(self, missing: str = "") -> None:
        detail = f" (missing: {missing})" if missing else ""
        super().__init__(SANDBOX_NOT_INSTALLED_MESSAGE + detail)


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
        stdout = proc.stdout
        assert stdout is not None  # stdout=PIPE above
        log.info("demo sandbox starting (pid %s)", proc.pid)
        try:
            line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), timeout_s)
        except TimeoutError as exc:
            await _kill(proc)
            raise SandboxStartError("the demo server did not start in time") from exc
        except asyncio.CancelledError:
            await _kill(proc)  # the app quit while it started: no child left behind
            raise
        if not line:  # the child ended before it was ready: its exit status says why
            code: int | None
            try:
                code = await asyncio.wait_for(asyncio.to_thread(proc.wait), EXIT_WAIT_S)
            except TimeoutError:
                code = None
            await _kill(proc)
            if code == SANDBOX_NOT_INSTALLED_EXIT:
                raise SandboxNotInstalled()
            raise SandboxStartError(f"the demo server stopped before it was ready (exit "
                                    f"status {code}); run `wardsync sandbox` to see why")
        try:
            info = json.loads(line)
            if not isinstance(info, dict) or "fhir_base" not in info:
                raise ValueError("no ready line")
        except ValueError as exc:
            await _kill(proc)
            raise SandboxStartError("the demo server did not start properly") from exc
        log.info("demo sandbox ready (pid %s)", proc.pid)
        return cls(proc, info)

    @property
    def public_info(self) -> dict[str, Any]:
        """The ready line without its secrets: what `sandbox_ready` may carry."""
        return {k: self.info[k] for k in PUBLIC_READY_FIELDS if k in self.info}

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


async def _kill(proc: subprocess.Popen[str]) -> None:
    """End a child that will not become a usable sandbox, and close our ends of its pipes."""
    if proc.poll() is None:
        proc.kill()
        await asyncio.to_thread(proc.wait)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()
