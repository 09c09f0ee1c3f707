"""`python packaging/build.py COMMAND`: build the bundle and the installers.

    bundle         PyInstaller one-folder build into dist/wardsync (size and time reported)
    deb            dist/wardsync_<version>-1_<arch>.deb from dist/wardsync
    rpm            dist/wardsync-<version>-1.<arch>.rpm from dist/wardsync
    msi [PAYLOAD]  dist/WardSync-<version>-x64.msi with wixl; PAYLOAD is the Windows
                   PyInstaller build (default: a placeholder payload, see packaging/README.md)
    linux          bundle, deb and rpm
    docs [--check] regenerate (or check) the settings table in packaging/README.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from wardsync_build import bundle, bundle_spec, deb, msi, project, rpm, settings_doc

DEB_ARCH_BY_MACHINE = {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386"}


def host_release() -> project.Release:
    """The release for packages built on this machine (its architecture)."""
    machine = platform.machine()
    return project.current_release(DEB_ARCH_BY_MACHINE.get(machine, machine))


def _bundle_dir(dist: Path) -> Path:
    path = dist / bundle_spec.BUNDLE_DIR_NAME
    if not (path / bundle_spec.EXECUTABLE_NAME).is_file():
        raise SystemExit(f"build.py: no bundle in {path}: run `python packaging/build.py bundle`")
    return path


def _say(message: str) -> None:
    sys.stdout.write(f"build.py: {message}\n")
    sys.stdout.flush()


def _timed(label: str, make: Callable[[], Path]) -> Path:
    start = time.monotonic()
    out = make()
    size = out.stat().st_size / 2**20
    _say(f"{label}: {out} ({size:.1f} MiB, {time.monotonic() - start:.1f} s)")
    return out


def cmd_bundle(dist: Path) -> None:
    _say("building the PyInstaller bundle (about a minute)")
    report = bundle.build_bundle(dist)
    _say(f"bundle: {report.path} ({report.size_mib:.0f} MiB in {report.files} files, "
         f"built in {report.build_seconds:.0f} s; needs from the system: "
         f"{', '.join(report.system_sonames)})")


def cmd_deb(dist: Path) -> None:
    _timed("deb", lambda: deb.build_deb(_bundle_dir(dist), dist, host_release(),
                                        work_dir=project.BUILD_DIR))


def cmd_rpm(dist: Path) -> None:
    _timed("rpm", lambda: rpm.build_rpm(_bundle_dir(dist), dist, host_release(),
                                        work_dir=project.BUILD_DIR))


def cmd_msi(dist: Path, payload: Path | None) -> None:
    if payload is None:
        payload = msi.placeholder_payload(project.BUILD_DIR / "msi-placeholder-payload")
        _say(f"msi: placeholder payload {payload} (the real one is the Windows build)")
    _timed("msi", lambda: msi.build_msi(payload, dist, host_release(),
                                        work_dir=project.BUILD_DIR / "msi"))


def cmd_docs(check: bool) -> int:
    if check:
        try:
            settings_doc.check()
        except settings_doc.StaleDocError as exc:
            sys.stderr.write(f"build.py: {exc}\n")
            return 1
        _say(f"{settings_doc.README}: settings table is up to date")
        return 0
    changed = settings_doc.update()
    _say(f"{settings_doc.README}: {'updated' if changed else 'already up to date'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", type=Path, default=project.DIST_DIR,
                        help="output folder (default: dist/ in the repository)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("bundle", "deb", "rpm", "linux"):
        sub.add_parser(name)
    msi_parser = sub.add_parser("msi")
    msi_parser.add_argument("payload", nargs="?", type=Path, default=None)
    docs_parser = sub.add_parser("docs")
    docs_parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)

    dist: Path = args.dist.resolve()
    if args.command == "docs":
        return cmd_docs(args.check)
    if args.command in ("bundle", "linux"):
        cmd_bundle(dist)
    if args.command in ("deb", "linux"):
        cmd_deb(dist)
    if args.command in ("rpm", "linux"):
        cmd_rpm(dist)
    if args.command == "msi":
        cmd_msi(dist, args.payload)
    return 0
