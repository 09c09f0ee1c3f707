"""Window layouts: which panels were open, where and how big, restored at the next start.

What is stored. Per workstation user, in `<user config dir>/layout.json` (`infra.paths`,
readable by the user only), keyed by the workstation's host name (on Windows the config dir
roams between workstations, and each has its own monitors): for each open panel its kind
("ward", "diagnostics", ...), frame geometry, client size, screen name and geometry, and
whether it was maximized. Never patient data: no patient id, name or reference, not even
for patient windows, and no window titles (they can name a patient).

Patient windows are not reopened. The file cannot say which patient a chart showed, and
reopening a chart for whoever happens to be selected would silently show a different
patient, which is worse than showing none. Their geometry is still remembered per kind
(`last_by_kind`), and the next window of that kind the clinician opens takes that place.
A window counts as a patient window when `is_patient_window(window)` says so (by default: a
truthy `patient_bound`, `patient_id` or `patient_ref` attribute).

Three parts, split along their seams: the pure geometry (`viewmodels.window_geometry`: where a
window goes when its monitor is gone) and the saved document (`viewmodels.window_layout`),
both tested with fake screens; the atomic, user-only file (`station.layout_store`); and this
module, the Qt side, which reads the real screens and windows and keeps the file up to date.

Saving. `LayoutKeeper.track` follows a window's moves, resizes and state changes and saves a
second after the last one (so a crash loses at most a second of arranging). When a window
closes it leaves the layout, unless it is the last one: closing the last window ends the
app, and that window is what the next start should show. At quit, call `close()` before
closing the windows programmatically.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, QRect, Qt, QTimer
from PySide6.QtGui import QGuiApplication, QScreen
from PySide6.QtWidgets import QWidget

from wardsync.station.layout_store import LayoutStore
from wardsync.viewmodels.window_geometry import Rect, Screen, cascade, place
from wardsync.viewmodels.window_layout import (
    MAX_WINDOWS,
    HostLayout,
    WindowPlacement,
    layout_for_host,
)

AUTOSAVE_DELAY_MS = 1000  # save this long after the last move or resize


def _rect(r: QRect) -> Rect:
    return Rect(r.x(), r.y(), max(1, r.width()), max(1, r.height()))


def screens_from_qt() -> list[Screen]:
    """The screens attached now, primary first marked."""
    primary = QGuiApplication.primaryScreen()
    return [Screen(s.name(), _rect(s.geometry()), _rect(s.availableGeometry()), s is primary)
            for s in QGuiApplication.screens()]


def default_is_patient_window(window: QWidget) -> bool:
    """A window showing one patient: it says so with `patient_bound` or carries a patient."""
    return bool(getattr(window, "patient_bound", False) or getattr(window, "patient_id", None)
                or getattr(window, "patient_ref", None))


def capture(window: QWidget) -> WindowPlacement:
    """Where `window` is now (its normal geometry if maximized)."""
    kind = str(getattr(window, "kind", "") or "panel")
    maximized = window.isMaximized()
    if maximized:
        # normalGeometry() is the client area; add the frame margins (as they are now) so
        # the saved frame means the same as for a window in its normal state.
        inner, outer = window.geometry(), window.frameGeometry()
        left, top = inner.x() - outer.x(), inner.y() - outer.y()
        right, bottom = outer.right() - inner.right(), outer.bottom() - inner.bottom()
        normal = window.normalGeometry()
        frame = _rect(normal.adjusted(-left, -top, right, bottom))
        width, height = max(1, normal.width()), max(1, normal.height())
    else:
        frame = _rect(window.frameGeometry())
        width, height = max(1, window.width()), max(1, window.height())
    screen: QScreen | None = window.screen()
    return WindowPlacement(
        kind, frame, width, height,
        screen.name() if screen is not None else "",
        _rect(screen.geometry()) if screen is not None else None, maximized,
    )


def apply(window: QWidget, placement: WindowPlacement, screens: Sequence[Screen] | None = None,
          *, avoid: Iterable[Rect] = ()) -> Rect:
    """Put `window` where `placement` says, fitted onto `screens` (default: the real ones).

    Returns the frame rectangle used. Works before or after the window is shown: `move`
    positions the frame and `resize` the client area (Qt "Window Geometry").
    """
    current = list(screens) if screens is not None else screens_from_qt()
    if not current:
        return placement.frame
    frame, screen = place(placement.frame, placement.screen, placement.screen_geometry,
                          current)
    frame = cascade(frame, avoid, screen.available)
    # The frame may have shrunk to fit: shrink the client area by the same amount.
    width = max(1, placement.width - (placement.frame.width - frame.width))
    height = max(1, placement.height - (placement.frame.height - frame.height))
    if window.isMaximized():
        window.showNormal()
    window.move(frame.x, frame.y)
    window.resize(width, height)
    if placement.maximized:
        window.setWindowState(window.windowState() | Qt.WindowState.WindowMaximized)
    return frame


@dataclass
class _Tracked:
    window: QWidget
    placement: WindowPlacement
    patient: bool
    open: bool = True


class LayoutKeeper(QObject):
    """Restores the saved windows at start and keeps the layout file up to date.

    Windows need a `kind` attribute (PanelWindow has one). Call `restore(openers)` once
    the app can open windows, `adopt(window)` for every other window it opens, and
    `close()` at quit before closing the windows.
    """

    def __init__(
        self,
        store: LayoutStore | None = None,
        *,
        host: str | None = None,
        is_patient_window: Callable[[QWidget], bool] = default_is_patient_window,
        screens: Callable[[], Sequence[Screen]] = screens_from_qt,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.store = store or LayoutStore()
        self.host = host or platform.node() or "this-workstation"
        self._is_patient = is_patient_window
        self._screens = screens
        self._hosts = self.store.load()
        self.saved = layout_for_host(self._hosts, self.host)
        self._tracked: dict[int, _Tracked] = {}  # id(window) -> entry, in opening order
        self._closed = False
        self._autosave = QTimer(self)
        self._autosave.setSingleShot(True)
        self._autosave.setInterval(AUTOSAVE_DELAY_MS)
        self._autosave.timeout.connect(self._on_autosave_timeout)

    # ------------------------------------------------------------------ restoring
    def restore(self, openers: Mapping[str, Callable[[], QWidget]]) -> list[QWidget]:
        """Reopen the saved windows whose kind has an opener; returns them, in saved order.

        Openers are for panels that need no patient (ward, diagnostics, ...). A saved kind
        without an opener is skipped: the layout never reopens a patient window.
        """
        opened: list[QWidget] = []
        for placement in self.saved.windows:
            opener = openers.get(placement.kind)
            if opener is None:
                continue
            window = opener()
            apply(window, placement, self._screens())
            self.track(window)
            opened.append(window)
        return opened

    def adopt(self, window: QWidget) -> None:
        """Track a window opened during the session, placing it where its kind was last."""
        last = self.saved.last_by_kind.get(str(getattr(window, "kind", "")))
        if last is not None:
            taken = [t.placement.frame for t in self._tracked.values()
                     if t.open and t.window is not window]
            apply(window, last, self._screens(), avoid=taken)
        self.track(window)

    # ------------------------------------------------------------------ tracking
    def track(self, window: QWidget) -> None:
        """Follow `window`'s geometry from now on (idempotent)."""
        if self._closed or id(window) in self._tracked:
            return
        # A window opening ends any "last window closed" entries kept from before.
        for key in [k for k, t in self._tracked.items() if not t.open]:
            del self._tracked[key]
        self._tracked[id(window)] = _Tracked(window, capture(window), self._is_patient(window))
        window.installEventFilter(self)
        self._autosave.start()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        entry = self._tracked.get(id(watched))
        if entry is None or entry.window is not watched:
            return False
        kind = event.type()
        if kind in (QEvent.Type.Move, QEvent.Type.Resize, QEvent.Type.WindowStateChange,
                    QEvent.Type.Show):
            if entry.window.isVisible():
                entry.placement = capture(entry.window)
                entry.open = True
                self._autosave.start()
        elif kind == QEvent.Type.Hide and not event.spontaneous():
            # Closed (or hidden by the app). Minimizing can send a spontaneous hide: not this.
            self._on_window_hidden(entry)
        return False

    def _on_window_hidden(self, entry: _Tracked) -> None:
        entry.open = False
        entry.window.removeEventFilter(self)
        others_open = any(t.open for t in self._tracked.values())
        if others_open:
            # Remember where its kind was, then forget the window.
            self._remember_kind(entry)
            del self._tracked[id(entry.window)]
        # else: the last window closing ends the app; it stays as what to restore.
        self._autosave.start()

    def _remember_kind(self, entry: _Tracked) -> None:
        self.saved.last_by_kind[entry.placement.kind] = entry.placement

    # ------------------------------------------------------------------ saving
    def current(self) -> HostLayout:
        """The layout as it would be saved now."""
        windows = [t.placement for t in self._tracked.values() if not t.patient]
        last = dict(self.saved.last_by_kind)
        for t in self._tracked.values():
            last[t.placement.kind] = t.placement
        return HostLayout(windows=windows[:MAX_WINDOWS], last_by_kind=last,
                          saved_wall=time.time())

    def save(self) -> bool:
        """Write the current layout now; False (logged) if the file cannot be written."""
        self._autosave.stop()
        layout = self.current()
        self._hosts[self.host] = layout
        self.saved = layout
        return self.store.save(self._hosts)

    def close(self) -> bool:
        """Save and stop following the windows (call before the app closes them at quit)."""
        if self._closed:
            return True
        ok = self.save()
        self._closed = True
        for t in self._tracked.values():
            if t.open:
                t.window.removeEventFilter(self)
        self._tracked.clear()
        return ok

    def _on_autosave_timeout(self) -> None:
        if not self._closed:
            self.save()
