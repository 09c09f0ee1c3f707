"""The .deb: the staged tree plus DEBIAN/control, conffiles, md5sums and the relay's
maintainer scripts, built with dpkg-deb.

dpkg itself removes the files on `remove`, keeps the conffiles
(/etc/wardsync/config.toml.example, relay.toml.example) until `purge`, removes them and the
then-empty /etc/wardsync on purge (an IT policy file there keeps the directory), and the
desktop and icon caches are refreshed by the triggers of desktop-file-utils and
hicolor-icon-theme. The maintainer scripts (packaging/linux/deb/) are the relay service's:
postinst creates its system user (systemd-sysusers) and reloads systemd, prerm stops a running
relay, postrm forgets its state on purge. The service is never enabled by the package: it
needs IT's /etc/wardsync/relay.toml first. Nothing under users' home directories is ever the
package's (Debian Policy 10.7.3, 6.8).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from wardsync_build import linux_layout, project, system_libraries

# zstd keeps the 200 MB bundle's build fast; dpkg reads it since 1.21.18 (Debian 12,
# Ubuntu 21.10). Pass "xz" for older targets.
DEFAULT_COMPRESSION = "zstd"
SECTION = "science"
MAINTAINER_SCRIPTS = ("postinst", "prerm", "postrm")
DEB_SCRIPTS_DIR = linux_layout.LINUX_FILES_DIR / "deb"


def control_text(release: project.Release, installed_size_kib: int) -> str:
    """DEBIAN/control (Debian Policy 5.3)."""
    description = "\n".join(f" {line}" if line.strip() else " ."
                            for line in project.DESCRIPTION.splitlines())
    fields = {
        "Package": project.PACKAGE_NAME,
        "Version": release.deb_version,
        "Architecture": release.deb_arch,
        "Maintainer": project.MAINTAINER,
        "Installed-Size": str(installed_size_kib),
        "Depends": ", ".join(system_libraries.debian_depends()),
        "Recommends": ", ".join(system_libraries.debian_recommends()),
        "Section": SECTION,
        "Priority": "optional",
        "Description": f"{project.SUMMARY}\n{description}",
    }
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def _md5sums(tree: linux_layout.StagedTree) -> str:
    conffiles = set(linux_layout.CONFFILES)
    lines = []
    for target in tree.files():
        path = tree.path(target)
        if path.is_symlink() or target in conffiles:  # dh_md5sums leaves conffiles out too
            continue
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        lines.append(f"{digest}  {str(target)[1:]}\n")
    return "".join(lines)


def build_deb(
    bundle_dir: Path,
    out_dir: Path,
    release: project.Release,
    *,
    work_dir: Path,
    compression: str = DEFAULT_COMPRESSION,
) -> Path:
    """Stage `bundle_dir`, write the control files and build `out_dir/<release.deb_file>`."""
    root = work_dir / "deb-root"
    if root.exists():
        shutil.rmtree(root)
    tree = linux_layout.stage(bundle_dir, root)
    debian = root / "DEBIAN"
    debian.mkdir(mode=0o755)
    (debian / "control").write_text(
        control_text(release, tree.installed_size_kib()), encoding="utf-8")
    (debian / "conffiles").write_text(
        "".join(f"{c}\n" for c in linux_layout.CONFFILES), encoding="utf-8")
    (debian / "md5sums").write_text(_md5sums(tree), encoding="utf-8")
    for name in ("control", "conffiles", "md5sums"):
        (debian / name).chmod(0o644)
    for name in MAINTAINER_SCRIPTS:  # Debian Policy 10.9: 0755
        shutil.copyfile(DEB_SCRIPTS_DIR / name, debian / name)
        (debian / name).chmod(0o755)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / release.deb_file
    # --root-owner-group: every file root:root whoever builds it (no fakeroot needed).
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
        check=True, stdout=subprocess.DEVNULL,
    )
    return out
