"""The system libraries the Linux bundle runs on, as Debian packages and as RPM sonames.

PyInstaller copies most shared libraries into the bundle but leaves out those that must
match the machine (glibc, the OpenGL/EGL drivers, libxcb, Wayland). Qt additionally needs the
libraries `dev` installs as APT_QT (docs/architecture.md §4) on the machine, so the packages depend
on all of them. One table gives both formats: Debian `Depends` by package name, RPM
`Requires` by the soname capability rpm's own dependency generator would write
(`libEGL.so.1()(64bit)`), which works across Fedora, RHEL and openSUSE package names.

A library only an optional feature needs is a weak dependency (Debian `Recommends`, RPM
`Recommends`): apt and dnf install it by default, and without it the app still runs. The
alert sounds are such a feature: QtMultimedia links to PulseAudio's client library (which
PipeWire also serves) and its FFmpeg backend to libdrm; without them `ui.alert_notifier`
falls back to the system bell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wardsync_build import elf


@dataclass(frozen=True, slots=True)
class SystemLibrary:
    """A Debian package and the sonames of it the bundle (or Qt at run time) loads.

    `optional_for` names the feature that needs it when the app runs without it (a weak
    dependency); empty for a hard dependency.
    """

    debian_package: str
    sonames: tuple[str, ...]
    optional_for: str = ""


SYSTEM_LIBRARIES: tuple[SystemLibrary, ...] = (
    # Not bundled by PyInstaller (they must match the machine's C library and drivers).
    SystemLibrary("libc6", ("libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0",
                            "librt.so.1", "libresolv.so.2")),
    SystemLibrary("libxcb1", ("libxcb.so.1",)),
    SystemLibrary("libwayland-client0", ("libwayland-client.so.0",)),
    SystemLibrary("libwayland-cursor0", ("libwayland-cursor.so.0",)),
    SystemLibrary("libwayland-egl1", ("libwayland-egl.so.1",)),
    # APT_QT in `dev`: what Qt 6 needs on a fresh Debian/Ubuntu, and an X window needs.
    SystemLibrary("libglib2.0-0", ("libglib-2.0.so.0",)),
    SystemLibrary("libegl1", ("libEGL.so.1",)),
    SystemLibrary("libgl1", ("libGL.so.1",)),
    SystemLibrary("libfontconfig1", ("libfontconfig.so.1",)),
    SystemLibrary("libxkbcommon0", ("libxkbcommon.so.0",)),
    SystemLibrary("libdbus-1-3", ("libdbus-1.so.3",)),
    SystemLibrary("libxcb-cursor0", ("libxcb-cursor.so.0",)),
    SystemLibrary("libxcb-icccm4", ("libxcb-icccm.so.4",)),
    SystemLibrary("libxcb-image0", ("libxcb-image.so.0",)),
    SystemLibrary("libxcb-keysyms1", ("libxcb-keysyms.so.1",)),
    SystemLibrary("libxcb-render-util0", ("libxcb-render-util.so.0",)),
    SystemLibrary("libxcb-shape0", ("libxcb-shape.so.0",)),
    SystemLibrary("libxcb-xkb1", ("libxcb-xkb.so.1",)),
    SystemLibrary("libxkbcommon-x11-0", ("libxkbcommon-x11.so.0",)),
    # Weak: the alert tones (QtMultimedia); the system bell is the fallback.
    SystemLibrary("libpulse0", ("libpulse.so.0",), optional_for="alert sounds"),
    SystemLibrary("libdrm2", ("libdrm.so.2",), optional_for="alert sounds"),
)
# The dynamic loader is part of libc6 but is named by path, not as a library to require.
LOADER_SONAMES = frozenset({"ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "ld-linux.so.2"})


def debian_depends() -> list[str]:
    """The Debian `Depends` list, in table order."""
    return [lib.debian_package for lib in SYSTEM_LIBRARIES if not lib.optional_for]


def debian_recommends() -> list[str]:
    """The Debian `Recommends` list: libraries of optional features."""
    return [lib.debian_package for lib in SYSTEM_LIBRARIES if lib.optional_for]


def _rpm_capabilities(rpm_arch: str, optional: bool) -> list[str]:
    suffix = "()(64bit)" if rpm_arch in ("x86_64", "aarch64", "ppc64le", "s390x") else ""
    return [f"{soname}{suffix}" for lib in SYSTEM_LIBRARIES
            if bool(lib.optional_for) == optional for soname in lib.sonames]


def rpm_requires(rpm_arch: str = "x86_64") -> list[str]:
    """RPM `Requires` soname capabilities, as rpm's ELF dependency generator spells them."""
    return _rpm_capabilities(rpm_arch, optional=False)


def rpm_recommends(rpm_arch: str = "x86_64") -> list[str]:
    """RPM `Recommends` (weak dependencies, rpm >= 4.12) for optional features."""
    return _rpm_capabilities(rpm_arch, optional=True)


def declared_sonames() -> frozenset[str]:
    """Every soname the table declares."""
    return frozenset(s for lib in SYSTEM_LIBRARIES for s in lib.sonames)


def unbundled_sonames(bundle_dir: Path) -> dict[str, list[str]]:
    """Sonames the bundle's ELF files need that the bundle does not contain.

    Returns {soname: [bundle-relative paths of the files that need it]}: what must come from
    the system. The dynamic loader is left out.
    """
    present: set[str] = set()
    needs: dict[str, list[str]] = {}
    for path in sorted(bundle_dir.rglob("*")):
        present.add(path.name)
        if path.is_symlink() or not path.is_file() or not elf.is_elf(path):
            continue
        for soname in elf.needed_libraries(path):
            needs.setdefault(soname, []).append(path.relative_to(bundle_dir).as_posix())
    return {name: users for name, users in sorted(needs.items())
            if name not in present and name not in LOADER_SONAMES}


def undeclared_sonames(bundle_dir: Path) -> dict[str, list[str]]:
    """Unbundled sonames (see `unbundled_sonames`) missing from SYSTEM_LIBRARIES: each one is
    a dependency the packages would not declare."""
    declared = declared_sonames()
    return {name: users for name, users in unbundled_sonames(bundle_dir).items()
            if name not in declared}
