"""Private files: bounded reads, atomic private writes, files and data directories that are
the user's own from the moment they exist.

A file holding secrets or a database is created with mode 0600 (`O_CREAT`'s mode argument:
umask can only take permissions away from it) in a directory of mode 0700, never created
with the default mode and `chmod`-ed afterwards: between the two another local user could
open it, and an open file descriptor survives the chmod.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from wardsync.infra.paths import PRIVATE_DIR_MODE, ensure_private_dir

PRIVATE_FILE_MODE = 0o600
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; Windows has no symlink-following open


class SharedDirectoryError(PermissionError):
    """A data directory that other users share or own cannot be made private."""


def ensure_private_data_dir(path: Path) -> Path:
    """Create `path` (mode 0700) for a service's data (databases, secrets), or make an
    existing one private before anything is written in it; return it.

    Unlike `paths.ensure_private_dir` an existing directory is tightened to 0700: it holds
    secrets and databases, and is the service's own. A directory owned by another user, or a
    shared one with the sticky bit (`/tmp`), is refused with `SharedDirectoryError`.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if os.name != "posix":
        return path  # Windows: the per-user profile's ACLs apply
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"data directory {path} is not a directory")
    if info.st_mode & stat.S_ISVTX or info.st_uid != os.getuid():
        raise SharedDirectoryError(
            f"data directory {path} is shared with or owned by another user; "
            "choose a directory of your own")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, PRIVATE_DIR_MODE)  # the directory, before any file is created in it
    return path


def create_private_file(path: Path) -> Path:
    """Create `path` empty with mode 0600 unless it exists (then leave it as it is); return
    it. A database opened on it afterwards keeps that mode, and SQLite creates its `-wal`,
    `-shm` and `-journal` files with the database file's mode (its unix VFS,
    `findCreateFileMode` in os_unix.c)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW,
                     PRIVATE_FILE_MODE)
    except FileExistsError:
        return path
    os.close(fd)
    return path


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
