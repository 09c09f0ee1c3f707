"""Single instance: a second launch (a real second process) hands its request to the running
one; the lock keeps a second listener out; a crashed instance's stale socket and lock are
taken over; bad input gets an error reply and never reaches the handler; names are per user
and per desktop session."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from wardsync.ui import single_instance as si
from wardsync.ui.single_instance import (
    SingleInstance,
    forward_or_listen,
    parse_message,
    session_server_name,
)

# The other process: `forward NAME JSON` prints what try_forward gave; `serve NAME` listens,
# prints each message it gets (a "quit" command ends it) and answers with its pid.
PEER = r"""
import json, os, sys
from PySide6.QtCore import QCoreApplication, QTimer
from wardsync.ui.single_instance import SingleInstance, forward_or_listen

mode, name = sys.argv[1], sys.argv[2]
app = QCoreApplication([])
inst = SingleInstance(name)
if mode == "forward":
    msg = json.loads(sys.argv[3])
    ok = inst.try_forward(msg, 3000)
    print(json.dumps({"forwarded": ok, "reply": inst.last_reply}), flush=True)
    sys.exit(0)
if mode == "launch":  # the whole launch decision, as the app makes it
    msg = json.loads(sys.argv[3])
    took = forward_or_listen(inst, msg, lambda m: None, retry_s=1.0)
    print(json.dumps({"forwarded": took, "listening": inst.listening}), flush=True)
    sys.exit(0)

def on_message(msg):
    print(json.dumps(msg), flush=True)
    if msg["cmd"] == "quit":
        QTimer.singleShot(0, app.quit)
    return {"pid": os.getpid()}

assert inst.listen(on_message), "lock taken"
print("listening", flush=True)
QTimer.singleShot(60_000, app.quit)
app.exec()
inst.close()
"""


def peer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", PEER, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def finish(proc: subprocess.Popen[str], timeout_s: float = 20.0) -> str:
    """Let the Qt loop run (so this process can serve) until the peer exits; its stdout."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        assert time.monotonic() < deadline, "peer process did not finish"
        await asyncio.sleep(0.02)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    return out


def read_line(proc: subprocess.Popen[str], timeout_s: float = 20.0) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    os.set_blocking(proc.stdout.fileno(), False)
    buf = ""
    while not buf.endswith("\n"):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "peer exited"
        assert time.monotonic() < deadline, "peer printed nothing"
        chunk = proc.stdout.readline()
        if chunk:
            buf += chunk
        else:
            time.sleep(0.02)
    return buf.strip()


@pytest.fixture
def name(tmp_path: Path) -> str:
    # A full path: the socket and its lock land in this test's own directory.
    return str(tmp_path / "wardsync-test.sock")


@pytest.fixture
def instances() -> Iterator[list[SingleInstance]]:
    made: list[SingleInstance] = []
    yield made
    for inst in made:
        inst.close()


def make(name: str, instances: list[SingleInstance]) -> SingleInstance:
    inst = SingleInstance(name)
    instances.append(inst)
    return inst


@pytest.fixture
def server_peer(name: str) -> Iterator[subprocess.Popen[str]]:
    proc = peer("serve", name)
    try:
        assert read_line(proc) == "listening"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# ---------------------------------------------------------------- two processes
async def test_a_second_launch_opens_a_window_in_the_running_process(
    name: str, instances: list[SingleInstance]
) -> None:
    received: list[dict[str, Any]] = []

    def on_message(msg: dict[str, Any]) -> dict[str, Any]:
        received.append(msg)
        return {"window": "ward-7"}

    first = make(name, instances)
    assert first.listen(on_message)
    out = await finish(peer("forward", name, json.dumps({"cmd": "open", "panel": "ward"})))
    assert json.loads(out) == {"forwarded": True, "reply": {"ok": True, "window": "ward-7"}}
    assert received == [{"cmd": "open", "panel": "ward"}]
    # The whole launch decision in a second process: it forwards and does not listen.
    out = await finish(peer("launch", name, json.dumps({"cmd": "open", "panel": "ward"})))
    assert json.loads(out) == {"forwarded": True, "listening": False}
    assert len(received) == 2


def test_the_running_process_holds_the_name_against_a_second_listener(
    name: str, instances: list[SingleInstance], server_peer: subprocess.Popen[str]
) -> None:
    second = make(name, instances)
    assert second.listen(lambda m: None) is False  # the lock is held by a live process
    assert not second.listening
    assert second.try_forward({"cmd": "open", "panel": "diagnostics"}, 3000)
    assert second.last_reply == {"ok": True, "pid": server_peer.pid}
    assert json.loads(read_line(server_peer)) == {"cmd": "open", "panel": "diagnostics"}
    assert forward_or_listen(second, {"cmd": "quit"}, lambda m: None) is True
    assert json.loads(read_line(server_peer)) == {"cmd": "quit"}
    assert server_peer.wait(10) == 0


async def test_a_crashed_instance_leaves_files_that_the_next_launch_takes_over(
    name: str, instances: list[SingleInstance], server_peer: subprocess.Popen[str]
) -> None:
    server_peer.send_signal(signal.SIGKILL)  # no clean-up at all, as in a crash
    server_peer.wait(10)
    assert Path(name).exists() and Path(f"{name}.lock").exists()

    launch = make(name, instances)
    started = time.monotonic()
    assert launch.try_forward({"cmd": "open", "panel": "ward"}, 3000) is False
    assert time.monotonic() - started < 1.0  # refused at once, not a timeout
    received: list[dict[str, Any]] = []
    assert forward_or_listen(launch, {"cmd": "open", "panel": "ward"}, received.append) is False
    assert launch.listening
    out = await finish(peer("forward", name, json.dumps({"cmd": "open", "panel": "ward"})))
    assert json.loads(out)["forwarded"] is True
    assert received == [{"cmd": "open", "panel": "ward"}]


async def test_a_stale_socket_file_without_a_lock_is_replaced(
    name: str, instances: list[SingleInstance]
) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(name)  # bound, never listening, then abandoned: the file stays
    stale.close()
    assert stat.S_ISSOCK(os.stat(name).st_mode)
    inst = make(name, instances)
    assert inst.try_forward({"cmd": "open"}, 1000) is False
    received: list[dict[str, Any]] = []
    assert inst.listen(received.append)
    out = await finish(peer("forward", name, json.dumps({"cmd": "open", "panel": "ward"})))
    assert json.loads(out)["forwarded"] is True and received


def test_close_gives_the_name_up(name: str, instances: list[SingleInstance]) -> None:
    first = make(name, instances)
    assert first.listen(lambda m: None)
    assert Path(name).exists() and Path(f"{name}.lock").exists()
    first.close()
    assert not Path(name).exists() and not Path(f"{name}.lock").exists()
    second = make(name, instances)
    assert second.listen(lambda m: None)


def test_only_the_user_can_reach_the_socket(name: str, instances: list[SingleInstance]) -> None:
    inst = make(name, instances)
    assert inst.listen(lambda m: None)
    mode = os.stat(name).st_mode
    assert stat.S_ISSOCK(mode)
    assert mode & 0o077 == 0, oct(mode)  # no access for group or others


# ---------------------------------------------------------------- protocol robustness
async def raw_exchange(name: str, payload: bytes, timeout_s: float = 5.0) -> bytes:
    """Talk to the server from a plain socket, letting the Qt loop serve meanwhile."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(name)
        sock.sendall(payload)
        out = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                await asyncio.sleep(0.02)
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        assert loop.is_running()
        return out
    finally:
        sock.close()


@pytest.mark.parametrize("payload, error", [
    (b"not json\n", "not a JSON line"),
    (b"[1, 2]\n", "not a JSON object"),
    (b'{"panel": "ward"}\n', 'missing "cmd"'),
    (b'{"cmd": ""}\n', 'missing "cmd"'),
    (b"\xff\xfe\n", "not a JSON line"),
    (b"x" * (si.MAX_MESSAGE_BYTES + 10), "message too large"),
])
async def test_malformed_messages_get_an_error_and_never_reach_the_handler(
    name: str, instances: list[SingleInstance], payload: bytes, error: str
) -> None:
    received: list[dict[str, Any]] = []
    inst = make(name, instances)
    assert inst.listen(received.append)
    reply = json.loads(await raw_exchange(name, payload))
    assert reply == {"ok": False, "error": error}
    assert received == []
    # ...and the server still answers the next launch.
    assert json.loads(await raw_exchange(name, b'{"cmd": "open"}\n')) == {"ok": True}
    assert received == [{"cmd": "open"}]


async def test_handler_errors_are_answered_and_the_server_survives(
    name: str, instances: list[SingleInstance]
) -> None:
    def on_message(msg: dict[str, Any]) -> None:
        if msg.get("panel") == "nonsense":
            raise ValueError("unknown panel 'nonsense'")
        if msg.get("panel") == "bug":
            raise RuntimeError("a bug in the app")

    inst = make(name, instances)
    assert inst.listen(on_message)
    bad = await raw_exchange(name, b'{"cmd": "open", "panel": "nonsense"}\n')
    assert json.loads(bad) == {"ok": False, "error": "unknown panel 'nonsense'"}
    bug = await raw_exchange(name, b'{"cmd": "open", "panel": "bug"}\n')
    assert json.loads(bug) == {"ok": False, "error": "internal error"}
    assert json.loads(await raw_exchange(name, b'{"cmd": "open"}\n')) == {"ok": True}


async def test_a_silent_client_is_dropped(
    name: str, instances: list[SingleInstance], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(si, "CLIENT_IDLE_TIMEOUT_MS", 200)
    inst = make(name, instances)
    assert inst.listen(lambda m: None)
    started = time.monotonic()
    assert await raw_exchange(name, b'{"cmd": "open"', timeout_s=5.0) == b""
    assert time.monotonic() - started < 3.0
    assert not inst._connections


def test_forward_with_nobody_listening_is_false(name: str, instances: list[SingleInstance]) -> None:
    inst = make(name, instances)
    assert inst.try_forward({"cmd": "open"}, 500) is False
    assert inst.last_reply is None
    with pytest.raises(ValueError):
        inst.try_forward({"cmd": "open", "pad": "x" * si.MAX_MESSAGE_BYTES})


def test_parse_message() -> None:
    assert parse_message(b'{"cmd": "open", "panel": "ward"}') == {"cmd": "open",
                                                                  "panel": "ward"}
    for bad in (b"", b"null", b'{"cmd": 1}', b"NaN"):
        with pytest.raises(ValueError):
            parse_message(bad)


# ---------------------------------------------------------------- names
def test_server_names_are_per_user_and_per_session() -> None:
    env = {"XDG_SESSION_ID": "3", "DISPLAY": ":0", "XDG_RUNTIME_DIR": "/run/user/1000"}
    a = session_server_name(environ=env, platform="linux", uid=1000)
    assert a.startswith("/run/user/1000/wardsync-1000-") and a.endswith(".sock")
    assert session_server_name(environ=env, platform="linux", uid=1000) == a  # stable
    other_user = session_server_name(environ={**env, "XDG_RUNTIME_DIR": "/run/user/1001"},
                                     platform="linux", uid=1001)
    other_session = session_server_name(environ={**env, "XDG_SESSION_ID": "7"},
                                        platform="linux", uid=1000)
    other_display = session_server_name(environ={**env, "DISPLAY": ":1"},
                                        platform="linux", uid=1000)
    assert len({a, other_user, other_session, other_display}) == 4
    # Without a runtime directory (or with a relative one, which XDG says to ignore) the
    # socket goes into the user's own directory in the temp directory, never a bare name
    # there (tests/ui/test_single_instance_other_user.py: the directory is made and checked).
    bare = session_server_name(environ={"DISPLAY": ":0", "XDG_RUNTIME_DIR": "run"},
                               platform="linux", uid=1000)
    assert os.path.dirname(bare) == os.path.join(tempfile.gettempdir(), "wardsync-1000")
    assert os.path.basename(bare).startswith("wardsync-1000-")
    assert bare != session_server_name(environ={"DISPLAY": ":0"}, platform="linux", uid=1001)
    assert session_server_name(environ=env, platform="linux", uid=1000,
                               directory="/home/a/.cache/wardsync/run").startswith(
                                   "/home/a/.cache/wardsync/run/wardsync-1000-")


def test_windows_names_cover_user_and_session() -> None:
    a = session_server_name(platform="win32", user="HOSP\\amber", session="2", environ={})
    b = session_server_name(platform="win32", user="HOSP\\basil", session="2", environ={})
    c = session_server_name(platform="win32", user="HOSP\\amber", session="3", environ={})
    assert len({a, b, c}) == 3 and all(n.startswith("wardsync-") for n in (a, b, c))
    assert "amber" not in a  # user names are not exposed in the pipe namespace
