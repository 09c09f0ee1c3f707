"""The SQLite opener (infra/sqlite_db.py) on real files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from wardsync.infra.sqlite_db import open_database

SCHEMA = "CREATE TABLE IF NOT EXISTS note (id INTEGER PRIMARY KEY, text TEXT NOT NULL);"


def test_a_file_is_created_in_its_folder_with_wal_and_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db.sqlite3"
    conn = open_database(path, SCHEMA, what="test database", schema_version=3,
                         synchronous="FULL", foreign_keys=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.isolation_level is None  # autocommit: transactions are explicit
        conn.execute("INSERT INTO note (text) VALUES ('kept')")
    finally:
        conn.close()
    again = open_database(path, SCHEMA, what="test database", schema_version=3)
    try:
        assert again.execute("SELECT text FROM note").fetchall() == [("kept",)]
    finally:
        again.close()


def test_a_file_of_another_schema_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    open_database(path, SCHEMA, what="test database", schema_version=2).close()
    with pytest.raises(RuntimeError, match=r"test database .* schema version 2, expected 3"):
        open_database(path, SCHEMA, what="test database", schema_version=3)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        conn.close()


def test_memory_databases_skip_wal_and_may_be_shared_across_threads() -> None:
    conn = open_database(":memory:", SCHEMA, what="test database", any_thread=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "memory"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()
