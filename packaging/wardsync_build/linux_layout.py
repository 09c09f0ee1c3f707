"""Where the Linux packages put things, and a staging tree with exactly that layout.

    /opt/wardsync/                       the PyInstaller bundle (wardsync + _internal/)
    /usr/bin/wardsync                    launcher on PATH (exec /opt/wardsync/wardsync)
    /usr/share/applications/wardsync.desktop
    /usr/share/icons/hicolor/{scalable,256x256}/apps/wardsync.{svg,png}
    /etc/wardsync/config.toml.example    the machine policy template (a conffile)
    /usr/share/doc/wardsync/copyright
    /usr/lib/systemd/system/wardsync-relay.service   the relay service (off until enabled)
    /usr/lib/sysusers.d/wardsync-relay.conf          its system user
    /etc/wardsync/relay.toml.example     the relay configuration template (a conffile)

The packages never ship /etc/wardsync/config.toml (nor relay.toml or the relay's secrets): that is IT's file, deployed by their
configuration management, and no package upgrade or purge touches it (packaging/README.md).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from wardsync_build import project

INSTALL_DIR = PurePosixPath("/opt/wardsync")
LAUNCHER = PurePosixPath("/usr/bin/wardsync")
DESKTOP_ENTRY = PurePosixPath("/usr/share/applications/wardsync.desktop")
ICON_SVG = PurePosixPath("/usr/share/icons/hicolor/scalable/apps/wardsync.svg")
ICON_PNG = PurePosixPath("/usr/share/icons/hicolor/256x256/apps/wardsync.png")
POLICY_DIR = PurePosixPath("/etc/wardsync")
POLICY_TEMPLATE = POLICY_DIR / "config.toml.example"
POLICY_FILE = POLICY_DIR / "config.toml"  # IT's file: never in the package
COPYRIGHT = PurePosixPath("/usr/share/doc/wardsync/copyright")
RELAY_UNIT = PurePosixPath("/usr/lib/systemd/system/wardsync-relay.service")
RELAY_SYSUSERS = PurePosixPath("/usr/lib/sysusers.d/wardsync-relay.conf")
RELAY_TEMPLATE = POLICY_DIR / "relay.toml.example"
RELAY_CONFIG = POLICY_DIR / "relay.toml"  # IT's file: never in the package
CONFFILES = (POLICY_TEMPLATE, RELAY_TEMPLATE)

LINUX_FILES_DIR = project.PACKAGING_DIR / "linux"
DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644


@dataclass(frozen=True, slots=True)
class StagedTree:
    """A directory laid out like the target file system."""

    root: Path

    def path(self, target: PurePosixPath) -> Path:
        """The staged file for an absolute target path."""
        return self.root / target.relative_to("/")

    def installed_size_kib(self) -> int:
        """Disk use in KiB as dpkg's Installed-Size counts it (Debian Policy 5.6.20)."""
        total = 0
        for path in self.root.rglob("*"):
            if path.is_symlink() or path.is_dir():
                total += 1
            elif path.is_file():
                total += (path.stat().st_size + 1023) // 1024
        return total

    def files(self) -> list[PurePosixPath]:
        """Every staged file and symlink, as absolute target paths, sorted."""
        return sorted(PurePosixPath("/") / p.relative_to(self.root).as_posix()
                      for p in self.root.rglob("*") if p.is_file() or p.is_symlink())


def _copy(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _normalise_modes(root: Path) -> None:
    # Packages install root-owned files readable by everyone; only executables keep +x.
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(DIR_MODE)
        else:
            path.chmod(EXEC_MODE if path.stat().st_mode & 0o111 else FILE_MODE)
    root.chmod(DIR_MODE)


def stage(bundle_dir: Path, root: Path) -> StagedTree:
    """Lay out `bundle_dir` (a PyInstaller one-folder build) and the desktop integration
    under `root`, which must not exist yet."""
    if not (bundle_dir / "wardsync").is_file():
        raise FileNotFoundError(f"{bundle_dir} is not a WardSync bundle (no wardsync executable)")
    root.mkdir(parents=True)
    tree = StagedTree(root)
    shutil.copytree(bundle_dir, tree.path(INSTALL_DIR), symlinks=True)
    _copy(LINUX_FILES_DIR / "wardsync-launcher.sh", tree.path(LAUNCHER), EXEC_MODE)
    _copy(LINUX_FILES_DIR / "wardsync.desktop", tree.path(DESKTOP_ENTRY), FILE_MODE)
    _copy(LINUX_FILES_DIR / "copyright", tree.path(COPYRIGHT), FILE_MODE)
    _copy(project.ICONS_DIR / "wardsync.svg", tree.path(ICON_SVG), FILE_MODE)
    _copy(project.ICONS_DIR / "wardsync.png", tree.path(ICON_PNG), FILE_MODE)
    _copy(project.POLICY_TEMPLATE, tree.path(POLICY_TEMPLATE), FILE_MODE)
    _copy(LINUX_FILES_DIR / "wardsync-relay.service", tree.path(RELAY_UNIT), FILE_MODE)
    _copy(LINUX_FILES_DIR / "wardsync-relay.sysusers", tree.path(RELAY_SYSUSERS), FILE_MODE)
    _copy(LINUX_FILES_DIR / "relay.toml.example", tree.path(RELAY_TEMPLATE), FILE_MODE)
    _normalise_modes(root)
    return tree
