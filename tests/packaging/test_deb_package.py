"""The .deb, built with the real dpkg-deb around a placeholder bundle, then installed,
removed and purged by the real dpkg in a throwaway database (--root)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from wardsync_build import deb, linux_layout, project, system_libraries

from tests.packaging.conftest import REPO, require_tool, run

RELEASE = project.current_release("amd64")


@pytest.fixture
def deb_file(placeholder_bundle: Path, tmp_path: Path) -> Path:
    require_tool("dpkg-deb")
    return deb.build_deb(placeholder_bundle, tmp_path / "out", RELEASE, work_dir=tmp_path / "w")


def _field(deb_file: Path, name: str) -> str:
    return run("dpkg-deb", "--field", deb_file, name).stdout.strip()


def _apt_qt() -> list[str]:
    match = re.search(r"^APT_QT=\((.*?)\)", (REPO / "dev").read_text(), re.S | re.M)
    assert match, "APT_QT not found in dev"
    return match.group(1).split()


def test_name_version_and_architecture_come_from_the_one_version(deb_file):
    assert deb_file.name == f"wardsync_{project.read_version()}-1_amd64.deb"
    assert _field(deb_file, "Package") == "wardsync"
    assert _field(deb_file, "Version") == f"{project.debian_version(project.read_version())}-1"
    assert _field(deb_file, "Architecture") == "amd64"


def test_depends_on_the_qt_runtime_libraries_and_what_the_bundle_leaves_to_the_system(deb_file):
    depends = [d.strip() for d in _field(deb_file, "Depends").split(",")]
    assert set(_apt_qt()) <= set(depends)
    assert {"libc6", "libxcb1", "libegl1", "libgl1"} <= set(depends)
    assert len(depends) == len(set(depends))
    # Alert sounds: installed by default, the system bell without them.
    assert _field(deb_file, "Recommends") == "libpulse0, libdrm2"
    assert not {"libpulse0", "libdrm2"} & set(depends)


def test_files_are_root_owned_in_the_fhs_layout(deb_file):
    listing = run("dpkg-deb", "--contents", deb_file).stdout.splitlines()
    entries = {}
    for line in listing:
        mode, owner, *_rest, path = line.split(maxsplit=5)
        assert owner == "root/root", line
        entries[path.split(" -> ")[0].removeprefix(".")] = mode
    assert entries["/opt/wardsync/wardsync"] == "-rwxr-xr-x"  # widened from 0700
    assert entries["/usr/bin/wardsync"] == "-rwxr-xr-x"
    assert entries["/opt/wardsync/_internal/resources/styles/light.qss"] == "-rw-r--r--"
    assert entries["/opt/wardsync/_internal/libexample.so"].startswith("l")
    for path in (linux_layout.DESKTOP_ENTRY, linux_layout.ICON_SVG, linux_layout.ICON_PNG,
                 linux_layout.POLICY_TEMPLATE, linux_layout.COPYRIGHT, linux_layout.RELAY_UNIT,
                 linux_layout.RELAY_SYSUSERS, linux_layout.RELAY_TEMPLATE):
        assert entries[str(path)] == "-rw-r--r--", path
    # IT's policy file and relay configuration are never the package's.
    assert str(linux_layout.POLICY_FILE) not in entries
    assert str(linux_layout.RELAY_CONFIG) not in entries


def test_the_templates_are_conffiles_and_the_scripts_are_the_relays(deb_file, tmp_path):
    control = tmp_path / "control"
    run("dpkg-deb", "--control", deb_file, control)
    assert (control / "conffiles").read_text() == (
        "/etc/wardsync/config.toml.example\n/etc/wardsync/relay.toml.example\n")
    assert sorted(p.name for p in control.iterdir()) == [
        "conffiles", "control", "md5sums", "postinst", "postrm", "prerm"]
    for script in ("postinst", "postrm", "prerm"):
        assert (control / script).stat().st_mode & 0o777 == 0o755
        assert (control / script).read_text().startswith("#!/bin/sh\n")
        run("sh", "-n", control / script)  # parses
    sums = (control / "md5sums").read_text()
    assert "  opt/wardsync/wardsync\n" in sums and "etc/wardsync" not in sums


def test_the_launcher_runs_the_bundle_in_opt():
    launcher = (REPO / "packaging" / "linux" / "wardsync-launcher.sh").read_text()
    assert launcher.startswith("#!/bin/sh\n")
    assert 'exec /opt/wardsync/wardsync "$@"' in launcher


def test_the_desktop_entry_is_valid():
    validate = require_tool("desktop-file-validate")
    entry = REPO / "packaging" / "linux" / "wardsync.desktop"
    result = subprocess.run([validate, entry], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout
    text = entry.read_text()
    assert "\nExec=wardsync\n" in text and "\nIcon=wardsync\n" in text


def _dpkg(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    # --force-depends: the throwaway database has none of the system libraries installed;
    # dependencies are checked for real by e2e_installed_package.py.
    # --force-script-chrootless: the maintainer scripts run here with DPKG_ROOT=<root> (the
    # throwaway root has no shell to chroot into); they honour it.
    return run("dpkg", f"--root={root}", "--force-not-root", "--force-depends",
               "--force-script-chrootless", *args)


def _status(root: Path) -> str:
    result = subprocess.run(
        ["dpkg-query", f"--root={root}", "-W", "-f=${db:Status-Abbrev}", "wardsync"],
        capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def test_install_remove_and_purge_leave_it_and_user_files_alone(deb_file, tmp_path):
    require_tool("dpkg")
    root = tmp_path / "root"
    admin = root / "var" / "lib" / "dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    for name in ("status", "available"):
        (admin / name).touch()
    home_file = root / "home" / "nurse" / ".config" / "wardsync" / "config.toml"
    home_file.parent.mkdir(parents=True)
    home_file.write_text('ui.theme = "high-contrast"\n')

    _dpkg(root, "--install", deb_file)
    assert _status(root) == "ii"
    for path in (linux_layout.LAUNCHER, linux_layout.DESKTOP_ENTRY, linux_layout.POLICY_TEMPLATE,
                 linux_layout.INSTALL_DIR / "wardsync", linux_layout.RELAY_UNIT,
                 linux_layout.RELAY_TEMPLATE):
        assert (root / path.relative_to("/")).exists(), path
    # The relay's system user, made by postinst (systemd-sysusers) in that root only.
    passwd = (root / "etc" / "passwd").read_text()
    assert "wardsync-relay:x:" in passwd and ":/var/lib/wardsync-relay:/usr/sbin/nologin" in passwd
    relay_state = root / "var" / "lib" / "wardsync-relay" / "relay.sqlite3"
    relay_state.parent.mkdir(parents=True)
    relay_state.write_bytes(b"")  # what a relay that ran leaves
    # IT deploys its policy next to the template.
    policy = root / "etc" / "wardsync" / "config.toml"
    policy.write_text("# site policy\n")

    _dpkg(root, "--remove", "wardsync")
    assert _status(root) == "rc"  # removed, configuration files kept
    assert not (root / "opt" / "wardsync").exists()
    assert not (root / "usr" / "bin" / "wardsync").exists()
    assert not (root / linux_layout.DESKTOP_ENTRY.relative_to("/")).exists()
    assert (root / linux_layout.POLICY_TEMPLATE.relative_to("/")).is_file()

    assert relay_state.exists()  # remove keeps the relay's state
    _dpkg(root, "--purge", "wardsync")
    assert _status(root) == "unknown"
    assert sorted(p.name for p in (root / "etc" / "wardsync").iterdir()) == ["config.toml"]
    assert policy.read_text() == "# site policy\n"
    assert home_file.read_text() == 'ui.theme = "high-contrast"\n'
    assert not relay_state.parent.exists()  # purge forgets it
    # The system user's database entries stay (Debian keeps system users).
    user_db = {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "etc/.pwd.lock"}
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.is_relative_to(admin)
                  and p.relative_to(root).as_posix() not in user_db)
    assert left == ["etc/wardsync/config.toml", "home/nurse/.config/wardsync/config.toml"]


def test_purge_without_an_it_policy_removes_etc_wardsync(deb_file, tmp_path):
    root = tmp_path / "root"
    for sub in ("info", "updates", "triggers"):
        (root / "var" / "lib" / "dpkg" / sub).mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "status").touch()
    _dpkg(root, "--install", deb_file)
    _dpkg(root, "--purge", "wardsync")
    assert not (root / "etc" / "wardsync").exists()


def _installed(package: str) -> bool:
    result = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", package],
                            capture_output=True, text=True)
    return result.stdout.strip() == "installed"


def test_each_declared_soname_is_shipped_by_its_debian_package():
    # Checked against the packages installed here; ./dev test installs all of APT_QT.
    checked = set()
    for lib in system_libraries.SYSTEM_LIBRARIES:
        if not _installed(lib.debian_package):
            continue
        files = {Path(f).name for f in run("dpkg", "-L", lib.debian_package).stdout.split()}
        assert set(lib.sonames) <= files, (lib.debian_package, set(lib.sonames) - files)
        checked.add(lib.debian_package)
    assert set(_apt_qt()) <= checked


def test_rpm_requires_are_the_same_libraries_by_soname():
    requires = system_libraries.rpm_requires("x86_64")
    recommends = system_libraries.rpm_recommends("x86_64")
    assert "libEGL.so.1()(64bit)" in requires and "libxcb-cursor.so.0()(64bit)" in requires
    assert recommends == ["libpulse.so.0()(64bit)", "libdrm.so.2()(64bit)"]
    assert len(requires) + len(recommends) == len(system_libraries.declared_sonames())
    assert system_libraries.rpm_requires("i686")[0] == "libc.so.6"
