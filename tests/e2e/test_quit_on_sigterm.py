"""The app exits promptly on SIGTERM in every state (a session logout or an upgrade script
sends it), including the two where it used to hang until killed: waiting for sign-in with
the sign-in address dialog open (hospital mode, no browser), and showing the "could not
start" message. Real app processes against a real sandbox process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

pytestmark = pytest.mark.slow  # whole app processes on a real sandbox

EXIT_WITHIN_S = 5.0  # SIGTERM -> process gone; it used to take a SIGKILL after 15 s


class Lines:
    """Collects a child's text stream on a thread, so the test never blocks on a pipe."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline, (
                f"timed out waiting for {text!r}; got:\n{''.join(self.lines)[-3000:]}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("sandbox-data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wardsync", "sandbox", "--no-relay", "--no-simulator",
         "--patients", "4", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield info
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _app_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BROWSER", "DEFAULT_BROWSER")}
    env.update(QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path / "home"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_STATE_HOME=str(tmp_path / "state"),
               XDG_RUNTIME_DIR=str(tmp_path / "run"))
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    return env


def _terminate_and_time(app: subprocess.Popen[str]) -> tuple[int, float]:
    sent = time.monotonic()
    app.send_signal(signal.SIGTERM)
    try:
        code = app.wait(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        app.kill()
        app.wait()
        pytest.fail(f"the app ignored SIGTERM for {EXIT_WITHIN_S} s")
    return code, time.monotonic() - sent


def test_sigterm_while_waiting_for_sign_in_exits_promptly(
    sandbox_process: dict[str, str], tmp_path: Path
) -> None:
    app = subprocess.Popen(
        [sys.executable, "-m", "wardsync", "--fhir-url", sandbox_process["fhir_base"],
         "--set", f"realtime.endpoint={sandbox_process['ably_endpoint']}",
         "--set", f"realtime.token_url={sandbox_process['ably_token_url']}"],
        env=_app_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert app.stderr is not None
        log = Lines(app.stderr)
        # No browser on this machine: the app shows the sign-in address and waits.
        log.wait_for("showing the sign-in address", 60)
        code, took = _terminate_and_time(app)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert code == 0, "".join(log.lines)[-3000:]
    assert took < EXIT_WITHIN_S
    assert any("quit requested while starting" in line for line in log.lines)


def test_sigterm_while_the_could_not_start_message_is_shown_exits_promptly(
    tmp_path: Path,
) -> None:
    closed_port = 9  # discard: nothing listens on loopback here
    app = subprocess.Popen(
        [sys.executable, "-m", "wardsync", "--fhir-url", f"http://127.0.0.1:{closed_port}/fhir"],
        env=_app_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert app.stderr is not None
        log = Lines(app.stderr)
        log.wait_for("could not start", 60)
        time.sleep(0.5)  # the modal message box is up and running its own event loop
        code, took = _terminate_and_time(app)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert code == 1, "".join(log.lines)[-3000:]  # it did not start: still a failure
    assert took < EXIT_WITHIN_S


def test_sigterm_while_the_demo_server_starts_exits_and_leaves_no_child(tmp_path: Path) -> None:
    app = subprocess.Popen([sys.executable, "-m", "wardsync", "--demo"],
                           env=_app_env(tmp_path), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert app.stderr is not None
        log = Lines(app.stderr)
        log.wait_for("demo sandbox starting (pid", 60)
        line = next(x for x in log.lines if "demo sandbox starting (pid" in x)
        child = int(line.rsplit("(pid ", 1)[1].split(")")[0])
        code, took = _terminate_and_time(app)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert code == 0, "".join(log.lines)[-3000:]
    assert took < EXIT_WITHIN_S
    # The half-started demo server was stopped and reaped, not left running.
    assert not Path(f"/proc/{child}").exists()
