"""Small per-user files (layouts and the like): bounded reads, atomic private writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from wardsync.infra.paths import ensure_private_dir


def read_bounded_text(path: Path, max_bytes: int) -> str:
    """The UTF-8 text of `path`; ValueError if it is larger than `max_bytes` (not a file of
    ours), FileNotFoundError / OSError / UnicodeDecodeError as reading raises them."""
    if path.stat().st_size > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    return path.read_text(encoding="utf-8")


def write_private_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in a directory readable by the user only; OSError on failure.

    Writes a sibling file, then renames it over the old one: a crash or a full disk mid-write
    leaves the previous content intact (rename is atomic, POSIX rename(2)).
    """
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
