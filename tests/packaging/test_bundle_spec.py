"""What the PyInstaller spec puts in the bundle and what it leaves out."""

from __future__ import annotations

import pkgutil
import re
from importlib import import_module
from pathlib import Path

from wardsync_build import bundle_spec

REPO = Path(__file__).resolve().parents[2]
PLUGINS = bundle_spec.QT_PLUGINS_DIR


def _collect_submodules(package: str) -> list[str]:
    """What PyInstaller's collect_submodules returns, from the installed package."""
    module = import_module(package)
    return [package] + [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]


def test_hidden_imports_cover_charts_lazy_commands_and_fhir_models():
    names = bundle_spec.hidden_imports(_collect_submodules)
    assert "PySide6.QtCharts" in names
    assert {"wardsync.sandbox.cli", "wardsync.infra.config_cli", "wardsync.ui.app"} <= set(names)
    assert "fhir.resources.R4B.observation" in names
    assert not any(n.startswith("fhir.resources.STU3") for n in names)


def test_no_webengine_and_no_second_qt_binding():
    excluded = set(bundle_spec.EXCLUDED_MODULES)
    assert {"PySide6.QtWebEngineCore", "PySide6.QtWebEngineWidgets"} <= excluded
    assert {"PyQt5", "PyQt6", "PySide2"} <= excluded


def test_every_qt_module_the_app_imports_is_bundled():
    # A panel that starts using a Qt module the spec excludes would break only in the
    # installed app; this catches it in the normal test run.
    used = set()
    for path in (REPO / "desktop" / "wardsync").rglob("*.py"):
        used |= set(re.findall(r"PySide6\.(Qt\w+)", path.read_text(encoding="utf-8")))
    excluded = {m.removeprefix("PySide6.") for m in bundle_spec.EXCLUDED_MODULES}
    assert used, "the scan found no Qt imports"
    assert not used & excluded, used & excluded


def test_resources_go_where_the_app_looks_for_them():
    assert bundle_spec.datas(REPO) == [(str(REPO / "resources"), "resources")]
    # infra.paths.resources_dir() looks in <sys._MEIPASS>/resources when frozen.
    source = (REPO / "desktop" / "wardsync" / "infra" / "paths.py").read_text(encoding="utf-8")
    assert 'Path(bundle) / "resources"' in source


def test_the_spec_uses_these_lists():
    spec = (REPO / "packaging" / "wardsync.spec").read_text(encoding="utf-8")
    for use in ("bundle_spec.datas(REPO)", "bundle_spec.hidden_imports(collect_submodules)",
                "bundle_spec.EXCLUDED_MODULES", "bundle_spec.prune(", "COLLECT("):
        assert use in spec


def test_dropped_plugins_are_matched_by_folder_and_by_file():
    assert bundle_spec.is_dropped_plugin(PLUGINS + "platformthemes/libqgtk3.so")
    assert bundle_spec.is_dropped_plugin(PLUGINS + "generic/libqevdevmouseplugin.so")
    assert not bundle_spec.is_dropped_plugin(PLUGINS + "platforms/libqxcb.so")
    assert not bundle_spec.is_dropped_plugin(PLUGINS + "platforms/libqoffscreen.so")
    assert not bundle_spec.is_dropped_plugin("platformthemes/libqgtk3.so")  # not a Qt plugin


def test_pruning_drops_plugins_and_the_libraries_only_they_need():
    qt = "PySide6/Qt/lib/"
    binaries = [
        ("PySide6/QtWidgets.abi3.so", "/src/QtWidgets.abi3.so", "EXTENSION"),
        (qt + "libQt6Widgets.so.6", "/src/libQt6Widgets.so.6", "BINARY"),
        (qt + "libQt6Core.so.6", "/src/libQt6Core.so.6", "BINARY"),
        (qt + "libQt6Quick.so.6", "/src/libQt6Quick.so.6", "BINARY"),
        ("libgtk-3.so.0", "/usr/lib/libgtk-3.so.0", "BINARY"),
        ("libglib-2.0.so.0", "/usr/lib/libglib-2.0.so.0", "BINARY"),
        ("libpython3.11.so.1.0", "/py/libpython3.11.so.1.0", "BINARY"),
        (PLUGINS + "platforms/libqxcb.so", "/src/libqxcb.so", "BINARY"),
        (PLUGINS + "platformthemes/libqgtk3.so", "/src/libqgtk3.so", "BINARY"),
        (PLUGINS + "platforminputcontexts/libqtvirtualkeyboardplugin.so", "/src/vk.so", "BINARY"),
    ]
    datas = [
        ("libQt6Core.so.6", qt + "libQt6Core.so.6", "SYMLINK"),
        ("libQt6Quick.so.6", qt + "libQt6Quick.so.6", "SYMLINK"),
        ("resources/styles/light.qss", "/repo/resources/styles/light.qss", "DATA"),
    ]
    needs = {
        "/src/QtWidgets.abi3.so": ["libQt6Widgets.so.6"],
        "/src/libQt6Widgets.so.6": ["libQt6Core.so.6", "libc.so.6"],
        "/src/libQt6Core.so.6": ["libglib-2.0.so.0"],
        "/src/libQt6Quick.so.6": ["libQt6Core.so.6"],
        "/src/libqxcb.so": ["libQt6Core.so.6", "libxcb.so.1"],
        "/src/libqgtk3.so": ["libgtk-3.so.0", "libQt6Core.so.6"],
        "/src/vk.so": ["libQt6Quick.so.6"],
        "/usr/lib/libgtk-3.so.0": ["libglib-2.0.so.0"],
    }
    kept, kept_datas, dropped = bundle_spec.prune(binaries, datas, lambda s: needs.get(s, []))
    assert {e[0] for e in kept} == {
        "PySide6/QtWidgets.abi3.so", qt + "libQt6Widgets.so.6", qt + "libQt6Core.so.6",
        "libglib-2.0.so.0", "libpython3.11.so.1.0", PLUGINS + "platforms/libqxcb.so",
    }
    assert dropped == sorted([
        qt + "libQt6Quick.so.6", "libgtk-3.so.0", "libQt6Quick.so.6",
        PLUGINS + "platformthemes/libqgtk3.so",
        PLUGINS + "platforminputcontexts/libqtvirtualkeyboardplugin.so",
    ])
    # The symlink to a kept library and the data files stay.
    assert [e[0] for e in kept_datas] == ["libQt6Core.so.6", "resources/styles/light.qss"]
