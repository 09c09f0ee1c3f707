"""A second local user against the single-instance socket (docs/security/realtime-and-local.md §2).

The attacker is a real process running as another user (`nobody`), with real Unix sockets:
it squats the socket name a launch would use when `XDG_RUNTIME_DIR` is unset, gets a socket
into the name's path, or connects to the running instance. Playing another user needs root
(the test drops to `nobody` in the child process), as CI's container has.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from wardsync.ui.single_instance import (
    SingleInstance,
    SingleInstanceUnavailable,
    private_socket_dir,
    session_server_name,
    shared_temp_socket_dir,
)

NOBODY = 65534
# The other user cannot run this project's interpreter (it lives in a private directory): it
# runs the system's, with the standard library only.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or SYSTEM_PYTHON is None,
                                reason="acting as a second local user needs root and a "
                                       "system python3")

# The other user's process. `serve PATH [mkdir]`: listen on PATH (making its directory open
# to all first), print what each client sent, answer as if it were WardSync.
# `connect PATH`: send a launch's command to PATH and print the answer.
ATTACKER = r"""
import json, os, socket, sys
mode, path = sys.argv[1], sys.argv[2]
if mode == "connect":
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    got = b""
    try:  # the instance may hang up before the command is even sent
        s.sendall(b'{"cmd": "open", "panel": "ward"}\n')
        while chunk := s.recv(4096):
            got += chunk
    except (BrokenPipeError, ConnectionResetError, socket.timeout):
        pass
    print(json.dumps({"answer": got.decode("latin-1")}), flush=True)
    sys.exit(0)
if len(sys.argv) > 3:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.chmod(os.path.dirname(path), 0o777)
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen()
srv.settimeout(30)
print("listening", flush=True)
while True:
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        break
    conn.settimeout(2)
    try:
        data = conn.recv(65536)
    except (socket.timeout, ConnectionResetError):
        data = b""
    print(json.dumps({"got": data.decode("latin-1")}), flush=True)
    try:
        conn.sendall(b'{"ok": true}\n')
    except OSError:
        pass
    conn.close()
"""

# The victim's launch, as the app decides it (wardsync.ui.app): name, forward or listen.
LAUNCH = r"""
import json
from PySide6.QtCore import QCoreApplication
from wardsync.ui.single_instance import forward_or_listen, session_instance
app = QCoreApplication([])
inst = session_instance()
took = forward_or_listen(inst, {"cmd": "open", "panel": "ward"}, lambda m: None, retry_s=1.0)
print(json.dumps({"forwarded": took, "listening": inst.listening, "name": inst.name}),
      flush=True)
inst.close()
"""


def as_nobody(*args: str) -> subprocess.Popen[str]:
    assert SYSTEM_PYTHON is not None
    return subprocess.Popen([SYSTEM_PYTHON, "-c", ATTACKER, *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            user=NOBODY, group=NOBODY, extra_groups=[], cwd="/")


def wait_listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "listening", (line, proc.stderr.read() if proc.stderr else "")


def stop(proc: subprocess.Popen[str]) -> list[dict]:
    """End the attacker; what each client sent it."""
    proc.kill()
    out, _ = proc.communicate()
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A temp directory like /tmp: everyone may create entries (sticky, 1777)."""
    path = tempfile.mkdtemp(prefix="wardsync-shared-", dir="/tmp")
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="wardsync-private-", dir="/tmp")  # 0700, ours
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_squatted_socket_name_without_a_runtime_dir_neither_hears_nor_stops_the_launch(
        shared_tmp: str, private_dir: str) -> None:
    # `su` or ssh: no XDG_RUNTIME_DIR. The other user computes the name the launch will use
    # and listens there first, answering "ok" as WardSync would.
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env.update(TMPDIR=shared_tmp, DISPLAY=":7", XDG_SESSION_ID="4",
               XDG_CACHE_HOME=os.path.join(private_dir, "cache"))  # short: sun_path
    squatted = session_server_name(environ=env, uid=os.geteuid(),
                                   directory=shared_temp_socket_dir(os.geteuid(), shared_tmp))
    attacker = as_nobody("serve", squatted, "mkdir")
    try:
        wait_listening(attacker)
        victim = subprocess.run([sys.executable, "-c", LAUNCH], cwd=REPO, env=env, text=True,
                                capture_output=True, timeout=60)
    finally:
        heard = stop(attacker)
    assert victim.returncode == 0, victim.stderr[-2000:]
    result = json.loads(victim.stdout.strip().splitlines()[-1])
    # The launch did not hand over: it became the running instance, in a private directory.
    assert (result["forwarded"], result["listening"]) == (False, True)
    assert result["name"].startswith(os.path.join(private_dir, "cache", "wardsync", "run", ""))
    assert "refusing" in victim.stderr and "belongs to uid 65534" in victim.stderr
    assert all(h["got"] == "" for h in heard), heard  # it was told nothing


def test_a_socket_of_another_user_in_the_path_is_told_nothing(
        shared_tmp: str, private_dir: str, qapp) -> None:
    # However another user's socket got there, the launch checks who listens (SO_PEERCRED)
    # before it sends a byte.
    name = os.path.join(private_dir, "wardsync-test.sock")
    planted = os.path.join(shared_tmp, "planted.sock")
    attacker = as_nobody("serve", planted)
    try:
        wait_listening(attacker)
        os.rename(planted, name)
        inst = SingleInstance(name)
        try:
            assert inst.try_forward({"cmd": "open", "panel": "ward"}, 2000) is False
            assert inst.last_reply is None
            # The launch then takes the name over (the lock is free: no instance of ours).
            assert inst.listen(lambda m: None)
            assert stat.S_ISSOCK(os.lstat(name).st_mode) and os.lstat(name).st_uid == 0
        finally:
            inst.close()
    finally:
        heard = stop(attacker)
    assert all(h["got"] == "" for h in heard), heard


async def test_the_running_instance_hangs_up_on_another_user(private_dir: str, qapp) -> None:
    name = os.path.join(private_dir, "wardsync-test.sock")
    received: list[dict] = []
    inst = SingleInstance(name)
    try:
        assert inst.listen(received.append)
        # Loosen the directory and socket so the other user can even try (they are 0700).
        os.chmod(private_dir, 0o711)
        os.chmod(name, 0o777)
        attacker = as_nobody("connect", name)
        deadline = time.monotonic() + 20
        while attacker.poll() is None:  # let the Qt loop serve meanwhile
            assert time.monotonic() < deadline, "the other user's client did not finish"
            await asyncio.sleep(0.02)
        out, err = attacker.communicate()
        assert attacker.returncode == 0, err[-2000:]
        assert json.loads(out)["answer"] == ""  # no reply at all
        assert received == []
    finally:
        inst.close()


def test_the_private_directory_is_made_0700_and_a_foreign_or_open_one_is_refused(
        shared_tmp: str, tmp_path: Path) -> None:
    uid = os.geteuid()
    made = private_socket_dir({}, uid=uid, temp_dir=shared_tmp,
                              fallback=str(tmp_path / "fallback"))
    assert made == shared_temp_socket_dir(uid, shared_tmp)
    info = os.lstat(made)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == uid
    # Loosened by someone: refused, the private fallback in the user's home is used.
    os.chmod(made, 0o755)
    assert private_socket_dir({}, uid=uid, temp_dir=shared_tmp,
                              fallback=str(tmp_path / "fallback")) == str(tmp_path / "fallback")
    # A link in its place is refused too.
    os.rmdir(made)
    os.symlink(str(tmp_path), made)
    assert private_socket_dir({}, uid=uid, temp_dir=shared_tmp,
                              fallback=str(tmp_path / "fallback")) == str(tmp_path / "fallback")
    # `su` keeps the first user's XDG_RUNTIME_DIR: not ours, so not used.
    foreign = tmp_path / "run-of-another"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, NOBODY, NOBODY)
    os.unlink(made)
    assert private_socket_dir({"XDG_RUNTIME_DIR": str(foreign)}, uid=uid,
                              temp_dir=shared_tmp) == made
    # Nothing safe anywhere: the app runs standalone rather than talk to a stranger.
    os.chmod(made, 0o777)
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    with pytest.raises(SingleInstanceUnavailable):
        private_socket_dir({}, uid=uid, temp_dir=shared_tmp, fallback=str(not_a_dir / "x"))
