"""End to end: build the real bundle and .deb, install it with dpkg on this machine, run the
installed app against its own sandbox on an Xvfb display, take a screenshot, uninstall.

Not collected by the normal run (the file name does not start with `test_`): it builds the
200 MB bundle and installs a package system-wide, about 90 s, as root. Run it with

    sudo ./dev test tests/packaging/e2e_installed_package.py

(packaging/README.md, "Tests"). The tests run in file order and share one installation;
the last one uninstalls and checks what is left. The timings and the bundle size go to
`<artifacts>/packaging/e2e-report.json`, the screenshot next to it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import pytest
from wardsync_build import bundle, deb, linux_layout, project, system_libraries

from tests.packaging.conftest import require_tool, run
from tests.ui.xvfb import xvfb_display  # noqa: F401  (fixture)

pytestmark = [pytest.mark.timeout(600), pytest.mark.xvfb, pytest.mark.slow]

INSTALL_DIR = Path(str(linux_layout.INSTALL_DIR))
LAUNCHER = Path(str(linux_layout.LAUNCHER))
IT_POLICY = Path(str(linux_layout.POLICY_FILE))
READY_TIMEOUT_S = 60.0
RENDER_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
QUIET_S = 2.0
SETTLE_TIMEOUT_S = 30.0
# A screenshot of a real window has far more colours than a blank or one-colour screen.
MIN_SCREENSHOT_COLOURS = 64


@dataclass
class E2EReport:
    """What the run measured (written to the artefacts folder)."""

    version: str = ""
    bundle_build_s: float = 0.0
    bundle_mib: float = 0.0
    bundle_files: int = 0
    deb_build_s: float = 0.0
    deb_mib: float = 0.0
    install_s: float = 0.0
    first_render_s: float = 0.0
    remove_purge_s: float = 0.0
    system_sonames: list[str] = field(default_factory=list)


@dataclass
class Built:
    deb_file: Path
    report: E2EReport
    out_dir: Path


def _package_status() -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "wardsync"],
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _depends(deb_file: Path, field_name: str = "Depends") -> list[str]:
    text = run("dpkg-deb", "--field", deb_file, field_name).stdout
    return [d.strip() for d in text.split(",") if d.strip()]


@pytest.fixture(scope="module")
def built(tmp_path_factory, artifacts_dir: Path) -> Iterator[Built]:
    if os.geteuid() != 0:
        pytest.fail("installing a package needs root: sudo ./dev test "
                    "tests/packaging/e2e_installed_package.py")
    for tool in ("dpkg-deb", "Xvfb", "import", "desktop-file-validate"):
        require_tool(tool)
    out_dir = artifacts_dir / "packaging"
    out_dir.mkdir(parents=True, exist_ok=True)
    dist = tmp_path_factory.mktemp("dist")
    report = E2EReport(version=project.read_version())
    bundle_report = bundle.build_bundle(dist, dist / "work")
    report.bundle_build_s = bundle_report.build_seconds
    report.bundle_mib = round(bundle_report.size_mib, 1)
    report.bundle_files = bundle_report.files
    report.system_sonames = bundle_report.system_sonames
    start = time.monotonic()
    deb_file = deb.build_deb(Path(bundle_report.path), dist, project.current_release(),
                             work_dir=dist / "work")
    report.deb_build_s = round(time.monotonic() - start, 1)
    report.deb_mib = round(deb_file.stat().st_size / 2**20, 1)
    yield Built(deb_file, report, out_dir)
    (out_dir / "e2e-report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A user's home with a user settings file the uninstall must leave alone."""
    home = tmp_path_factory.mktemp("home")
    user_file = home / ".config" / "wardsync" / "config.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text('[logging]\nlevel = "WARNING"\n')
    (home / "run").mkdir(mode=0o700)
    return home


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A plain user environment: no virtualenv, no PYTHONPATH, only system directories."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
           "XDG_RUNTIME_DIR": str(home / "run")}
    if "DBUS_SESSION_BUS_ADDRESS" in os.environ:  # the test keyring, when run by ./dev test
        env["DBUS_SESSION_BUS_ADDRESS"] = os.environ["DBUS_SESSION_BUS_ADDRESS"]
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(built: Built) -> Iterator[Built]:
    if _package_status() != "unknown" or INSTALL_DIR.exists() or LAUNCHER.exists():
        pytest.fail("wardsync is already installed on this machine (or /opt/wardsync exists):"
                    " remove it first (dpkg -P wardsync); this test will not overwrite it")
    missing = [p for p in _depends(built.deb_file)
               if subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", p],
                                 capture_output=True, text=True).stdout != "installed"]
    # Only Depends: Recommends (the alert-sound libraries) stay as this machine has them,
    # so other tests here keep the behaviour they expect (the bell fallback).
    if missing:  # what `apt install ./wardsync.deb` would do first
        run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    start = time.monotonic()
    run("dpkg", "--install", built.deb_file)
    built.report.install_s = round(time.monotonic() - start, 1)
    try:
        yield built
    finally:
        if _package_status() != "unknown":  # a test failed before the uninstall test
            subprocess.run(["dpkg", "--purge", "wardsync"], capture_output=True)


# ------------------------------------------------------------------------------ installed


def test_the_package_installs_its_files_and_dependencies(installed: Built):
    assert _package_status() == "ii"
    files = set(run("dpkg", "--listfiles", "wardsync").stdout.split())
    for path in (linux_layout.LAUNCHER, linux_layout.DESKTOP_ENTRY, linux_layout.ICON_SVG,
                 linux_layout.ICON_PNG, linux_layout.POLICY_TEMPLATE,
                 linux_layout.INSTALL_DIR / "wardsync"):
        assert str(path) in files
    assert run("dpkg", "--verify", "wardsync").stdout == ""  # every file as packaged
    run("desktop-file-validate", str(linux_layout.DESKTOP_ENTRY))
    # The bundle carries its certificates, charts and resources, and no WebEngine.
    internal = INSTALL_DIR / "_internal"
    assert (internal / "certifi" / "cacert.pem").is_file()
    assert (internal / "PySide6" / "QtCharts.abi3.so").is_file()
    assert (internal / "resources" / "styles" / "light.qss").is_file()
    assert (internal / "PySide6" / "Qt" / "plugins" / "platforms" / "libqxcb.so").is_file()
    assert not [p for p in INSTALL_DIR.rglob("*") if "WebEngine" in p.name]


def test_depends_cover_every_library_the_installed_bundle_takes_from_the_system(installed):
    depends = set(_depends(installed.deb_file))
    declared = depends | set(_depends(installed.deb_file, "Recommends"))
    needs = system_libraries.unbundled_sonames(INSTALL_DIR)
    assert "libGL.so.1" in needs and "libxcb.so.1" in needs
    for soname in needs:
        search = subprocess.run(["dpkg", "--search", f"*/{soname}"], capture_output=True,
                                text=True)
        owners = {line.split(":")[0] for line in search.stdout.splitlines()}
        if not owners:  # not installed here (a Recommends): the table names its package
            owners = {lib.debian_package for lib in system_libraries.SYSTEM_LIBRARIES
                      if soname in lib.sonames and lib.optional_for}
        assert owners & declared, (soname, owners)
    for package in depends:
        assert subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package],
                              capture_output=True, text=True).stdout.startswith("ii"), package


def test_the_installed_commands_work_without_python(installed: Built, home: Path):
    version = project.read_version()
    out = run("wardsync", "--version", env=user_env(home)).stdout.strip()
    assert out == f"wardsync {version}"
    out = run("wardsync", "config", "check", str(linux_layout.POLICY_TEMPLATE),
              env=user_env(home)).stdout
    assert "OK, a valid WardSync machine policy" in out

    shown = run("wardsync", "config", "show",
                env=user_env(home, WARDSYNC_FHIR_TIMEOUT_S="7")).stdout
    rows = {line.split()[0]: line.split()[1] for line in shown.splitlines()
            if line.startswith(("fhir.", "logging.", "ui."))}
    assert rows["fhir.timeout_s"] == "env:WARDSYNC_FHIR_TIMEOUT_S"
    assert rows["logging.level"] == f"user:{home}/.config/wardsync/config.toml"
    assert rows["ui.theme"] == "default"

    bad = home / "bad-policy.toml"
    bad.write_text('[alerts]\nescalation_after_min = 90\n')
    result = subprocess.run(["wardsync", "config", "check", str(bad)], env=user_env(home),
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "alerts.escalation_after_min" in result.stderr


def test_the_installed_sandbox_prints_its_ready_line_and_serves_fhir(installed, home):
    proc = subprocess.Popen(["wardsync", "sandbox", "--port", "0", "--no-simulator"],
                            env=user_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["fhir_base"].startswith("http://127.0.0.1:")
        reply = httpx.get(f"{info['fhir_base']}/metadata", timeout=10)
        assert reply.status_code == 200
        assert reply.json()["resourceType"] == "CapabilityStatement"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(STOP_TIMEOUT_S)
        proc.stdout.close()
    assert code == 0


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_installed_app_shows_the_ward_on_a_real_display(
    installed, home, xvfb_display  # noqa: F811  (the fixture)
):
    metrics = home / "metrics.jsonl"
    log = home / "app.log"
    env = user_env(home, DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb",
                   WARDSYNC_METRICS_LOG=str(metrics))
    start = time.monotonic()
    with log.open("w") as log_file:
        app = subprocess.Popen(["wardsync", "--demo"], env=env, stdout=log_file,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + RENDER_TIMEOUT_S
        while True:
            events = _read_events(metrics)
            rendered = [e for e in events if e["event"] == "rendered"
                        and e["window"].startswith("ward") and e["refs"]]
            live = [e for e in events if e["event"] == "connection_state"
                    and e["state"] == "live"]
            if rendered and live:
                break
            assert app.poll() is None, f"the app exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no rendered event: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        installed.report.first_render_s = round(time.monotonic() - start, 1)
        assert any(e["event"] == "sandbox_ready" for e in events)
        assert any(r.startswith("Patient/") for e in rendered for r in e["refs"])

        # The bundle's own Python and Qt, not the build machine's.
        maps = Path(f"/proc/{app.pid}/maps").read_text()
        for library in ("libpython3", "libQt6Core.so", "libQt6Widgets.so"):
            paths = {line.split()[-1] for line in maps.splitlines() if library in line}
            assert paths and all(p.startswith(f"{INSTALL_DIR}/") for p in paths), paths
        (sandbox,) = _children(app.pid)
        assert os.readlink(f"/proc/{sandbox}/exe") == str(INSTALL_DIR / "wardsync")
        assert b"sandbox" in Path(f"/proc/{sandbox}/cmdline").read_bytes().split(b"\0")

        # The first pulls arrive in several batches: wait until no event came for a while,
        # so the screenshot shows the filled ward rather than the first repaint.
        settle_deadline = time.monotonic() + SETTLE_TIMEOUT_S
        seen = len(_read_events(metrics))
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_S and time.monotonic() < settle_deadline:
            time.sleep(0.2)
            now = len(_read_events(metrics))
            if now != seen:
                seen, quiet_since = now, time.monotonic()
        shot = installed.out_dir / "installed-ward-overview.png"
        # The whole screen, less the empty background (there is no window manager).
        run("import", "-display", xvfb_display, "-window", "root", "-trim", "+repage", shot)
        colours = int(run("identify", "-format", "%k", shot).stdout)
        assert colours >= MIN_SCREENSHOT_COLOURS, colours
    finally:
        app.send_signal(signal.SIGTERM)
        code = app.wait(STOP_TIMEOUT_S)
    assert code == 0, log.read_text()[-2000:]
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while Path(f"/proc/{sandbox}").exists():  # the demo sandbox stops with the app
        assert time.monotonic() < deadline, "the demo sandbox outlived the app"
        time.sleep(0.1)


# ---------------------------------------------------------------------------- uninstalled


def test_remove_then_purge_leaves_it_policy_and_user_files(installed, home):
    had_policy = IT_POLICY.exists()
    policy_text = IT_POLICY.read_text() if had_policy else "# site policy (comments only)\n"
    if not had_policy:
        IT_POLICY.write_text(policy_text)
    user_files = sorted(p for p in home.rglob("*") if p.is_file())
    start = time.monotonic()
    try:
        run("dpkg", "--remove", "wardsync")
        assert _package_status() == "rc"
        for gone in (INSTALL_DIR, LAUNCHER, Path(str(linux_layout.DESKTOP_ENTRY)),
                     Path(str(linux_layout.ICON_SVG)), Path(str(linux_layout.ICON_PNG))):
            assert not gone.exists(), gone
        assert Path(str(linux_layout.POLICY_TEMPLATE)).is_file()  # conffile kept until purge

        run("dpkg", "--purge", "wardsync")
        installed.report.remove_purge_s = round(time.monotonic() - start, 1)
        assert _package_status() == "unknown"
        assert not Path(str(linux_layout.POLICY_TEMPLATE)).exists()
        assert sorted(p.name for p in IT_POLICY.parent.iterdir()) == ["config.toml"]
        assert IT_POLICY.read_text() == policy_text
        assert sorted(p for p in home.rglob("*") if p.is_file()) == user_files
        assert (home / ".config" / "wardsync" / "config.toml").read_text().startswith(
            "[logging]")
    finally:
        if not had_policy:
            IT_POLICY.unlink(missing_ok=True)
            if IT_POLICY.parent.exists() and not any(IT_POLICY.parent.iterdir()):
                IT_POLICY.parent.rmdir()
