"""Where windows go on the monitors attached now: pure rectangle arithmetic, no Qt.

A saved window goes back onto its screen (matched by name, then by geometry) clamped to that
screen's available area (without task bars and docks). If the screen is gone, the window
moves onto the primary screen at the same offset from the screen's corner, clamped to the
primary screen's available area; a window larger than the area is shrunk to fit. Tested with
fake screens; `ui.layouts` converts Qt's screens and windows to and from these values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

MIN_WINDOW_W_PX = 320  # a restored window is never smaller than this (if the screen allows)
MIN_WINDOW_H_PX = 200
CASCADE_STEP_PX = 32  # a new window of a kind already open at its place is offset this much


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
