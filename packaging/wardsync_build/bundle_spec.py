"""What goes into the PyInstaller one-folder bundle (read by `packaging/wardsync.spec`).

Kept out of the spec so the tests can check the same lists the build uses.
"""

from __future__ import annotations

import posixpath
import sys
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

EXECUTABLE_NAME = "wardsync"
# Windows only: a console twin of the windowed wardsync.exe, for `config show|check`, `sandbox`
# and `--version` in scripts (a windowed program has no stdout to print to).
WINDOWS_CLI_EXECUTABLE_NAME = "wardsync-cli"
BUNDLE_DIR_NAME = "wardsync"
# PyInstaller >= 6 puts everything but the executable in this folder; sys._MEIPASS names it.
CONTENTS_DIR_NAME = "_internal"
RESOURCES_DIR_NAME = "resources"

# Qt modules the app needs that its imports alone may not show PyInstaller yet: QtCharts for
# the trend panels (issue 8 lists it), QtSvg so the SVG icon renders, QtMultimedia for the
# alert tones (ui.alert_notifier imports it inside a try, falling back to the bell).
QT_MODULES = ("PySide6.QtCharts", "PySide6.QtSvg", "PySide6.QtMultimedia")

# Packages loaded by name at run time, which PyInstaller's import scan cannot see.
DYNAMIC_PACKAGES = (
    "wardsync",  # sub-commands import their modules lazily
    "fhir.resources.R4B",  # get_fhir_model_class() imports the model module by name
)

# Never bundled: WebEngine (issue 8: "no WebEngine"; about 200 MB and a sandboxed Chromium),
# the other Qt bindings qasync probes for (PyInstaller refuses two bindings in one bundle),
# Qt modules the app does not use that hooks might pull in, the other FHIR versions, and the
# developer tools that live in the same virtual environment.
EXCLUDED_MODULES = (
    "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets",
    "PySide6.QtWebEngineQuick",
    "PySide6.QtWebChannel",
    "PySide6.QtWebSockets",
    "PySide6.QtQml",
    "PySide6.QtQuick",
    "PySide6.QtQuickWidgets",
    "PySide6.Qt3DCore",
    "PySide6.QtDesigner",
    "PySide6.QtPdf",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "fhir.resources.STU3",
    "tkinter",
    "pytest",
    "_pytest",
    "hypothesis",
    "pytestqt",
    "importlinter",
    "grimp",
    "PyInstaller",
    "setuptools",
    "pip",
)


# Qt plugins left out of the Linux bundle, with the libraries only they need:
# - the GTK 3 theme would copy the build machine's whole GTK stack into the bundle; the
#   xdg-desktop-portal theme stays, so file dialogs still follow the desktop;
# - the QML virtual keyboard (and with it QtQml/QtQuick): ward PCs have keyboards;
# - the PDF image format (QtPdf); the framebuffer/EGLFS/Vulkan-display platforms and the evdev
#   input plugins that serve them, which are for kiosks without a window system.
# xcb, wayland, offscreen and minimal stay (offscreen runs the headless checks).
DROPPED_QT_PLUGINS = (
    "platformthemes/libqgtk3.so",
    "platforminputcontexts/libqtvirtualkeyboardplugin.so",
    "imageformats/libqpdf.so",
    "platforms/libqeglfs.so",
    "platforms/libqlinuxfb.so",
    "platforms/libqminimalegl.so",
    "platforms/libqvkkhrdisplay.so",
    "platforms/libqvnc.so",
    "egldeviceintegrations/",
    "generic/",
)
QT_PLUGINS_DIR = "PySide6/Qt/plugins/"
# Loaded with dlopen() by the bootloader, so nothing names it in DT_NEEDED.
ALWAYS_KEPT_LIBRARY_PREFIXES = ("libpython",)

TocEntry = tuple[str, str, str]  # PyInstaller TOC: (destination name, source path, typecode)


def is_dropped_plugin(dest_name: str) -> bool:
    """True for a Qt plugin in DROPPED_QT_PLUGINS (by its path inside the bundle)."""
    dest = PurePosixPath(dest_name).as_posix()
    if not dest.startswith(QT_PLUGINS_DIR):
        return False
    inside = dest[len(QT_PLUGINS_DIR):]
    return any(inside == p or (p.endswith("/") and inside.startswith(p))
               for p in DROPPED_QT_PLUGINS)


def _symlink_target(dest: str, link: str) -> str:
    """The bundle path a SYMLINK entry points at (its link is relative to its own folder)."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(dest), link))


def prune(
    binaries: Iterable[TocEntry], datas: Iterable[TocEntry], needed: Callable[[str], list[str]]
) -> tuple[list[TocEntry], list[TocEntry], list[str]]:
    """Drop the Qt plugins in DROPPED_QT_PLUGINS and every shared library that nothing left
    in the bundle needs any more, with the symbolic links to them.

    Returns (kept binaries, kept datas, dropped destination names, sorted). Roots are the
    Python extension modules, the remaining Qt plugins, libpython and anything that is not a
    shared library; a library stays if a root names it in DT_NEEDED, directly or through other
    kept libraries (`needed(source path)` lists those names). PyInstaller names a library by
    its top-level SYMLINK (`libQt6Core.so.6 -> PySide6/Qt/lib/libQt6Core.so.6`, a DATA-side
    entry) or by its own file name.
    """
    entries = [(PurePosixPath(d).as_posix(), s, k) for d, s, k in binaries]
    dropped = [e[0] for e in entries if is_dropped_plugin(e[0])]
    by_dest = {e[0]: e for e in entries if not is_dropped_plugin(e[0])}
    links = {PurePosixPath(d).as_posix(): _symlink_target(PurePosixPath(d).as_posix(), s)
             for d, s, k in datas if k == "SYMLINK"}

    by_name: dict[str, str] = {}  # library file name -> destination of the real file
    for dest in by_dest:
        by_name[PurePosixPath(dest).name] = dest
    for dest, target in links.items():
        by_name.setdefault(PurePosixPath(dest).name, target)

    def is_root(dest: str, kind: str) -> bool:
        name = PurePosixPath(dest).name
        return (kind == "EXTENSION" or dest.startswith(QT_PLUGINS_DIR)
                or name.startswith(ALWAYS_KEPT_LIBRARY_PREFIXES) or ".so" not in name)

    reached: set[str] = set()
    todo = [dest for dest, e in by_dest.items() if is_root(dest, e[2])]
    while todo:
        dest = todo.pop()
        if dest in reached or dest not in by_dest:
            continue
        reached.add(dest)
        for soname in needed(by_dest[dest][1]):
            target = by_name.get(soname)
            if target is not None and target not in reached:
                todo.append(target)

    kept_binaries = [e for dest, e in by_dest.items() if dest in reached]
    dropped.extend(dest for dest in by_dest if dest not in reached)
    gone = set(dropped)
    kept_datas: list[TocEntry] = []
    for entry in datas:
        dest = PurePosixPath(entry[0]).as_posix()
        if entry[2] == "SYMLINK" and links[dest] in gone:
            dropped.append(dest)
        else:
            kept_datas.append(entry)
    return kept_binaries, kept_datas, sorted(dropped)


def datas(repo: Path) -> list[tuple[str, str]]:
    """(source, destination folder) pairs: the whole `resources/` tree under `resources/`.

    `wardsync.infra.paths.resources_dir()` looks for `<sys._MEIPASS>/resources` when frozen.
    """
    return [(str(repo / RESOURCES_DIR_NAME), RESOURCES_DIR_NAME)]


def hidden_imports(collect_submodules: Callable[[str], list[str]]) -> list[str]:
    """Modules to bundle beyond those the import scan finds (PyInstaller's `hiddenimports`).

    `collect_submodules` is PyInstaller's own (passed in so this module imports nothing
    from PyInstaller and the tests can call it with a stand-in that lists packages).
    """
    names: list[str] = list(QT_MODULES)
    for package in DYNAMIC_PACKAGES:
        names.extend(collect_submodules(package))
    return sorted(set(names))


def windows_icon(repo: Path) -> str | None:
    """The .ico for the Windows executable (ignored elsewhere)."""
    if not sys.platform.startswith("win"):
        return None
    return str(repo / RESOURCES_DIR_NAME / "icons" / "wardsync.ico")
