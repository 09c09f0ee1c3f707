"""Colours a theme sets on custom-painted chart widgets (`qproperty-<name>: #rrggbb` in the
.qss files under resources/styles)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Property
from PySide6.QtGui import QColor


def colour_property(name: str) -> Any:
    """A QColor Qt property a stylesheet sets, for a widget that keeps its colours in
    `_colours` and repaints in `_set_colour(name, colour)`."""
    return Property(QColor, lambda widget: widget._colours[name],
                    lambda widget, colour: widget._set_colour(name, colour))
