"""The per-user layout file on a real file system: round trip, readable by the user only,
atomic replacement, and a missing, oversized, foreign or unwritable file never fatal."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from wardsync.station.layout_store import MAX_LAYOUT_FILE_BYTES, LayoutStore
from wardsync.viewmodels.window_geometry import Rect
from wardsync.viewmodels.window_layout import HostLayout, WindowPlacement

HOSTS = {"ws-ward7-01": HostLayout(
    windows=[WindowPlacement("ward", Rect(10, 20, 800, 600), 790, 570, "eDP-1")],
    saved_wall=1_700_000_000.0)}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "wardsync" / "layout.json"


def test_a_saved_layout_loads_back_from_a_directory_only_the_user_reads(path: Path) -> None:
    store = LayoutStore(path)
    assert store.load() == {}  # no file yet: an empty layout
    assert store.save(HOSTS) is True
    assert LayoutStore(path).load() == HOSTS
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["layout.json"]  # no temporary left


def test_an_oversized_or_foreign_file_is_ignored_with_a_warning(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(" " * (MAX_LAYOUT_FILE_BYTES + 1))
    assert LayoutStore(path).load() == {}
    path.write_text('{"not": "a layout"}')
    assert LayoutStore(path).load() == {}
    path.write_bytes(b"\xff\xfe" * 10)
    assert LayoutStore(path).load() == {}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("layout: ignoring" in m for m in messages) == 2
    assert any("layout: cannot read" in m for m in messages)


def test_a_failed_save_reports_false_and_leaves_no_partial_file(path: Path) -> None:
    path.mkdir(parents=True)  # a directory where the file should be: cannot be replaced
    (path / "kept").write_text("theirs")
    assert LayoutStore(path).save(HOSTS) is False
    assert [p.name for p in path.parent.iterdir()] == ["layout.json"]  # no temporary left
    assert (path / "kept").read_text() == "theirs"
