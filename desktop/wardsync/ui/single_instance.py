"""One WardSync process per user and desktop session: a second launch opens a window in it.

Each process owns one realtime connection and one sign-in (docs/architecture.md §1), so launching
`wardsync` again while it runs must not start a second one. The first process listens on a
local socket (QLocalServer: a Unix domain socket, a named pipe on Windows); a later launch
connects, sends one message and exits once the running process has answered.

Who talks to whom. The server name is derived from the user and the desktop session
(`session_server_name`): the user id plus a hash of the login session and display on Unix,
the user and the Terminal Services session on Windows. On Unix the socket and its lock live in
a directory only the user can enter (`private_socket_dir`): `$XDG_RUNTIME_DIR` (XDG Base
Directory spec) when it is set and really the user's, else `<temp>/wardsync-<uid>`, which this
process creates 0700 and checks (a directory, not a link, owned by the user, no access for
anyone else), else `<cache>/run` in the user's home. A name in the shared temp directory can be
taken by anyone first (`su`, ssh and some kiosks leave `XDG_RUNTIME_DIR` unset): such a
directory is refused, never used. Before sending anything, a launch checks that the process
listening is the same user (SO_PEERCRED), and the running instance drops connections from any
other user; `UserAccessOption` restricts the socket file to the user as well. On Windows the
named pipe's ACL (`UserAccessOption`) admits the user only. So two clinicians signed in on one
workstation (fast user switching, or a second seat) never reach each other's process, and
another local user can neither answer a launch in the app's place nor block it
(docs/security/realtime-and-local.md §2).

Who is first. A `QLockFile` beside the socket decides: the process holding it is the running
instance. After a crash the lock and the socket file stay behind; `QLockFile` sees that the
process named in the lock is gone (stale lock time 0: only a dead PID makes a lock stale,
never its age, as the running instance holds it for days), and the new first process then
removes the stale socket file before listening.

Protocol: one UTF-8 JSON object per line in each direction, at most `MAX_MESSAGE_BYTES`.
The launch sends e.g. `{"cmd": "open", "panel": "ward"}`; the running process answers
`{"ok": true}` (plus anything the handler returns) or `{"ok": false, "error": "..."}` and
closes the connection. Malformed input gets an error reply and never reaches the handler.

Launch sequence (see `forward_or_listen`): forward to a running instance; if none answers,
take the lock and listen; if the lock is held by an instance still starting up, try
forwarding again for a few seconds; if single-instance cannot work here at all, run
standalone (logged) rather than refuse to start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket as pysocket
import stat
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QDir, QLockFile, QObject, QTimer
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger(__name__)

APP_ID = "wardsync"
MAX_MESSAGE_BYTES = 64 * 1024  # a command is a few dozen bytes; anything big is not ours
FORWARD_TIMEOUT_MS = 2000  # how long a second launch waits for the running one to answer
CLIENT_IDLE_TIMEOUT_MS = 5000  # a connection that sends no complete line is dropped
STARTUP_RETRY_S = 5.0  # how long to keep forwarding to an instance that holds the lock
STARTUP_RETRY_INTERVAL_S = 0.2

Message = dict[str, Any]
MessageHandler = Callable[[Message], Mapping[str, Any] | None]


class SingleInstanceUnavailable(OSError):
    """The lock or the socket cannot be used here (permissions, an odd temp directory)."""


def check_private_dir(path: str, uid: int, *, create: bool) -> None:
    """Make sure `path` is a directory only `uid` can use; create it 0700 if `create` and it
    is missing. SingleInstanceUnavailable (saying why) otherwise."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SingleInstanceUnavailable(f"cannot create {path}: {exc.strerror}") from exc
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise SingleInstanceUnavailable(f"cannot use {path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise SingleInstanceUnavailable(f"{path} is not a directory")
    if info.st_uid != uid:
        raise SingleInstanceUnavailable(f"{path} belongs to uid {info.st_uid}, not {uid}")
    if info.st_mode & 0o077:
        raise SingleInstanceUnavailable(
            f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):o})")


def _runtime_dir(env: Mapping[str, str]) -> str | None:
    runtime = env.get("XDG_RUNTIME_DIR", "")
    # XDG Base Directory spec: a relative $XDG_RUNTIME_DIR is invalid and must be ignored.
    return runtime if runtime and os.path.isabs(runtime) else None


def shared_temp_socket_dir(uid: int, temp_dir: str | None = None) -> str:
    """`<temp>/wardsync-<uid>`: the socket directory when there is no runtime directory."""
    return os.path.join(temp_dir or tempfile.gettempdir(), f"{APP_ID}-{uid}")


def private_socket_dir(environ: Mapping[str, str] | None = None, *, uid: int | None = None,
                       temp_dir: str | None = None, fallback: str | None = None) -> str:
    """The directory for this user's socket and lock (Unix; see the module docstring):
    `$XDG_RUNTIME_DIR` if it is the user's and private, else `<temp>/wardsync-<uid>` made
    and checked here, else `fallback` (default: `run` in the user's cache directory).
    SingleInstanceUnavailable if none of them is safe."""
    env = os.environ if environ is None else environ
    user_id = os.geteuid() if uid is None else uid
    reasons: list[str] = []
    runtime = _runtime_dir(env)
    if runtime is not None:
        try:
            check_private_dir(runtime, user_id, create=False)
            return runtime
        except SingleInstanceUnavailable as exc:  # e.g. `su` kept the other user's
            reasons.append(str(exc))
    shared = shared_temp_socket_dir(user_id, temp_dir)
    try:
        check_private_dir(shared, user_id, create=True)
        return shared
    except SingleInstanceUnavailable as exc:
        log.warning("single instance: refusing %s (%s)", shared, exc)
        reasons.append(str(exc))
    if fallback is None:
        from wardsync.infra.paths import user_cache_dir
        fallback = str(user_cache_dir(env) / "run")
    try:
        os.makedirs(os.path.dirname(fallback), mode=0o700, exist_ok=True)
        check_private_dir(fallback, user_id, create=True)
        return fallback
    except (OSError, SingleInstanceUnavailable) as exc:
        reasons.append(str(exc))
    raise SingleInstanceUnavailable("no private directory for the socket: " + "; ".join(reasons))


def peer_uid(fd: int) -> int | None:
    """The uid of the process at the other end of the connected Unix socket `fd` (Linux
    SO_PEERCRED, socket(7)); None where the platform does not tell."""
    if fd < 0 or not hasattr(pysocket, "SO_PEERCRED"):
        return None
    sock = pysocket.socket(fileno=os.dup(fd))
    try:
        creds = sock.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_PEERCRED,
                                struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        sock.close()
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def _same_user(fd: int) -> bool:
    uid = peer_uid(fd)
    return uid is None or uid == os.geteuid()


def _windows_session_id() -> int | None:
    if sys.platform != "win32":  # ctypes.windll exists on Windows only
        return None
    import ctypes
    from ctypes import wintypes

    session = wintypes.DWORD()
    # kernel32!ProcessIdToSessionId: the Terminal Services session of this process.
    ok = ctypes.windll.kernel32.ProcessIdToSessionId(os.getpid(), ctypes.byref(session))
    return int(session.value) if ok else None


def session_server_name(
    app_id: str = APP_ID,
    *,
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
    uid: int | None = None,
    user: str | None = None,
    session: str | None = None,
    directory: str | None = None,
) -> str:
    """The server name for this user and desktop session (pass values to compute another's).

    Unix: `<directory>/wardsync-<uid>-<hash>.sock`, where the directory is `directory`
    (`private_socket_dir` finds and checks it), else `$XDG_RUNTIME_DIR` when it is set and
    absolute, else `<temp>/wardsync-<uid>` (never a bare name in the shared temp). The hash
    covers the login session (`XDG_SESSION_ID`) and the display (`DISPLAY`,
    `WAYLAND_DISPLAY`), so a second seat or a nested session gets its own instance. Windows:
    `wardsync-<hash of domain, user and session id>`.
    """
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    if plat.startswith("win"):
        who = user if user is not None else (
            f"{env.get('USERDOMAIN', '')}\\{env.get('USERNAME', '')}")
        sess = session if session is not None else str(_windows_session_id())
        digest = hashlib.sha256(f"{who}|{sess}".encode()).hexdigest()[:16]
        return f"{app_id}-{digest}"
    user_id = os.getuid() if uid is None else uid
    sess = session if session is not None else "|".join(
        env.get(v, "") for v in ("XDG_SESSION_ID", "DISPLAY", "WAYLAND_DISPLAY"))
    digest = hashlib.sha256(f"{user_id}|{sess}".encode()).hexdigest()[:16]
    name = f"{app_id}-{user_id}-{digest}"
    folder = directory or _runtime_dir(env) or shared_temp_socket_dir(user_id)
    return os.path.join(folder, f"{name}.sock")



def _encode(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def parse_message(line: bytes) -> Message:
    """Decode one protocol line; ValueError with a short reason if it is not a command."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not a JSON line") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if not isinstance(obj.get("cmd"), str) or not obj["cmd"]:
        raise ValueError('missing "cmd"')
    return obj


class _Connection:
    """One client of the server: read one line, answer it, close.

    A plain object, not a QObject: the socket (a child of the server) is the only Qt object
    it owns, and `deleteLater` runs only on the socket, so no Qt parent ever deletes an object
    with a deferred deletion still pending.
    """

    def __init__(self, socket: QLocalSocket, handler: MessageHandler,
                 on_done: Callable[[_Connection], None]) -> None:
        self._socket = socket
        self._handler = handler
        self._on_done = on_done
        self._buffer = b""
        self._answered = False
        self._done = False
        self._idle = QTimer(socket)
        self._idle.setSingleShot(True)
        self._idle.timeout.connect(self._on_idle_timeout)
        self._idle.start(CLIENT_IDLE_TIMEOUT_MS)
        socket.readyRead.connect(self._on_socket_ready_read)
        socket.disconnected.connect(self._on_socket_disconnected)
        self._on_socket_ready_read()  # bytes may have arrived before the signal was connected

    def _on_socket_ready_read(self) -> None:
        if self._answered or self._done:
            return
        self._buffer += bytes(self._socket.readAll().data())
        if b"\n" in self._buffer:
            line = self._buffer.split(b"\n", 1)[0]
            self._reply(self._handle(line))
        elif len(self._buffer) > MAX_MESSAGE_BYTES:
            self._reply({"ok": False, "error": "message too large"})

    def _handle(self, line: bytes) -> Mapping[str, Any]:
        if len(line) > MAX_MESSAGE_BYTES:
            return {"ok": False, "error": "message too large"}
        try:
            message = parse_message(line)
        except ValueError as exc:
            log.warning("single instance: rejected a message: %s", exc)
            return {"ok": False, "error": str(exc)}
        try:
            result = self._handler(message)
        except ValueError as exc:  # the handler's way of saying "bad request"
            return {"ok": False, "error": str(exc)}
        except Exception:
            # The running app must survive whatever a second launch asks for.
            log.exception("single instance: handling %r failed", message.get("cmd"))
            return {"ok": False, "error": "internal error"}
        return {"ok": True, **(result or {})}

    def _reply(self, reply: Mapping[str, Any]) -> None:
        self._answered = True
        self._idle.stop()
        self._socket.write(QByteArray(_encode(reply)))
        self._socket.flush()
        self._socket.disconnectFromServer()  # sends what is buffered, then closes

    def abort(self) -> None:
        """Drop the client now (the server is closing)."""
        if not self._done:
            self._socket.abort()
            self._finish()

    def _on_idle_timeout(self) -> None:
        log.warning("single instance: a client sent no complete message; dropping it")
        self._socket.abort()
        self._finish()

    def _on_socket_disconnected(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._idle.stop()
        self._socket.deleteLater()
        self._on_done(self)


class SingleInstance(QObject):
    """The single-instance channel for server `name` (see `session_server_name`).

    A second launch calls `try_forward`; the first process calls `listen`. `close` (or
    process exit) gives the lock and the name up.
    """

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.last_reply: Message | None = None
        self._server: QLocalServer | None = None
        self._connections: set[_Connection] = set()  # owned until each one finishes
        self._lock = QLockFile(self.lock_path)
        # 0: only a dead owner makes the lock stale. The default (30 s) would let a later
        # launch steal the lock of an instance that has simply been running for a while.
        self._lock.setStaleLockTime(0)

    @property
    def lock_path(self) -> str:
        """The lock file: beside the socket, or in the temp directory for a bare name."""
        if os.path.isabs(self.name):
            return f"{self.name}.lock"
        return os.path.join(QDir.tempPath(), f"{self.name}.lock")

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.isListening()

    # ------------------------------------------------------------------ second launch
    def try_forward(self, message: Mapping[str, Any],
                    timeout_ms: int = FORWARD_TIMEOUT_MS) -> bool:
        """Send `message` to the running instance; True if it answered (blocking, bounded).

        True means a running instance exists and replied: this process must not start
        another. The reply (`{"ok": true}` or `{"ok": false, "error": ...}`) is kept in
        `last_reply`. False: nobody is listening (or nobody answered within `timeout_ms`).
        """
        self.last_reply = None
        data = _encode(message)
        if len(data) > MAX_MESSAGE_BYTES:
            raise ValueError("message too large for the single-instance protocol")
        deadline = time.monotonic() + timeout_ms / 1000.0

        def left_ms() -> int:
            return max(0, int((deadline - time.monotonic()) * 1000))

        socket = QLocalSocket()
        try:
            socket.connectToServer(self.name)
            if not socket.waitForConnected(left_ms()):
                return False
            if not _same_user(int(socket.socketDescriptor())):
                # Another user's process answers under our name: tell it nothing.
                log.warning("single instance: %s is served by another user; ignoring it",
                            self.name)
                return False
            socket.write(QByteArray(data))
            if not socket.waitForBytesWritten(left_ms()):
                return False
            buffer = b""
            while b"\n" not in buffer and len(buffer) <= MAX_MESSAGE_BYTES:
                if socket.bytesAvailable() == 0 and not socket.waitForReadyRead(left_ms()):
                    break
                buffer += bytes(socket.readAll().data())
            line = buffer.split(b"\n", 1)[0] if b"\n" in buffer else b""
            try:
                reply = json.loads(line.decode("utf-8")) if line else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                reply = None
            if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
                log.warning("single instance: no valid answer from %s", self.name)
                return False
            self.last_reply = reply
            return True
        finally:
            socket.abort()

    # ------------------------------------------------------------------ first launch
    def listen(self, on_message: MessageHandler) -> bool:
        """Become the running instance: True once listening, False if another holds the lock.

        `on_message(message)` runs on the Qt thread for each valid command; it returns extra
        reply fields (or None) and raises ValueError to refuse a request. Raises
        `SingleInstanceUnavailable` if the lock or the socket cannot be used at all.
        """
        if self.listening:
            return True
        Path(self.lock_path).parent.mkdir(parents=True, exist_ok=True)
        if not self._lock.tryLock(0):
            if self._lock.error() is QLockFile.LockError.LockFailedError:
                return False  # a live instance holds it
            raise SingleInstanceUnavailable(
                f"cannot create the single-instance lock {self.lock_path} "
                f"({self._lock.error().name})")
        # We hold the lock, so any socket file left under this name belongs to a crashed
        # instance: remove it, or listen() fails with AddressInUseError.
        QLocalServer.removeServer(self.name)
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            error = server.errorString()
            server.setParent(None)  # Python owns it again and frees it with `server`
            self._lock.unlock()
            raise SingleInstanceUnavailable(f"cannot listen on {self.name}: {error}")
        server.newConnection.connect(lambda: self._on_server_new_connection(on_message))
        self._server = server
        log.info("single instance: listening on %s", server.fullServerName())
        return True

    def _on_server_new_connection(self, on_message: MessageHandler) -> None:
        assert self._server is not None
        while self._server.hasPendingConnections():
            socket = self._server.nextPendingConnection()
            if socket is not None and not _same_user(int(socket.socketDescriptor())):
                log.warning("single instance: refused a connection from another user")
                socket.abort()
                socket.deleteLater()
            elif socket is not None:
                self._connections.add(
                    _Connection(socket, on_message, self._connections.discard))

    def close(self) -> None:
        """Stop listening and give up the name and the lock (idempotent)."""
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            self._server.close()  # also removes the socket file on Unix
            self._server = None
        if self._lock.isLocked():
            self._lock.unlock()


def forward_or_listen(
    instance: SingleInstance,
    message: Mapping[str, Any],
    on_message: MessageHandler,
    *,
    timeout_ms: int = FORWARD_TIMEOUT_MS,
    retry_s: float = STARTUP_RETRY_S,
) -> bool:
    """The launch decision. True: a running instance took `message`, so exit now.

    False: this process is the running instance now (listening), or single-instance cannot
    work here and it runs standalone (logged). Blocking, for use before the event loop runs.
    """
    if instance.try_forward(message, timeout_ms):
        return True
    deadline = time.monotonic() + retry_s
    while True:
        try:
            if instance.listen(on_message):
                return False
        except SingleInstanceUnavailable as exc:
            log.warning("single instance unavailable, running standalone: %s", exc)
            return False
        # Another process holds the lock: it is starting and not listening yet.
        if instance.try_forward(message, timeout_ms):
            return True
        if time.monotonic() >= deadline:
            log.warning("an instance holds %s but does not answer; running standalone",
                        instance.lock_path)
            return False
        time.sleep(STARTUP_RETRY_INTERVAL_S)


def session_instance() -> SingleInstance | None:
    """The single-instance channel of this user and session, in a checked private directory;
    None (logged) where no safe directory exists: the app then runs standalone."""
    directory: str | None = None
    if not sys.platform.startswith("win"):
        try:
            directory = private_socket_dir()
        except SingleInstanceUnavailable as exc:
            log.warning("single instance unavailable, running standalone: %s", exc)
            return None
    return SingleInstance(session_server_name(directory=directory))
