"""A private PostgreSQL cluster for tests: Debian's `postgresql` package (installed by
`./dev test`), `initdb` + `pg_ctl` from /usr/lib/postgresql/*/bin, a temp directory, a free
loopback port, password (SCRAM) authentication, no Unix socket. As root the cluster runs as the
`postgres` user (initdb refuses root); otherwise as the current user."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

USER = "wardsync"
DATABASE = "wardsync_relay"


def pg_bin_dir() -> Path:
    """The newest installed server's bin directory; fails (never skips) when none is."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql; "
                           "`./dev test` installs it)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    """A running cluster: `url` names no password; the password is in `password_file`."""

    bin_dir: Path
    data_dir: Path
    port: int
    password: str
    password_file: Path
    run_as: str | None

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} "
                   "-c unix_socket_directories='' -c fsync=off -c max_connections=50")
        self._run(str(self.bin_dir / "pg_ctl"), "start", "-w", "-t", "30",
                  "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
                  "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "stop", "-w", "-m", mode,
                  "-D", str(self.data_dir))

    def reset(self) -> None:
        """Drop the relay's tables (each test starts from an empty state)."""
        import psycopg

        with psycopg.connect(self.url, password=self.password, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS relay_pokes, relay_ward_seq, relay_cursors")


@contextlib.contextmanager
def private_postgres() -> Iterator[PgServer]:
    bin_dir = pg_bin_dir()
    run_as: str | None = None
    if os.geteuid() == 0:
        run_as = "postgres"
        try:
            pwd.getpwnam(run_as)
        except KeyError:
            run_as = "nobody"
    # Not under pytest's tmp_path: its parents are private to root, and the server's user
    # must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="wardsync-pg-"))
    data_dir = root / "data"
    password = "synthetic-" + os.urandom(8).hex()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    password_file = root / "relay-db-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    server = PgServer(bin_dir, data_dir, free_port(), password, password_file, run_as)
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    try:
        server._run(str(bin_dir / "initdb"), "-D", str(data_dir), "-U", USER,
                    "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                    "--no-instructions")
        server.start()
        import psycopg

        with psycopg.connect(f"postgresql://{USER}@127.0.0.1:{server.port}/postgres",
                             password=password, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
