"""The per-user layout file: `<user config dir>/layout.json`, readable by the user only.

Reads tolerate anything (a missing, unreadable, oversized or foreign file is an empty layout,
logged, never fatal); writes are atomic (`infra.private_file`), so a crash or a full disk
mid-write leaves the previous layout intact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from wardsync.infra.paths import user_config_dir
from wardsync.infra.private_file import read_bounded_text, write_private_atomically
from wardsync.viewmodels.window_layout import HostLayout, parse_document, render_document

log = logging.getLogger(__name__)

LAYOUT_FILE_NAME = "layout.json"
MAX_LAYOUT_FILE_BYTES = 1024 * 1024  # a layout is a few KB; anything bigger is not ours


class LayoutStore:
    """Reads and writes the layout file (atomically; a bad file is reported, never fatal)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else user_config_dir() / LAYOUT_FILE_NAME

    def load(self) -> dict[str, HostLayout]:
        try:
            return parse_document(read_bounded_text(self.path, MAX_LAYOUT_FILE_BYTES))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("layout: cannot read %s: %s", self.path, exc)
            return {}
        except ValueError as exc:  # too large, or not a layout document
            log.warning("layout: ignoring %s: %s", self.path, exc)
            return {}

    def save(self, hosts: Mapping[str, HostLayout]) -> bool:
        """Write the file; False (logged) if it cannot be written."""
        try:
            write_private_atomically(self.path, render_document(hosts))
        except OSError as exc:
            log.warning("layout: cannot save %s: %s", self.path, exc)
            return False
        return True
