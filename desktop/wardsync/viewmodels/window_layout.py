"""The saved window layout document: which panels were open, where and how big.

Per workstation (keyed by host name: on Windows the config dir roams between workstations,
and each has its own monitors) it holds, for each open panel, its kind ("ward",
"diagnostics", ...), frame geometry, client size, screen name and geometry, and whether it
was maximized, plus the last place of each kind (`last_by_kind`, patient windows included).
Never patient data: no patient id, name or reference, not even for patient windows, and no
window titles (they can name a patient). Parsing is lenient: a bad entry is skipped and
logged, the rest kept; a file that is not a layout is rejected with a ValueError.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wardsync.viewmodels.window_geometry import Rect

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1
MAX_HOSTS = 16  # workstations remembered per user (roaming profiles), oldest dropped
MAX_WINDOWS = 32  # windows restored at most (a corrupted or hostile file cannot open 10 000)


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
