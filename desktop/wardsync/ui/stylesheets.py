"""Qt stylesheets from `resources/styles/`: the app's theme and the sheets of components whose
colours carry meaning in every theme (`components/<name>.qss`, set on the widget itself).
Plain file reading: importing this module does not load Qt."""

from __future__ import annotations

import functools
import logging

from wardsync.infra.paths import resources_dir

log = logging.getLogger(__name__)


def load_stylesheet(theme: str) -> str:
    """The theme's sheet for the whole application ("" if it is missing: Qt's default look)."""
    path = resources_dir() / "styles" / f"{theme}.qss"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        log.warning("theme %s not found at %s", theme, path)
        return ""


@functools.cache
def component_stylesheet(name: str) -> str:
    """One component's sheet (read once per process; "" if missing, logged)."""
    path = resources_dir() / "styles" / "components" / f"{name}.qss"
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        log.warning("stylesheet %s not found at %s", name, path)
        return ""

