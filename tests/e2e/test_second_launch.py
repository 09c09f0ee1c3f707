"""Launching `wardsync` again while it runs opens a window in the running process: one
realtime connection per workstation, however often the icon is clicked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # whole app processes on a real sandbox


def events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_second_launch_opens_a_window_in_the_running_app(tmp_path: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path / "home"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = subprocess.Popen([sys.executable, "-m", "wardsync", "--demo"],
                             env=dict(env, WARDSYNC_METRICS_LOG=str(first_log)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(e["event"] == "rendered" for e in events(first_log)), 60,
                 "the first window")
        windows_before = {e["window"] for e in events(first_log) if e["event"] == "rendered"}
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "wardsync", "--demo"],
                                env=dict(env, WARDSYNC_METRICS_LOG=str(second_log)),
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr[-2000:]
        assert time.monotonic() - started < 20  # it handed over; it did not start a sandbox
        assert not any(e["event"] == "sandbox_ready" for e in events(second_log))
        wait_for(lambda: {e["window"] for e in events(first_log)
                          if e["event"] == "rendered"} - windows_before, 30,
                 "a new window in the running app")
        assert sum(e["event"] == "sandbox_ready" for e in events(first_log)) == 1
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    assert first.returncode == 0, first.stderr.read()[-2000:]
