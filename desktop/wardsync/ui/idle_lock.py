"""Shared-workstation protection: lock every window after a period without input.

`IdleMonitor` watches keyboard, mouse, wheel and touch input application-wide and says when the
site's idle time (`security.idle_lock_min`, default 10 min) has passed. `ScreenLock` then
hides every window's content — the central widget, docks, tool and status bars, and a title
that may name a patient — behind a plain lock page, until the user signs in again. Locking
does not stop the sync stack: data stays fresh underneath and alerts keep arriving.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QLabel,
    QMainWindow,
    QPushButton,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

CHECK_INTERVAL_MS = 1000
LOCKED_TITLE = "WardSync — locked"
_INPUT_EVENTS = frozenset({
    QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.MouseMove,
    QEvent.Type.Wheel, QEvent.Type.TouchBegin, QEvent.Type.TabletPress,
})


class IdleMonitor(QObject):
    """Emits `idle_timed_out` once the application had no user input for `idle_s`."""

    idle_timed_out = Signal()

    def __init__(self, idle_s: float, *, clock: Callable[[], float] = time.monotonic,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.idle_s = idle_s
        self._clock = clock
        self.last_input = clock()
        self._fired = False
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._on_timer_timeout)

    def start(self) -> None:
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)
        self.last_input = self._clock()
        self._timer.start(CHECK_INTERVAL_MS)

    def stop(self) -> None:
        self._timer.stop()
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in _INPUT_EVENTS:
            self.note_input()
        return False

    def note_input(self) -> None:
        self.last_input = self._clock()
        self._fired = False

    def check(self) -> bool:
        """Fire the signal if the idle time has passed (once per idle period)."""
        if not self._fired and self._clock() - self.last_input >= self.idle_s:
            self._fired = True
            self.idle_timed_out.emit()
            return True
        return False

    def _on_timer_timeout(self) -> None:
        self.check()


class _LockPage(QWidget):
    unlock_requested = Signal()

    def __init__(self, user_name: str, parent: QWidget | None = None,
                 message: str | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("lockPage")
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        title = QLabel("WardSync is locked", self)
        title.setObjectName("lockTitle")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        text = QLabel(message or (
            f"Patient information is hidden because this workstation was not used for a "
            f"while. {user_name or 'The last user'} — or another clinician — can sign in to "
            f"continue."), self)
        text.setObjectName("lockMessage")
        text.setWordWrap(True)
        text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.button = QPushButton("Sign in to unlock", self)
        self.button.setAccessibleName("Sign in to unlock WardSync")
        self.button.setDefault(True)
        self.button.clicked.connect(self.unlock_requested)
        layout.addWidget(title)
        layout.addWidget(text)
        layout.addWidget(self.button, 0, Qt.AlignmentFlag.AlignCenter)
        layout.addStretch(2)


class ScreenLock(QObject):
    """Hides and restores the content of a set of main windows."""

    unlock_requested = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._saved: dict[QMainWindow, tuple[QWidget | None, str, list[QWidget]]] = {}
        self.message: str | None = None

    @property
    def locked(self) -> bool:
        return bool(self._saved)

    def lock(self, windows: list[QMainWindow], user_name: str,
             message: str | None = None) -> None:
        self.message = message
        for window in windows:
            if window in self._saved:
                continue
            central = window.takeCentralWidget()
            hidden: list[QWidget] = [
                w for kind in (QDockWidget, QToolBar) for w in window.findChildren(kind)
                if w.isVisible()]
            status = window.statusBar()
            if status.isVisible():
                hidden.append(status)
            for widget in hidden:
                widget.hide()
            self._saved[window] = (central, window.windowTitle(), hidden)
            page = _LockPage(user_name, window, message)
            page.unlock_requested.connect(self.unlock_requested)
            window.setCentralWidget(page)
            page.show()
            window.setWindowTitle(LOCKED_TITLE)

    def unlock(self) -> None:
        for window, (central, title, hidden) in self._saved.items():
            page = window.takeCentralWidget()
            if page is not None:
                page.deleteLater()
            if central is not None:  # a window may have had no content yet
                window.setCentralWidget(central)
                central.show()
            window.setWindowTitle(title)
            for widget in hidden:
                widget.show()
        self._saved.clear()

    def forget(self, window: QMainWindow) -> None:
        """A window closed while locked: nothing to restore for it."""
        self._saved.pop(window, None)
