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

Missing monitors. A saved window goes back onto its screen (matched by name, then by
geometry) clamped to that screen's available area (without task bars and docks). If the
screen is gone, the window moves onto the primary screen at the same offset from the
screen's corner, clamped to the primary screen's available area; a window larger than the
area is shrunk to fit. The pure geometry (`Rect`, `Screen`, `place`) has no Qt in it and is
tested with fake screens; `LayoutKeeper` is the Qt side.

Saving. `LayoutKeeper.track` follows a window's moves, resizes and state changes and saves a
second after the last one (so a crash loses at most a second of arranging). When a window
closes it leaves the layout, unless it is the last one: closing the last window ends the
app, and that window is what the next start should show. At quit, call `close()` before
closing the windows programmatically.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QRect, Qt, QTimer
from PySide6.QtGui import QGuiApplication, QScreen
from PySide6.QtWidgets import QWidget

from wardsync.infra.paths import ensure_private_dir, user_config_dir

log = logging.getLogger(__name__)

LAYOUT_FILE_NAME = "layout.json"
LAYOUT_VERSION = 1
MAX_LAYOUT_FILE_BYTES = 1024 * 1024  # a layout is a few KB; anything bigger is not ours
MAX_HOSTS = 16  # workstations remembered per user (roaming profiles), oldest dropped
MAX_WINDOWS = 32  # windows restored at most (a corrupted or hostile file cannot open 10 000)
AUTOSAVE_DELAY_MS = 1000  # save this long after the last move or resize
MIN_WINDOW_W_PX = 320  # a restored window is never smaller than this (if the screen allows)
MIN_WINDOW_H_PX = 200
CASCADE_STEP_PX = 32  # a new window of a kind already open at its place is offset this much


# ---------------------------------------------------------------------- pure geometry
@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in desktop coordinates (Qt's device-independent pixels)."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        """One past the last column (exclusive)."""
        return self.x + self.width

    @property
    def bottom(self) -> int:
        """One past the last row (exclusive)."""
        return self.y + self.height

    def intersection_area(self, other: Rect) -> int:
        w = min(self.right, other.right) - max(self.x, other.x)
        h = min(self.bottom, other.bottom) - max(self.y, other.y)
        return w * h if w > 0 and h > 0 else 0

    def contains(self, other: Rect) -> bool:
        return (self.x <= other.x and self.y <= other.y and other.right <= self.right
                and other.bottom <= self.bottom)

    def translated(self, dx: int, dy: int) -> Rect:
        return replace(self, x=self.x + dx, y=self.y + dy)

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]

    @classmethod
    def from_list(cls, value: object) -> Rect:
        """From `[x, y, width, height]`; ValueError unless four integers with positive size."""
        if (not isinstance(value, list) or len(value) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise ValueError("a rectangle is [x, y, width, height] in whole pixels")
        x, y, w, h = value
        if w <= 0 or h <= 0 or max(abs(x), abs(y), w, h) > 1_000_000:
            raise ValueError("a rectangle needs a positive, plausible size")
        return cls(x, y, w, h)


@dataclass(frozen=True, slots=True)
class Screen:
    """One monitor: its whole geometry and the part windows may use (without task bars)."""

    name: str
    geometry: Rect
    available: Rect
    primary: bool = False


def clamp(frame: Rect, area: Rect, *, min_w: int = MIN_WINDOW_W_PX,
          min_h: int = MIN_WINDOW_H_PX) -> Rect:
    """`frame` moved (and shrunk if needed) to lie wholly inside `area`.

    The size is kept when it fits, shrunk to the area when it does not, and raised to the
    minimum size where the area allows. Then the frame slides the least distance inside.
    """
    width = min(max(frame.width, min(min_w, area.width)), area.width)
    height = min(max(frame.height, min(min_h, area.height)), area.height)
    x = min(max(frame.x, area.x), area.right - width)
    y = min(max(frame.y, area.y), area.bottom - height)
    return Rect(x, y, width, height)


def primary_screen(screens: Sequence[Screen]) -> Screen:
    """The primary screen (the first one if none is marked). ValueError if there is none."""
    if not screens:
        raise ValueError("no screens")
    return next((s for s in screens if s.primary), screens[0])


def find_screen(screens: Sequence[Screen], name: str,
                geometry: Rect | None) -> Screen | None:
    """The saved screen if it is still attached: by name, else by identical geometry.

    Names identify a connector ("HDMI-1", "\\\\.\\DISPLAY2"); when a name changes (a driver
    update, a different dock) a screen at exactly the same place is the same monitor for
    our purpose.
    """
    named = [s for s in screens if name and s.name == name]
    if named:
        return named[0]
    if geometry is not None:
        return next((s for s in screens if s.geometry == geometry), None)
    return None


def place(frame: Rect, screen_name: str, screen_geometry: Rect | None,
          screens: Sequence[Screen]) -> tuple[Rect, Screen]:
    """Where a window saved at `frame` on screen `screen_name` goes on the current screens.

    On its own screen: clamped to its available area. Screen gone: onto the primary screen,
    at the same offset from the screen's top-left corner as before (or at the primary's
    top-left when the old screen's geometry is unknown), clamped to its available area.
    """
    own = find_screen(screens, screen_name, screen_geometry)
    if own is not None:
        return clamp(frame, own.available), own
    target = primary_screen(screens)
    if screen_geometry is not None:
        moved = frame.translated(target.geometry.x - screen_geometry.x,
                                 target.geometry.y - screen_geometry.y)
    else:
        moved = replace(frame, x=target.available.x, y=target.available.y)
    return clamp(moved, target.available), target


def cascade(frame: Rect, taken: Iterable[Rect], area: Rect,
            step: int = CASCADE_STEP_PX) -> Rect:
    """`frame` inside `area`, moved down-right by `step` until no rectangle in `taken`
    starts near its corner (within half a step: frame margins differ by a few pixels
    between a window just shown and one settled), so a second window of a kind does not
    hide behind the first. If every step is taken (the area's corner is reached) the frame
    stays put."""
    corners = [(r.x, r.y) for r in taken]
    near = step // 2

    def free(r: Rect) -> bool:
        return all(abs(r.x - x) > near or abs(r.y - y) > near for x, y in corners)

    for k in range(64):
        candidate = clamp(frame.translated(k * step, k * step), area)
        if free(candidate):
            return candidate
    return clamp(frame, area)


# ---------------------------------------------------------------------- the saved document
@dataclass(frozen=True, slots=True)
class WindowPlacement:
    """Where one panel window was: kind and geometry only (never what it showed)."""

    kind: str
    frame: Rect  # frame geometry (title bar included): what must stay visible
    width: int  # client area size, what `resize` takes
    height: int
    screen: str = ""
    screen_geometry: Rect | None = None
    maximized: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind, "frame": self.frame.as_list(), "size": [self.width, self.height],
            "screen": self.screen, "maximized": self.maximized,
        }
        if self.screen_geometry is not None:
            out["screen_geometry"] = self.screen_geometry.as_list()
        return out

    @classmethod
    def from_json(cls, obj: object) -> WindowPlacement:
        """Parse one saved window; ValueError naming what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError("a window entry must be an object")
        kind = obj.get("kind")
        if not isinstance(kind, str) or not kind.isidentifier() or len(kind) > 40:
            raise ValueError("a window needs a kind (a short identifier)")
        frame = Rect.from_list(obj.get("frame"))
        size = obj.get("size", [frame.width, frame.height])
        if not isinstance(size, list) or len(size) != 2:
            raise ValueError("size must be [width, height]")
        client = Rect.from_list([0, 0, *size])
        screen = obj.get("screen", "")
        if not isinstance(screen, str) or len(screen) > 200:
            raise ValueError("screen must be a short string")
        geometry = obj.get("screen_geometry")
        maximized = obj.get("maximized", False)
        if not isinstance(maximized, bool):
            raise ValueError("maximized must be true or false")
        return cls(kind, frame, client.width, client.height, screen,
                   Rect.from_list(geometry) if geometry is not None else None, maximized)


@dataclass
class HostLayout:
    """The layout of one workstation: restorable windows in opening order, and the last
    place of each window kind (patient windows included)."""

    windows: list[WindowPlacement] = field(default_factory=list)
    last_by_kind: dict[str, WindowPlacement] = field(default_factory=dict)
    saved_wall: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "saved_wall": self.saved_wall,
            "windows": [w.to_json() for w in self.windows],
            "last_by_kind": {k: w.to_json() for k, w in sorted(self.last_by_kind.items())},
        }

    @classmethod
    def from_json(cls, obj: object) -> HostLayout:
        """Parse leniently: a bad entry is skipped (and logged), the rest is kept."""
        if not isinstance(obj, dict):
            raise ValueError("a host layout must be an object")
        out = cls()
        saved = obj.get("saved_wall", 0.0)
        out.saved_wall = float(saved) if isinstance(saved, int | float) else 0.0
        windows = obj.get("windows", [])
        for entry in windows if isinstance(windows, list) else []:
            try:
                out.windows.append(WindowPlacement.from_json(entry))
            except ValueError as exc:
                log.warning("layout: skipping a saved window: %s", exc)
        del out.windows[MAX_WINDOWS:]
        last = obj.get("last_by_kind", {})
        for entry in last.values() if isinstance(last, dict) else []:
            try:
                placement = WindowPlacement.from_json(entry)
            except ValueError as exc:
                log.warning("layout: skipping a saved window kind: %s", exc)
                continue
            out.last_by_kind[placement.kind] = placement
        return out


def parse_document(text: str) -> dict[str, HostLayout]:
    """The hosts of a layout file; ValueError if it is not a layout document at all."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from exc
    if not isinstance(doc, dict) or doc.get("version") != LAYOUT_VERSION:
        raise ValueError(f"not a version {LAYOUT_VERSION} layout document")
    hosts = doc.get("hosts")
    if not isinstance(hosts, dict):
        raise ValueError("no hosts in the layout document")
    out: dict[str, HostLayout] = {}
    for host, layout in hosts.items():
        try:
            out[str(host)] = HostLayout.from_json(layout)
        except ValueError as exc:
            log.warning("layout: skipping the layout of one workstation: %s", exc)
    return out


def render_document(hosts: Mapping[str, HostLayout]) -> str:
    """The layout file's text, keeping the `MAX_HOSTS` most recently saved workstations."""
    newest = sorted(hosts.items(), key=lambda kv: kv[1].saved_wall, reverse=True)[:MAX_HOSTS]
    doc = {"version": LAYOUT_VERSION,
           "hosts": {host: layout.to_json() for host, layout in sorted(newest)}}
    return json.dumps(doc, indent=1, sort_keys=False) + "\n"


def layout_for_host(hosts: Mapping[str, HostLayout], host: str) -> HostLayout:
    """This workstation's layout; on a workstation seen for the first time (a roaming
    profile), the most recently saved one, which `place` fits onto these screens."""
    if host in hosts:
        return hosts[host]
    if hosts:
        return max(hosts.values(), key=lambda h: h.saved_wall)
    return HostLayout()


# ---------------------------------------------------------------------- Qt side
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


class LayoutStore:
    """Reads and writes the layout file (atomically; a bad file is reported, never fatal)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else user_config_dir() / LAYOUT_FILE_NAME

    def load(self) -> dict[str, HostLayout]:
        try:
            if self.path.stat().st_size > MAX_LAYOUT_FILE_BYTES:
                log.warning("layout: %s is too large to be a layout; ignoring it", self.path)
                return {}
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("layout: cannot read %s: %s", self.path, exc)
            return {}
        try:
            return parse_document(text)
        except ValueError as exc:
            log.warning("layout: ignoring %s: %s", self.path, exc)
            return {}

    def save(self, hosts: Mapping[str, HostLayout]) -> bool:
        """Write the file; False (logged) if it cannot be written."""
        text = render_document(hosts)
        try:
            ensure_private_dir(self.path.parent)
            # Write a sibling file, then rename over the old one: a crash or a full disk
            # mid-write leaves the previous layout intact (rename is atomic, POSIX rename(2)).
            fd, tmp = tempfile.mkstemp(prefix=".layout-", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            except OSError:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("layout: cannot save %s: %s", self.path, exc)
            return False
        return True


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
