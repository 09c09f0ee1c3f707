"""Idle lock: after the site's idle time every window hides patient data until sign-in."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow
from pytestqt.qtbot import QtBot

from wardsync.ui.idle_lock import LOCKED_TITLE, IdleMonitor, ScreenLock


def make_window(qtbot: QtBot, text: str) -> QMainWindow:
    window = QMainWindow()
    window.setWindowTitle(f"Patient chart — {text}")
    window.setCentralWidget(QLabel(text))
    window.statusBar().showMessage("Live")
    qtbot.addWidget(window)
    window.show()
    return window


def test_idle_time_fires_once_and_input_resets_it(qtbot: QtBot) -> None:
    now = [0.0]
    monitor = IdleMonitor(600.0, clock=lambda: now[0])
    monitor.start()
    fired: list[bool] = []
    monitor.idle_timed_out.connect(lambda: fired.append(True))
    now[0] = 599.0
    assert not monitor.check()
    window = make_window(qtbot, "x")
    QApplication.sendEvent(window, QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_A,
                                             Qt.KeyboardModifier.NoModifier, "a"))
    assert monitor.last_input == 599.0  # a key press counts as activity
    now[0] = 1198.0
    assert not monitor.check()
    now[0] = 1199.5
    assert monitor.check() and fired == [True]
    assert not monitor.check()  # once per idle period
    monitor.stop()



def test_lock_hides_every_window_and_unlock_restores_them(qtbot: QtBot) -> None:
    windows = [make_window(qtbot, "ZZEXAMPLE, Charlie"), make_window(qtbot, "TESTCASE, Papa")]
    lock = ScreenLock()
    lock.lock(windows, "Dr Demo Clinician")
    for w in windows:
        assert w.windowTitle() == LOCKED_TITLE
        texts = " ".join(lbl.text() for lbl in w.findChildren(QLabel) if lbl.isVisibleTo(w))
        assert "ZZEXAMPLE" not in texts and "TESTCASE" not in texts
        assert "locked" in texts.lower()
        assert not w.statusBar().isVisible()
    requested: list[bool] = []
    lock.unlock_requested.connect(lambda: requested.append(True))
    windows[0].centralWidget().button.click()
    assert requested == [True]
    lock.unlock()
    assert not lock.locked
    assert windows[0].windowTitle() == "Patient chart — ZZEXAMPLE, Charlie"
    assert windows[0].centralWidget().text() == "ZZEXAMPLE, Charlie"
    assert windows[1].statusBar().isVisible()


def test_a_window_without_content_yet_locks_and_unlocks(qtbot: QtBot) -> None:
    empty = QMainWindow()
    empty.setWindowTitle("Patient chart")
    qtbot.addWidget(empty)
    empty.show()
    chart = make_window(qtbot, "ZZEXAMPLE, Charlie")
    lock = ScreenLock()
    lock.lock([empty, chart], "Dr Demo Clinician")
    assert empty.windowTitle() == LOCKED_TITLE
    lock.unlock()
    assert not lock.locked
    assert empty.centralWidget() is None and empty.windowTitle() == "Patient chart"
    assert chart.centralWidget().text() == "ZZEXAMPLE, Charlie"
