"""Rows and groups of the chart's tables (plain Python): what each line says, which resource
version it shows, and how worrying it is.

A row's `key` is the reference of the resource it shows ("Observation/123"), so a table can
update a line in place, highlight it when its `version` changes, and report the versions it
made visible (the `rendered` metrics contract).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Level = Literal["", "critical", "abnormal", "muted"]


@dataclass(frozen=True)
class Row:
    """One line: cell texts, the resource version it shows and its level."""

    key: str
    cells: tuple[str, ...]
    version: str = ""
    level: Level = ""
    tooltip: str = ""


@dataclass(frozen=True)
class Group:
    """A heading line with its rows. `title` spans the whole width."""

    key: str
    title: str
    rows: tuple[Row, ...]
    version: str = ""
    level: Level = ""
    tooltip: str = ""


def shown_versions(groups: Iterable[Group]) -> dict[str, str]:
    """Every resource reference a table shows, with the version shown."""
    out: dict[str, str] = {}
    for group in groups:
        if "/" in group.key and group.version:
            out[group.key] = group.version
        for row in group.rows:
            if "/" in row.key and row.version:
                out[row.key] = row.version
    return out


def newly_visible(before: dict[str, str], after: dict[str, str], *, new_data: bool
                  ) -> dict[str, str]:
    """The refs whose version on screen is new after a repaint (metrics `rendered`).

    Every one, not only the refs that changed: new data can reveal a held one (a vital sign
    counted once its round is complete, a result once its report arrives). The first paint
    of what the store already held (`new_data` False) was caused by no new data: nothing.
    """
    if not new_data:
        return {}
    return {ref: version for ref, version in after.items() if before.get(ref) != version}
