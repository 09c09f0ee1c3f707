"""Build the PyInstaller one-folder bundle and measure it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from wardsync_build import bundle_spec, project, system_libraries

REPORT_NAME = "bundle-report.json"


class BundleError(RuntimeError):
    """The bundle did not build, or needs system libraries the packages do not declare."""


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What was built, how big it is and how long it took."""

    path: str
    version: str
    build_seconds: float
    size_bytes: int
    files: int
    system_sonames: list[str]

    @property
    def size_mib(self) -> float:
        return self.size_bytes / 2**20


def measure(bundle_dir: Path) -> tuple[int, int]:
    """(bytes, file count) of a bundle folder; symlinks count as links, not their targets."""
    size = files = 0
    for path in bundle_dir.rglob("*"):
        if path.is_symlink():
            files += 1
        elif path.is_file():
            size += path.stat().st_size
            files += 1
    return size, files


def build_bundle(dist_dir: Path = project.DIST_DIR,
                 work_dir: Path = project.BUILD_DIR / "pyinstaller") -> BundleReport:
    """Run PyInstaller on packaging/wardsync.spec into `dist_dir/wardsync`.

    Fails if the bundle needs a system library that `system_libraries` does not declare
    (the packages would install without it). Writes `dist_dir/bundle-report.json`.
    """
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
         "--distpath", str(dist_dir), "--workpath", str(work_dir), str(project.SPEC_FILE)],
        cwd=project.REPO, capture_output=True, text=True,
    )
    seconds = time.monotonic() - start
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "pyinstaller.log"
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        raise BundleError(f"PyInstaller failed (full log: {log}):\n{result.stderr[-4000:]}")
    bundle_dir = dist_dir / bundle_spec.BUNDLE_DIR_NAME
    missing = system_libraries.undeclared_sonames(bundle_dir)
    if missing:
        listing = "\n".join(f"  {name} (needed by {users[0]})" for name, users in missing.items())
        raise BundleError("the bundle needs system libraries that the packages do not declare "
                          f"(add them to system_libraries.SYSTEM_LIBRARIES):\n{listing}")
    size, files = measure(bundle_dir)
    report = BundleReport(
        path=str(bundle_dir), version=project.read_version(), build_seconds=round(seconds, 1),
        size_bytes=size, files=files,
        system_sonames=sorted(system_libraries.unbundled_sonames(bundle_dir)),
    )
    (dist_dir / REPORT_NAME).write_text(json.dumps(asdict(report), indent=2) + "\n",
                                        encoding="utf-8")
    return report
