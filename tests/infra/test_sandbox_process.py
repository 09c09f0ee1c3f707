"""The demo sandbox child never outlives the app, however the app ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.sandbox_absent import env_without_sandbox
from wardsync.infra.sandbox_process import (
    PUBLIC_READY_FIELDS,
    SANDBOX_NOT_INSTALLED_MESSAGE,
    SandboxNotInstalled,
    SandboxProcess,
)

PARENT = """
import asyncio
from wardsync.infra.sandbox_process import SandboxProcess

async def main():
    sb = await SandboxProcess.start("--no-simulator")
    print(sb.process.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's adopter) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_killed_app_takes_its_sandbox_with_it() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the parent
    parent.wait(timeout=10)
    deadline = time.monotonic() + 15
    while _alive(child_pid):
        assert time.monotonic() < deadline, "the sandbox outlived its killed parent"
        time.sleep(0.1)


async def test_orderly_stop_returns_zero() -> None:
    sb = await SandboxProcess.start("--no-simulator")
    assert sb.running and sb.info["ward"] == "ward-7a"
    # What the metrics log may carry: endpoints and the ward, none of the ready line's secrets.
    assert sb.public_info == {k: sb.info[k] for k in PUBLIC_READY_FIELDS}
    secrets = [sb.info["ably_key"], sb.info["admin_token"], sb.info["lab_client"]["client_secret"]]
    assert not any(s in json.dumps(sb.public_info) for s in secrets)
    assert await sb.stop() == 0
    assert not sb.running


async def test_a_missing_sandbox_extra_is_reported_in_words(tmp_path, monkeypatch) -> None:
    # The app starts its demo sandbox as a child; without the extra the child exits at once
    # and the app gets the install hint (shown in its "could not start" dialog), not a timeout.
    monkeypatch.setenv("PYTHONPATH", env_without_sandbox(tmp_path)["PYTHONPATH"])
    t0 = time.monotonic()
    with pytest.raises(SandboxNotInstalled) as caught:
        await SandboxProcess.start("--no-simulator", timeout_s=30)
    assert str(caught.value) == SANDBOX_NOT_INSTALLED_MESSAGE
    assert time.monotonic() - t0 < 15  # well before the ready timeout
