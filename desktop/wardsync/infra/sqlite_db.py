"""Opening WardSync's SQLite databases: the sandbox's (the FHIR store, OAuth sessions, the
subscription ledger) and the relay's (pending escalations). Here, in infra, because the relay
may not import the sandbox (docs/architecture.md §1).

Each is one connection in autocommit mode (`isolation_level=None`): transactions are explicit
(`BEGIN IMMEDIATE ... COMMIT`), so a read never holds a lock it did not ask for. A file gets
write-ahead logging so readers do not block the writer (sqlite.org/wal.html); ":memory:" (the
tests) cannot use WAL and skips it. A `schema_version` is kept in `PRAGMA user_version`; a file
written by another version is refused rather than read with the wrong schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from wardsync.infra.paths import ensure_private_dir
from wardsync.infra.private_file import create_private_file

MEMORY = ":memory:"


def open_database(
    path: str | Path,
    schema: str,
    *,
    what: str,
    schema_version: int | None = None,
    synchronous: Literal["NORMAL", "FULL"] | None = None,
    foreign_keys: bool = False,
    any_thread: bool = False,
) -> sqlite3.Connection:
    """Open (creating it and its folder if needed, readable by the user only) the database at
    `path` and apply `schema`.

    `what` names the database in errors. `synchronous` sets `PRAGMA synchronous` on a file
    (sqlite.org/pragma.html#pragma_synchronous; None keeps SQLite's default); `any_thread`
    lets the caller use the connection from several threads under its own lock. Raises
    RuntimeError if the file's `user_version` is neither 0 (new) nor `schema_version`.
    """
    name = str(path)
    on_disk = name != MEMORY
    if on_disk:
        # Created 0600 in a 0700 folder before SQLite opens it (infra/private_file.py).
        create_private_file(ensure_private_dir(Path(name).parent) / Path(name).name)
    conn = sqlite3.connect(name, isolation_level=None, check_same_thread=not any_thread)
    try:
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        if on_disk:
            conn.execute("PRAGMA journal_mode = WAL")
            if synchronous is not None:
                conn.execute(f"PRAGMA synchronous = {synchronous}")
        if schema_version is not None:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found not in (0, schema_version):
                raise RuntimeError(f"{what} {name} has schema version {found}, expected "
                                   f"{schema_version}; delete it to start afresh")
        conn.executescript(schema)
        if schema_version is not None:
            conn.execute(f"PRAGMA user_version = {schema_version}")
    except BaseException:
        conn.close()
        raise
    return conn
