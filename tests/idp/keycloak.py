"""A real Keycloak for the identity-provider tests: fetched once into `.cache/keycloak/` with
Maven (`org.keycloak:keycloak-quarkus-dist`), started in dev mode on a free loopback port with
an in-memory database and the realm in `tests/idp/wardsync-realm.json` imported, and stopped
at the end of the test session.

Keycloak needs Java 21 or newer: `KEYCLOAK_JAVA_HOME`, else `JAVA_HOME` when it is new
enough, else the newest JDK under /usr/lib/jvm or /opt. Nothing here is skipped: a machine
that cannot run Keycloak fails these tests with the reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
VERSION = "26.7.3"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{VERSION}:tar.gz"
CACHE = Path(os.environ.get("WARDSYNC_KEYCLOAK_CACHE", REPO / ".cache" / "keycloak"))
REALM_FILE = Path(__file__).with_name("wardsync-realm.json")
REALM = "wardsync"
BOOT_TIMEOUT_S = 240.0
MIN_JAVA = 21

# What the realm file defines (synthetic; test-only secrets).
DESKTOP_CLIENT = "wardsync-desktop"
RELAY_CLIENT = "wardsync-relay"
RELAY_SECRET = "synthetic-relay-secret-for-tests"
USERNAME = "test.clinician"
PASSWORD = "synthetic-password"
FHIR_AUDIENCE = "wardsync-fhir"
FHIR_USER = "Practitioner/demo-clinician"
WARD = "ward-7a"
SCOPES = ("openid", "fhirUser", "user/*.cruds")


class KeycloakUnavailable(RuntimeError):
    """Keycloak cannot be fetched or started here; the message says why."""


def _java_major(home: Path) -> int:
    release = home / "release"
    try:
        text = release.read_text()
    except OSError:
        return 0
    m = re.search(r'JAVA_VERSION="(\d+)', text)
    return int(m.group(1)) if m else 0


def java_home() -> Path:
    """A JDK of version 21 or newer (see the module docstring)."""
    for name in ("KEYCLOAK_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(name)
        if value and _java_major(Path(value)) >= MIN_JAVA:
            return Path(value)
    candidates = [p for root in (Path("/usr/lib/jvm"), Path("/opt")) if root.is_dir()
                  for p in root.iterdir() if (p / "bin" / "java").exists()]
    best = max(candidates, key=_java_major, default=None)
    if best is None or _java_major(best) < MIN_JAVA:
        raise KeycloakUnavailable(
            f"Keycloak needs Java {MIN_JAVA}+; none found (set KEYCLOAK_JAVA_HOME)")
    return best


def distribution() -> Path:
    """The unpacked Keycloak, downloaded with Maven on first use (one process at a time)."""
    home = CACHE / f"keycloak-{VERSION}"
    if (home / "bin" / "kc.sh").exists():
        return home
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / "bin" / "kc.sh").exists():
            return home
        archive = CACHE / f"keycloak-quarkus-dist-{VERSION}.tar.gz"
        if not archive.exists():
            mvn = shutil.which("mvn")
            if mvn is None:
                raise KeycloakUnavailable("Maven (mvn) is needed to fetch Keycloak")
            done = subprocess.run(
                [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={ARTIFACT}",
                 f"-DoutputDirectory={CACHE}"], capture_output=True, text=True, timeout=900)
            if done.returncode != 0 or not archive.exists():
                raise KeycloakUnavailable(f"mvn could not fetch {ARTIFACT}: "
                                          f"{(done.stdout + done.stderr)[-2000:]}")
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
        (home / "bin" / "kc.sh").chmod(0o755)
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Keycloak:
    """A running Keycloak and the realm's addresses."""

    base_url: str
    boot_s: float

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{REALM}"

    def openid_configuration(self) -> dict[str, object]:
        doc = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10).json()
        assert isinstance(doc, dict)
        return doc


@contextlib.contextmanager
def running_keycloak(log_file: Path) -> Iterator[Keycloak]:
    """Start Keycloak (dev mode, in-memory database, realm imported) and stop it after."""
    home = distribution()
    import_dir = home / "data" / "import"
    import_dir.mkdir(parents=True, exist_ok=True)
    staged = import_dir / f".{REALM}-realm.{os.getpid()}"
    shutil.copyfile(REALM_FILE, staged)
    staged.replace(import_dir / f"{REALM}-realm.json")
    port = _free_port()
    env = {**os.environ, "JAVA_HOME": str(java_home()),
           # The bootstrap admin is required by start-dev; nobody logs in with it.
           "KC_BOOTSTRAP_ADMIN_USERNAME": "bootstrap-admin",
           "KC_BOOTSTRAP_ADMIN_PASSWORD": os.urandom(12).hex()}
    started = time.monotonic()
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [str(home / "bin" / "kc.sh"), "start-dev", "--http-host", "127.0.0.1",
             "--http-port", str(port), "--db", "dev-mem", "--import-realm"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        kc = Keycloak(f"http://127.0.0.1:{port}", 0.0)
        deadline = started + BOOT_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise KeycloakUnavailable(
                    f"Keycloak exited ({proc.returncode}): {log_file.read_text()[-3000:]}")
            try:
                if httpx.get(f"{kc.issuer}/.well-known/openid-configuration",
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise KeycloakUnavailable(f"Keycloak not ready in {BOOT_TIMEOUT_S:g} s: "
                                          f"{log_file.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Keycloak(kc.base_url, time.monotonic() - started)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
