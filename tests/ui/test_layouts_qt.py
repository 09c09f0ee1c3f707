"""Layouts with real Qt windows: a window's place and size are saved and restored, a window
from a monitor that is gone lands on the primary screen, patient windows are never reopened
(only their place is reused), the last window closed is what the next start shows, and a
broken file never stops the app."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QMainWindow
from pytestqt.qtbot import QtBot

from wardsync.station.layout_store import LayoutStore
from wardsync.ui import layouts
from wardsync.ui.layouts import LayoutKeeper, screens_from_qt
from wardsync.viewmodels.window_geometry import CASCADE_STEP_PX, Rect

HOST = "ws-ward7-01"


class Panel(QMainWindow):
    kind = "ward"


class Diagnostics(QMainWindow):
    kind = "diagnostics"


class Chart(QMainWindow):
    kind = "chart"
    patient_bound = True


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "wardsync" / "layout.json"


@pytest.fixture
def keepers() -> Iterator[list[LayoutKeeper]]:
    made: list[LayoutKeeper] = []
    yield made
    for k in made:
        k.close()


def keeper(path: Path, keepers: list[LayoutKeeper], host: str = HOST) -> LayoutKeeper:
    k = LayoutKeeper(LayoutStore(path), host=host)
    keepers.append(k)
    return k


def opener(qtbot: QtBot, cls: type[QMainWindow], opened: list[QMainWindow]):
    def open_window() -> QMainWindow:
        w = cls()
        qtbot.addWidget(w)
        w.show()
        opened.append(w)
        return w
    return open_window


def show_at(qtbot: QtBot, cls: type[QMainWindow], x: int, y: int, w: int, h: int) -> QMainWindow:
    window = cls()
    qtbot.addWidget(window)
    window.move(x, y)
    window.resize(w, h)
    window.show()
    qtbot.waitExposed(window)
    return window


def saved(path: Path) -> dict:
    return json.loads(path.read_text())["hosts"][HOST]


def test_a_window_is_saved_and_restored_in_place(
    qtbot: QtBot, path: Path, keepers: list[LayoutKeeper]
) -> None:
    first = keeper(path, keepers)
    ward = show_at(qtbot, Panel, 100, 80, 500, 400)
    diag = show_at(qtbot, Diagnostics, 150, 120, 420, 300)
    first.track(ward)
    first.track(diag)
    assert first.close()
    ward.close()
    diag.close()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700  # the user's eyes only
    doc = saved(path)
    assert [w["kind"] for w in doc["windows"]] == ["ward", "diagnostics"]
    assert doc["windows"][0]["frame"][:2] == [100, 80]
    assert doc["windows"][0]["size"] == [500, 400]

    opened: list[QMainWindow] = []
    second = keeper(path, keepers)
    restored = second.restore({"ward": opener(qtbot, Panel, opened),
                               "diagnostics": opener(qtbot, Diagnostics, opened)})
    assert restored == opened and [w.kind for w in restored] == ["ward", "diagnostics"]
    qtbot.waitUntil(lambda: restored[0].pos().x() == 100)
    assert (restored[0].pos().x(), restored[0].pos().y()) == (100, 80)
    assert (restored[0].width(), restored[0].height()) == (500, 400)
    assert (restored[1].pos().x(), restored[1].pos().y()) == (150, 120)
    assert (restored[1].width(), restored[1].height()) == (420, 300)


def test_a_maximized_window_comes_back_maximized_with_its_normal_size(
    qtbot: QtBot, path: Path, keepers: list[LayoutKeeper]
) -> None:
    k = keeper(path, keepers)
    ward = show_at(qtbot, Panel, 60, 50, 480, 360)
    k.track(ward)
    ward.showMaximized()
    qtbot.waitUntil(ward.isMaximized)
    k.close()
    entry = saved(path)["windows"][0]
    assert entry["maximized"] is True and entry["size"] == [480, 360]
    assert entry["frame"][:2] == [60, 50]  # the frame, not the client area, of the normal state

    opened: list[QMainWindow] = []
    (again,) = keeper(path, keepers).restore({"ward": opener(qtbot, Panel, opened)})
    qtbot.waitUntil(again.isMaximized)
    again.showNormal()
    qtbot.waitUntil(lambda: not again.isMaximized())
    assert (again.width(), again.height()) == (480, 360)


def test_a_window_from_a_monitor_that_is_gone_lands_on_the_primary_screen(
    qtbot: QtBot, path: Path, keepers: list[LayoutKeeper]
) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "hosts": {HOST: {"windows": [{
        "kind": "ward", "frame": [2100, 50, 700, 500], "size": [696, 496], "screen": "HDMI-9",
        "screen_geometry": [2000, 0, 1920, 1080], "maximized": False}]}}}))
    opened: list[QMainWindow] = []
    (window,) = keeper(path, keepers).restore({"ward": opener(qtbot, Panel, opened)})
    primary = QApplication.primaryScreen().availableGeometry()
    # Offset from the old screen's corner kept: (100, 50) on the primary.
    qtbot.waitUntil(lambda: window.pos().x() == primary.x() + 100)
    frame = window.frameGeometry()
    assert primary.contains(frame), (frame, primary)
    assert window.pos().y() == primary.y() + 50

    # Bigger than the whole primary screen: shrunk to fit its available area.
    path.write_text(json.dumps({"version": 1, "hosts": {HOST: {"windows": [{
        "kind": "ward", "frame": [2000, 0, 5000, 4000], "size": [4996, 3970],
        "screen": "HDMI-9", "screen_geometry": [2000, 0, 1920, 1080]}]}}}))
    (big,) = keeper(path, keepers).restore({"ward": opener(qtbot, Panel, opened)})
    qtbot.waitUntil(lambda: big.frameGeometry().width() <= primary.width())
    assert primary.contains(big.frameGeometry())


def test_patient_windows_are_not_reopened_but_their_place_is_reused(
    qtbot: QtBot, path: Path, keepers: list[LayoutKeeper]
) -> None:
    k = keeper(path, keepers)
    ward = show_at(qtbot, Panel, 20, 20, 400, 300)
    chart = show_at(qtbot, Chart, 300, 200, 450, 350)
    chart.setWindowTitle("Chart — ZZTEST, Amber (MRN 00000042)")
    k.track(ward)
    k.track(chart)
    k.close()
    text = path.read_text()
    assert "ZZTEST" not in text and "00000042" not in text and "Chart —" not in text
    doc = saved(path)
    assert [w["kind"] for w in doc["windows"]] == ["ward"]  # the chart is not reopened...
    assert doc["last_by_kind"]["chart"]["frame"][:2] == [300, 200]  # ...its place is kept

    opened: list[QMainWindow] = []
    k2 = keeper(path, keepers)
    restored = k2.restore({"ward": opener(qtbot, Panel, opened),
                           "chart": opener(qtbot, Chart, opened)})
    assert [w.kind for w in restored] == ["ward"]
    # The clinician opens a chart: it takes the chart's last place.
    new_chart = Chart()
    qtbot.addWidget(new_chart)
    k2.adopt(new_chart)
    new_chart.show()
    qtbot.waitUntil(lambda: new_chart.pos().x() == 300)
    assert (new_chart.pos().y(), new_chart.width(), new_chart.height()) == (200, 450, 350)
    # A second chart does not hide exactly behind the first.
    other = Chart()
    qtbot.addWidget(other)
    k2.adopt(other)
    other.show()
    qtbot.waitUntil(lambda: other.pos().x() == 300 + CASCADE_STEP_PX)


def test_closing_windows_updates_the_layout_and_the_last_one_stays(
    qtbot: QtBot, path: Path, keepers: list[LayoutKeeper], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layouts, "AUTOSAVE_DELAY_MS", 50)
    k = keeper(path, keepers)
    ward = show_at(qtbot, Panel, 20, 20, 400, 300)
    diag = show_at(qtbot, Diagnostics, 200, 100, 400, 300)
    k.track(ward)
    k.track(diag)
    qtbot.waitUntil(lambda: path.exists() and len(saved(path)["windows"]) == 2)
    ward.move(60, 70)  # moving a window saves shortly after
    qtbot.waitUntil(lambda: saved(path)["windows"][0]["frame"][:2] == [60, 70])
    diag.close()  # not the last: it leaves the layout
    qtbot.waitUntil(lambda: [w["kind"] for w in saved(path)["windows"]] == ["ward"])
    assert saved(path)["last_by_kind"]["diagnostics"]["frame"][:2] == [200, 100]
    ward.close()  # the last one: the app ends, and this is what the next start shows
    qtbot.wait(200)
    assert [w["kind"] for w in saved(path)["windows"]] == ["ward"]
    # A window opened afterwards replaces the closed last one.
    again = show_at(qtbot, Diagnostics, 10, 10, 400, 300)
    k.track(again)
    qtbot.waitUntil(lambda: [w["kind"] for w in saved(path)["windows"]] == ["diagnostics"])


def test_a_broken_or_unwritable_file_never_stops_the_app(
    qtbot: QtBot, path: Path, keepers: list[LayoutKeeper], caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "hosts": {"ws-ward7-01": {"windows": [{"kind": ')
    k = keeper(path, keepers)
    opened: list[QMainWindow] = []
    assert k.restore({"ward": opener(qtbot, Panel, opened)}) == []
    assert any("layout: ignoring" in r.getMessage() for r in caplog.records)
    ward = show_at(qtbot, Panel, 20, 20, 400, 300)
    k.track(ward)
    assert k.save()  # the broken file is replaced by a good one
    assert [w["kind"] for w in saved(path)["windows"]] == ["ward"]

    path.write_bytes(b"\xff\xfe" * 10)
    assert keeper(path, keepers).saved.windows == []
    path.unlink()
    path.mkdir()  # a directory where the file should be: cannot be replaced
    assert k.save() is False
    assert any("cannot save" in r.getMessage() for r in caplog.records)


def test_the_real_screens_are_read(qtbot: QtBot) -> None:
    screens = screens_from_qt()
    assert screens and sum(s.primary for s in screens) == 1
    primary = next(s for s in screens if s.primary)
    geo = QApplication.primaryScreen().geometry()
    assert primary.geometry == Rect(geo.x(), geo.y(), geo.width(), geo.height())
