"""The .rpm, built with the real rpmbuild around a placeholder bundle, queried with rpm and
installed and erased in a throwaway rpm database (--root)."""

from __future__ import annotations

from pathlib import Path

import pytest
from wardsync_build import linux_layout, project, rpm, system_libraries

from tests.packaging.conftest import require_tool, run

RELEASE = project.current_release("amd64")


@pytest.fixture
def rpm_file(placeholder_bundle: Path, tmp_path: Path) -> Path:
    require_tool("rpmbuild")
    return rpm.build_rpm(placeholder_bundle, tmp_path / "out", RELEASE, work_dir=tmp_path / "w")


def _query(rpm_file: Path, *flags: str) -> list[str]:
    return run("rpm", "-qp", *flags, rpm_file).stdout.splitlines()


def test_name_version_and_architecture_come_from_the_one_version(rpm_file):
    version = project.rpm_version(project.read_version())
    assert rpm_file.name == f"wardsync-{version}-1.x86_64.rpm"
    assert _query(rpm_file, "--queryformat", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}") == [
        f"wardsync {version} 1 x86_64"]


def test_requires_the_system_libraries_by_soname_and_provides_nothing_of_the_bundle(rpm_file):
    requires = {r for r in _query(rpm_file, "--requires") if not r.startswith("rpmlib(")}
    assert requires == set(system_libraries.rpm_requires("x86_64"))
    assert sorted(_query(rpm_file, "--recommends")) == sorted(
        system_libraries.rpm_recommends("x86_64"))
    # The placeholder bundle holds libexample.so.1: rpm must not offer it to the system.
    assert sorted(_query(rpm_file, "--provides")) == [
        f"wardsync = {project.rpm_version(project.read_version())}-1",
        f"wardsync(x86-64) = {project.rpm_version(project.read_version())}-1",
    ]


def test_files_and_the_config_template(rpm_file):
    files = set(_query(rpm_file, "--list"))
    for path in (linux_layout.LAUNCHER, linux_layout.DESKTOP_ENTRY, linux_layout.ICON_SVG,
                 linux_layout.ICON_PNG, linux_layout.POLICY_TEMPLATE, linux_layout.COPYRIGHT,
                 linux_layout.INSTALL_DIR / "wardsync",
                 linux_layout.INSTALL_DIR / "_internal/resources/styles/light.qss"):
        assert str(path) in files, path
    assert str(linux_layout.POLICY_FILE) not in files
    # Shared directories stay other packages'.
    assert "/usr/share/icons" not in files and "/usr/bin" not in files
    assert _query(rpm_file, "--configfiles") == [str(linux_layout.POLICY_TEMPLATE),
                                                 str(linux_layout.RELAY_TEMPLATE)]
    assert str(linux_layout.RELAY_UNIT) in files and str(linux_layout.RELAY_CONFIG) not in files
    modes = dict(line.rsplit(" ", 1)[::-1] for line in _query(
        rpm_file, "--queryformat", "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} "
        "%{FILENAMES}\\n]"))
    assert modes["/opt/wardsync/wardsync"] == "-rwxr-xr-x root:root"
    assert modes["/usr/bin/wardsync"] == "-rwxr-xr-x root:root"


def test_install_and_erase_in_a_throwaway_root(rpm_file, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    db = ("--root", str(root), "--dbpath", "/var/lib/rpm")
    run("rpm", *db, "--initdb")
    home_file = root / "home" / "nurse" / ".config" / "wardsync" / "config.toml"
    home_file.parent.mkdir(parents=True)
    home_file.write_text("# mine\n")
    # --nodeps: the throwaway database has none of the system libraries.
    run("rpm", *db, "--install", "--nodeps", rpm_file)
    assert (root / "opt" / "wardsync" / "wardsync").is_file()
    assert (root / "etc" / "wardsync" / "config.toml.example").is_file()
    policy = root / "etc" / "wardsync" / "config.toml"
    policy.write_text("# site policy\n")

    run("rpm", *db, "--erase", "wardsync")
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.is_relative_to(root / "var" / "lib" / "rpm"))
    assert left == ["etc/wardsync/config.toml", "home/nurse/.config/wardsync/config.toml"]
    assert not (root / "opt" / "wardsync").exists()
